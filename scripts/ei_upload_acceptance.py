#!/usr/bin/env python
"""Acceptance run of ``facemask-edge ei upload-data`` on the full data set (issue 6, point 1).

Starts the loopback Edge Impulse (``tests/ei_server.py``) with injected failures (default 5 % of
upload requests: 429 with Retry-After, 500, 503, slow answers past the client timeout, connections
dropped before reading and after storing), makes a split of the data set in a scratch run folder,
and then runs the real CLI in a subprocess:

1. an uninterrupted upload to a fresh project, timed: images/s;
2. on a second fresh project: an upload killed with SIGKILL at ~30 %, re-run and interrupted with
   Ctrl-C (SIGINT) at ~65 %, re-run to the end, and run once more (must send nothing);
3. ``ei status`` on that project (in sync), then with the ledger deleted ``ei status --repair``
   (rebuilds it from the sample listing, uploads nothing) and ``upload-data`` (sends nothing).

Then it checks, through the SDK's own studio-API listing (``ei.data.get_sample_ids``) and the
server's store, that every usable image is stored exactly once (byte-identical files share one
sample, as Edge Impulse refuses duplicates), with its class folder as label and its split's
category, and that no re-run sent an image that was already stored, apart from the requests in
flight when it was interrupted. Prints a report and writes it as JSON with ``--out``.

Usage:
    .venv/bin/python scripts/ei_upload_acceptance.py [--data DIR] [--rate 0.05] [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from ei_server import EIServer, FaultConfig  # noqa: E402

from facemask_edge.data.ingest import scan_dataset  # noqa: E402
from facemask_edge.data.splits import make_split, save_split  # noqa: E402
from facemask_edge.edge_impulse.ledger import Ledger  # noqa: E402
from facemask_edge.edge_impulse.upload import _payload, plan_upload  # noqa: E402


def default_data() -> Path:
    env = os.environ.get("FACEMASK_EDGE_DEV_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "datasets" / "facemask-dev"


def cli(server: EIServer, key: str, data: Path, run: Path, cache: Path, args) -> list[str]:
    return [sys.executable, "-m", "facemask_edge", "ei", "upload-data", "--data", str(data),
            "--split-from", str(run), "-j", str(args.concurrency), "--timeout", str(args.timeout)]


def env_for(server: EIServer, key: str, cache: Path) -> dict:
    return {**os.environ, **server.env(key), "FACEMASK_EDGE_CACHE": str(cache)}


def upload(server, key, data, run, cache, args, stop_at: float | None = None,
           sig=signal.SIGINT) -> dict:
    """One CLI run; with ``stop_at``, send ``sig`` once that fraction of images is stored."""
    n_req = len(server.requests_to("files$"))
    before = {s.sha256 for s in server.samples}
    t0 = time.monotonic()
    proc = subprocess.Popen(cli(server, key, data, run, cache, args),
                            env=env_for(server, key, cache), cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if stop_at is not None:
        while proc.poll() is None and len(server.samples) < stop_at * args.expected:
            time.sleep(0.05)
        if proc.poll() is None:
            proc.send_signal(sig)
    out, err = proc.communicate(timeout=3600)
    seconds = time.monotonic() - t0
    reqs = server.requests_to("files$")[n_req:]
    resent = sum(1 for r in reqs if r.form and r.form["data"][0][3] in before)
    return {"returncode": proc.returncode, "seconds": round(seconds, 2),
            "signal": None if stop_at is None else signal.Signals(sig).name,
            "stored_before": len(before), "stored_after": len(server.samples),
            "requests": len(reqs), "requests_for_already_stored": resent,
            "summary": [ln for ln in out.splitlines() if ln.strip()][:3],
            "error": [ln for ln in err.splitlines() if ln.startswith("error")]}


def verify(server: EIServer, key: str, data: Path, run: Path, cache: Path) -> dict:
    """Everything is stored exactly once, with the right label and category."""
    plan = plan_upload(data, split_from=run)
    import edgeimpulse as ei

    ei.API_KEY, ei.API_ENDPOINT, ei.INGESTION_ENDPOINT = (key, server.api_endpoint,
                                                          server.ingestion_endpoint)
    listed = {}
    for cat in ("training", "testing"):
        for info in ei.data.get_sample_ids(category=cat):
            listed[info.sample_id] = (info.label, info.category)
    stored = {s.id: s for s in server.samples}
    (ledger_path,) = (cache / "edge-impulse").glob("*.jsonl")
    with Ledger(ledger_path) as led:
        entries = dict(led.entries)
    problems = []
    for item in plan.items:
        e = entries.get(item.sha256)
        if e is None:
            problems.append(f"{item.path}: not in the ledger")
            continue
        sid = e["sample_id"]
        if listed.get(sid) != (item.label, item.category):
            problems.append(f"{item.path}: sample {sid} is {listed.get(sid)}, want "
                            f"{(item.label, item.category)}")
        sha = hashlib.sha256(_payload(plan.root, item)[1]).hexdigest()
        if sid not in stored or stored[sid].sha256 != sha:
            problems.append(f"{item.path}: sample {sid} does not hold its bytes")
    hashes = Counter(s.sha256 for s in server.samples)
    ds = scan_dataset(data, size=None)
    return {
        "usable_images": plan.usable, "distinct_contents": len(plan.items),
        "byte_identical_copies": plan.copies, "skipped_files": len(plan.skipped_files),
        "samples_stored": len(server.samples), "samples_listed_by_sdk": len(listed),
        "contents_stored_twice": sum(1 for n in hashes.values() if n > 1),
        "stored_by_category_label": {f"{c}/{lab}": n for (c, lab), n in sorted(
            Counter((s.category, s.label) for s in server.samples).items())},
        "expected_by_category_label": {f"{c}/{lab}": n for (c, lab), n in
                                       sorted(plan.counts().items())},
        "classes": ds.classes, "problems": problems[:20], "problem_count": len(problems),
        "ok": not problems and len(server.samples) == len(plan.items) == len(listed)
        and max(hashes.values(), default=1) == 1}


def status_checks(srv: EIServer, key: str, args, run: Path, cache: Path) -> dict:
    """Issue 15.5: ``ei status`` finds the project in sync; with the ledger deleted,
    ``status --repair`` rebuilds it from the listing, and ``upload-data`` then sends nothing."""
    env = env_for(srv, key, cache)
    base = [sys.executable, "-m", "facemask_edge", "ei"]
    data = ["--data", str(args.data), "--split-from", str(run)]
    out = {}
    t0 = time.monotonic()
    r = subprocess.run(base + ["status", *data], env=env, capture_output=True, text=True)
    out["status"] = {"returncode": r.returncode, "seconds": round(time.monotonic() - t0, 2),
                     "first_line": (r.stdout.splitlines() or [""])[0]}
    for ledger in (cache / "edge-impulse").glob("*.jsonl"):
        ledger.unlink()
    t0 = time.monotonic()
    r = subprocess.run(base + ["status", *data, "--repair"], env=env, capture_output=True,
                       text=True)
    out["repair_without_ledger"] = {
        "returncode": r.returncode, "seconds": round(time.monotonic() - t0, 2),
        "repaired": next((ln for ln in r.stdout.splitlines() if ln.startswith("repaired")), "")}
    n = len(srv.requests_to("files$"))
    r = subprocess.run(cli(srv, key, args.data, run, cache, args), env=env, capture_output=True,
                       text=True)
    out["upload_after_rebuild"] = {"returncode": r.returncode,
                                   "requests": len(srv.requests_to("files$")) - n}
    out["ok"] = (out["status"]["returncode"] == 0
                 and out["repair_without_ledger"]["returncode"] == 0
                 and out["repair_without_ledger"]["repaired"].startswith(
                     "repaired: uploaded 0, relabelled 0, moved 0")
                 and out["upload_after_rebuild"]["requests"] == 0)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_data())
    ap.add_argument("--rate", type=float, default=0.05, help="fraction of requests that fail")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=2.0, help="client timeout (s)")
    ap.add_argument("--slow", type=float, default=3.0, help="slow answer delay (s)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if not args.data.exists():
        print(f"no data set at {args.data} (pass --data or set FACEMASK_EDGE_DEV_DATA)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="ei-acceptance-"))
    run = tmp / "run"
    run.mkdir()
    ds = scan_dataset(args.data, size=None)
    save_split(make_split(ds, seed=1337), run)
    args.expected = len(plan_upload(args.data, split_from=run).items)
    key = "ei_" + secrets.token_hex(32)
    report = {"data": str(args.data), "fault_rate": args.rate, "seed": args.seed,
              "concurrency": args.concurrency, "client_timeout_s": args.timeout,
              "slow_answer_s": args.slow}

    def server():
        return EIServer(key, store_data=False, faults=FaultConfig(
            rate=args.rate, seed=args.seed, slow_seconds=args.slow, retry_after=1))

    # 1. uninterrupted, timed
    with server() as srv:
        cache = tmp / "cache-clean"
        r = upload(srv, key, args.data, run, cache, args)
        v = verify(srv, key, args.data, run, cache)
        report["uninterrupted"] = {**r, "images_per_second": round(
            v["distinct_contents"] / r["seconds"], 1), "faults": dict(srv.fault_counts),
            "verify": v}
    # 2. killed, interrupted, resumed, re-run
    with server() as srv:
        cache = tmp / "cache-resume"
        runs = [upload(srv, key, args.data, run, cache, args, 0.30, signal.SIGKILL),
                upload(srv, key, args.data, run, cache, args, 0.65, signal.SIGINT),
                upload(srv, key, args.data, run, cache, args),
                upload(srv, key, args.data, run, cache, args)]
        v = verify(srv, key, args.data, run, cache)
        report["interrupted"] = {"runs": runs, "faults": dict(srv.fault_counts), "verify": v,
                                 "total_seconds": round(sum(x["seconds"] for x in runs), 2)}
        report["status"] = status_checks(srv, key, args, run, cache)
    ok = (report["uninterrupted"]["verify"]["ok"] and report["uninterrupted"]["returncode"] == 0
          and report["interrupted"]["verify"]["ok"]
          and report["interrupted"]["runs"][2]["returncode"] == 0
          and report["interrupted"]["runs"][3]["requests"] == 0
          and all(x["requests_for_already_stored"] <= args.concurrency
                  for x in report["interrupted"]["runs"])
          and report["status"]["ok"])
    report["ok"] = ok
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
