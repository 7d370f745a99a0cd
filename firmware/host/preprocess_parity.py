"""C (firmware/common/fe_preprocess.c) vs Python (facemask_edge.data.preprocess) preprocessing.

    python firmware/host/preprocess_parity.py --generated
    python firmware/host/preprocess_parity.py --data ../shared/datasets/facemask-dev --limit 60

Builds the C code with gcc, feeds both implementations the same frames in every pixel format
(RGB565 both byte orders, RGB888, BGR888, grayscale) at camera sizes, for RGB and grayscale models
of 96, 64 and 80 pixels, and counts tensors that differ in any byte. Exit status 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from facemask_edge.export.host import load_host_firmware, parity_generated, parity_images

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}


def dataset_images(root: Path, limit: int) -> list[Path]:
    """First `limit` images of each class folder, in name order (a fixed, reproducible subset)."""
    out = []
    for cls in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in cls.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        out.extend(files[: (limit + 1) // 2])
    return out[:limit]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generated", action="store_true", help="random and structured frames")
    default = os.environ.get("FACEMASK_EDGE_DEV_DATA", str(Path(__file__).resolve().parents[3] / "shared/datasets/facemask-dev"))
    ap.add_argument("--data", default=None, help=f"image folder with class subfolders (e.g. {default})")
    ap.add_argument("--limit", type=int, default=60, help="images to use (half per class)")
    args = ap.parse_args(argv)
    if not args.generated and not args.data:
        args.generated, args.data = True, default
    fw = load_host_firmware()
    bad = 0
    if args.generated:
        stats = parity_generated(fw)
        print(f"generated frames: {stats}")
        bad += stats.mismatched
    if args.data:
        root = Path(args.data)
        if not root.is_dir():
            print(f"no data set at {root}: skipped", file=sys.stderr)
        else:
            stats = parity_images(fw, dataset_images(root, args.limit))
            print(f"{root.name} images: {stats}")
            bad += stats.mismatched
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
