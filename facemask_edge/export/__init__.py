"""Firmware export: C arrays, generated model settings and op resolver, board sketches,
Arduino library zips, and building and flashing them with arduino-cli."""

from facemask_edge.export.exporter import FORMATS, LIBRARIES, Budget, ExportResult, export_run

__all__ = ["FORMATS", "LIBRARIES", "Budget", "ExportResult", "export_run"]
