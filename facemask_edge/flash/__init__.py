"""Building and uploading an exported sketch: arduino-cli today (:mod:`.arduino_cli`).

Its own home, apart from :mod:`facemask_edge.export` (which only writes sources): flashing needs
external tools and a board, and checks both before anything is exported.
"""

from facemask_edge.flash.arduino_cli import check_toolchain, find_arduino_cli, find_port, flash, plan_flash

__all__ = ["flash", "plan_flash", "check_toolchain", "find_port", "find_arduino_cli"]
