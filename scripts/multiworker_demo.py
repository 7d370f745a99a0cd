#!/usr/bin/env python3
"""Two-worker data-parallel training on loopback with MultiWorkerMirroredStrategy.

Starts two ``facemask-edge train --distribute multiworker`` processes with ``TF_CONFIG`` naming
two workers on 127.0.0.1, on synthetic images and a tiny backbone (or ``--data``/``--weights``).
Worker 0 is the chief and writes the run folder; worker 1 trains its shard and discards its copy.

    python scripts/multiworker_demo.py --out /tmp/mw-run
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="run folder the chief writes")
    ap.add_argument("--data", help="data set (default: synthetic images)")
    ap.add_argument("--weights", help="backbone file (default: a tiny generated one)")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="facemask-multiworker-"))
    data, weights = args.data, args.weights
    if not data or not weights:
        from facemask_edge.testing import make_synthetic_dataset, make_tiny_backbone

        data = data or str(make_synthetic_dataset(work / "data", per_class=32, size=48))
        weights = weights or str(make_tiny_backbone(work / "tiny.h5", size=args.size))
    workers = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    procs = []
    t0 = time.monotonic()
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                                     "task": {"type": "worker", "index": index}}))
        env["CUDA_VISIBLE_DEVICES"] = "-1"
        cmd = [sys.executable, "-m", "facemask_edge", "train", "--data", data, "--out", args.out,
               "--weights", weights, "--size", str(args.size), "--head-epochs", "1",
               "--finetune-epochs", str(args.epochs), "--distribute", "multiworker", "--no-energy"]
        log = open(work / f"worker{index}.log", "w")
        procs.append((subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    codes = []
    for p, log in procs:
        try:
            codes.append(p.wait(timeout=args.timeout))
        except subprocess.TimeoutExpired:
            for q, _ in procs:
                q.kill()
            print(f"workers did not finish in {args.timeout:.0f} s; logs in {work}", file=sys.stderr)
            return 1
        log.close()
    seconds = time.monotonic() - t0
    for i, code in enumerate(codes):
        print(f"worker {i} ({workers[i]}): exit {code}")
    if any(codes):
        for i in range(2):
            print(f"--- worker {i} log tail ---\n" + "\n".join(
                (work / f"worker{i}.log").read_text().splitlines()[-15:]), file=sys.stderr)
        return 1
    metrics = json.loads((Path(args.out) / "metrics.json").read_text())
    print(f"two workers trained {args.out} in {seconds:.0f} s; test accuracy "
          f"{metrics['test']['accuracy']:.3f}; logs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
