"""Limits that keep hostile or broken input from costing unbounded memory, disk or time.

One table, so that the README, the error messages and the code agree. Each limit has a default
and a ``FACEMASK_EDGE_*`` environment variable that changes it (functions that apply a limit also
take it as an argument, which wins over the variable). The defaults are generous for real face
photos and data set archives; a file that passes them is still decoded or extracted with bounded
resources.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from facemask_edge.errors import DataError

__all__ = ["Limit", "LIMITS", "limit"]


@dataclass(frozen=True)
class Limit:
    """One limit: its environment variable, default and what it bounds."""

    env: str
    default: float
    what: str
    integer: bool = True


LIMITS: dict[str, Limit] = {
    "image_pixels": Limit(
        "FACEMASK_EDGE_MAX_IMAGE_PIXELS", 89_478_485,
        "pixels of one image (width x height); larger files are skipped. The default is "
        "Pillow's own bomb threshold; above twice that Pillow refuses whatever this says"),
    "reduce_above_pixels": Limit(
        "FACEMASK_EDGE_REDUCE_ABOVE_PIXELS", 4096 * 4096,
        "images with more pixels are decoded reduced (JPEG DCT scaling, then a box reduce) to at "
        "most about this many pixels before preprocessing; smaller ones are decoded whole"),
    "decode_pixels": Limit(
        "FACEMASK_EDGE_DECODE_PIXELS", 48_000_000,
        "pixels being decoded at the same time by all workers together (an image larger than "
        "this is decoded alone)"),
    "archive_bytes": Limit(
        "FACEMASK_EDGE_MAX_ARCHIVE_BYTES", 4 * 1024 ** 3,
        "total uncompressed bytes a zip may expand to"),
    "archive_ratio": Limit(
        "FACEMASK_EDGE_MAX_ARCHIVE_RATIO", 200,
        "uncompressed / compressed size, for the whole zip and for each member over 1 MiB",
        integer=False),
    "archive_members": Limit(
        "FACEMASK_EDGE_MAX_ARCHIVE_MEMBERS", 100_000, "files and folders in one zip"),
    "download_seconds": Limit(
        "FACEMASK_EDGE_DOWNLOAD_DEADLINE", 1800,
        "seconds one download may take in total, retries included (a server that trickles "
        "bytes is cut off)", integer=False),
}


def limit(name: str, value: float | None = None) -> float:
    """The value of limit ``name``: ``value`` if given, else its variable, else its default.

    Raises:
        DataError: the variable is set to something that is not a positive number.
    """
    spec = LIMITS[name]
    if value is None:
        raw = os.environ.get(spec.env, "").strip()
        if not raw:
            return spec.default
        try:
            value = float(raw.replace("_", ""))
        except ValueError:
            raise DataError(f"{spec.env}={raw!r} is not a number",
                            f"unset it or give a positive number (default {spec.default:,})") \
                from None
    if not value > 0:
        raise DataError(f"limit {spec.env} must be positive, got {value}",
                        f"default {spec.default:,}")
    return int(value) if spec.integer else float(value)
