"""Firmware export: C arrays, generated model settings and op resolver, board sketches and
Arduino library zips (building and flashing them is :mod:`facemask_edge.flash`)."""

from facemask_edge.export.exporter import FORMATS, Budget, ExportResult, default_export_dir, export_run

__all__ = ["FORMATS", "Budget", "ExportResult", "default_export_dir", "export_run"]
