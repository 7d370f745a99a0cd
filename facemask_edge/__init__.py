"""facemask-edge: from a folder of face images to a validated int8 model on a microcontroller."""

__version__ = "0.1.0"

__all__ = ["__version__"]
