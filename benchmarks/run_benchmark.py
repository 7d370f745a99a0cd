#!/usr/bin/env python
"""Benchmark: the whole pipeline on facemask-dev, measured against the MLPerf Tiny VWW reference.

    .venv/bin/python benchmarks/run_benchmark.py [--data DIR] [--weights vww_96.h5]
        [--reference vww_96_int8.tflite] [--out RUN_DIR] [--results DIR] [-- PIPELINE OPTIONS...]

Runs ``facemask-edge pipeline --data DATA --weights WEIGHTS --reference REFERENCE --out RUN_DIR``
(plus anything after ``--``, e.g. ``--config FILE.toml`` or ``--finetune-epochs 10``) as its own
process, then measures the reference model and the run's int8 model again in this process (same
machine, same run) and writes ``results.md`` and ``results.json`` (default: ``benchmarks/``):

- accuracy and macro F1 on the test split: float (tf_keras), int8 on the host (tflite-micro and
  TFLite reference kernels), int8 on the simulated board (streamed over the serial protocol);
  agreement: board vs host (bit-exact scores), TFLM vs TFLite-ref, int8 vs float labels;
- tensor arena, flatbuffer (flash), MACs, latency estimates for every board, for the model and
  the reference, and the ratios against the targets of issue 7;
- validation throughput, wall time per pipeline stage, and a machine description.

Data: ``--data``, else ``$FACEMASK_EDGE_DEV_DATA``, else ``../shared/datasets/facemask-dev``. When a stage
of RUN_DIR is already up to date the pipeline skips it, and the table reports the time it took
when it ran (the ``ran`` column says which stages ran in this invocation).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

#: Issue 7's targets for the default Nano 33 BLE model, against the reference measured here.
TARGETS = {"arena_vs_reference_max": 0.45, "flash_vs_reference_max": 0.25, "latency_ms_64mhz_max": 150.0,
           "device_accuracy_min": 0.99, "pipeline_seconds_max": 15 * 60}


def machine() -> dict:
    """CPU model, cores, RAM, OS, Python and library versions, load when the benchmark started."""
    from importlib import metadata

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    versions = {}
    for pkg in ("facemask-edge", "tensorflow", "tf_keras", "tensorflow-model-optimization", "tflite-micro",
                "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable,
            "ram_gib": round(ram / 2**30, 1) if ram else None, "os": platform.platform(),
            "python": platform.python_version(), "versions": versions,
            "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def run_pipeline(args, extra: list[str]) -> tuple[list[str], float, int]:
    cmd = [sys.executable, "-m", "facemask_edge", "pipeline", "--data", str(args.data), "--weights",
           str(args.weights), "--reference", str(args.reference), "--out", str(args.out),
           "--board", args.board, *extra]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    print("$ " + " ".join(shlex.quote(c) for c in ["facemask-edge", *cmd[3:]]), flush=True)
    t = time.monotonic()
    proc = subprocess.run(cmd, env=env)
    return cmd, time.monotonic() - t, proc.returncode


def measure(run_dir: Path, reference: Path) -> dict:
    """Profile the run's model and the reference for every board, now."""
    from facemask_edge.boards import BOARDS
    from facemask_edge.convert.runtimes import measure_arena
    from facemask_edge.profile import profile_model

    out = {}
    for name, path in (("model", run_dir / "model_int8.tflite"), ("reference", reference)):
        t = time.monotonic()
        arena = measure_arena(path)["total"]
        boards = {b: profile_model(path, b, arena=arena) for b in BOARDS}
        first = next(iter(boards.values()))
        out[name] = {"path": str(path), "sha256": first["model_sha256"], "arena_bytes": arena,
                     "flatbuffer_bytes": first["flash_bytes"], "macs": first["macs"],
                     "boards": {b: {k: p[k] for k in ("fits", "arena_with_margin_bytes", "ram_left_bytes",
                                                      "flash_left_bytes", "latency_ms", "clock_hz",
                                                      "arena_placement")} for b, p in boards.items()},
                     "measure_seconds": round(time.monotonic() - t, 1)}
    return out


def collect(summary: dict, measured: dict, run_dir: Path, board: str) -> dict:
    st = summary["stages"]
    ev = st.get("evaluate", {}).get("figures", {})
    va = st.get("validate", {}).get("figures", {})
    cv = st.get("convert", {}).get("figures", {})
    kind = cv.get("quantization")
    int8 = ev.get("int8", {}).get(kind, {})
    m, r = measured["model"], measured["reference"]
    nano = "nano33ble"
    acc = {
        "float": ev.get("float"),
        "int8_host_tflm": int8.get("tflm"),
        "int8_host_tflite_ref": int8.get("tflite_ref"),
        "int8_device": {"accuracy": va.get("board_accuracy"), "f1": va.get("board_macro_f1"),
                        "images": va.get("images"), "target": va.get("target")} if va else None,
        "other_int8_variants": {k: v["tflm"] for k, v in ev.get("int8", {}).items() if k != kind},
    }
    agreement = {
        "device_vs_host_bit_exact": va.get("bit_exact"),
        "device_vs_host_labels": va.get("label_agreement"),
        "tflm_vs_tflite_ref_bit_exact": int8.get("runtimes_bit_exact_rate"),
        "int8_vs_float_labels": int8.get("label_agreement_with_float"),
    }
    ratios = {"arena": m["arena_bytes"] / r["arena_bytes"], "flash": m["flatbuffer_bytes"] / r["flatbuffer_bytes"],
              "macs": m["macs"] / r["macs"] if r["macs"] else None}
    lat = m["boards"][nano]["latency_ms"]
    dev_acc = va.get("board_accuracy")
    stage_secs = {k: v.get("seconds") for k, v in st.items()}
    pipeline_s = sum(v for v in stage_secs.values() if v)
    checks = {
        "device_accuracy": {"value": dev_acc, "target": f">= {TARGETS['device_accuracy_min']}",
                            "pass": dev_acc is not None and dev_acc >= TARGETS["device_accuracy_min"]},
        "arena_vs_reference": {"value": ratios["arena"], "target": f"<= {TARGETS['arena_vs_reference_max']:.0%}",
                               "pass": ratios["arena"] <= TARGETS["arena_vs_reference_max"]},
        "flash_vs_reference": {"value": ratios["flash"], "target": f"<= {TARGETS['flash_vs_reference_max']:.0%}",
                               "pass": ratios["flash"] <= TARGETS["flash_vs_reference_max"]},
        "latency_64mhz_upper_estimate_ms": {"value": lat[1], "target": f"<= {TARGETS['latency_ms_64mhz_max']:g}",
                                            "pass": lat[1] <= TARGETS["latency_ms_64mhz_max"],
                                            "lower_estimate_ms": lat[0]},
        "pipeline_seconds": {"value": pipeline_s, "target": f"<= {TARGETS['pipeline_seconds_max']}",
                             "pass": pipeline_s <= TARGETS["pipeline_seconds_max"]},
        "fits_" + board: {"value": m["boards"][board]["fits"], "target": "fits", "pass": m["boards"][board]["fits"]},
    }
    return {"accuracy": acc, "agreement": agreement, "model": m, "reference": r, "ratios": ratios,
            "checks": checks, "stage_seconds": stage_secs,
            "stage_status": {k: v.get("status") for k, v in st.items()},
            "pipeline_seconds": round(pipeline_s, 1),
            "validation": {"images": va.get("images"), "images_per_s": va.get("images_per_s"),
                           "wire_bytes_per_image": va.get("wire_bytes_per_image"),
                           "payload_efficiency": va.get("payload_efficiency"), "retries": va.get("retries"),
                           "target": va.get("target")},
            "quantization": kind, "test_images": ev.get("images"),
            "config": _config(run_dir, summary),
            "train": st.get("train", {}).get("figures", {})}


def _config(run_dir: Path, summary: dict) -> dict:
    cfg = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else {}
    keep = ("arch", "alpha", "size", "color", "weights", "blocks", "cut", "head_epochs", "finetune_epochs",
            "head_lr", "finetune_lr", "batch_size", "seed", "augment")
    out = {k: cfg.get(k) for k in keep}
    opts = summary.get("options", {})
    out.update({k: opts.get(k) for k in ("qat_epochs", "qat_lr", "quantization", "representative")})
    return out


def f4(v):
    return "-" if v is None else f"{v:.4f}"


def kib(v):
    return "-" if v is None else f"{v / 1024:.1f}"


def markdown(res: dict) -> str:
    from facemask_edge.boards import BOARDS

    b = res["bench"]
    acc, ag, m, r = b["accuracy"], b["agreement"], b["model"], b["reference"]
    mach = res["machine"]
    lines = ["# Benchmark results", "",
             f"Command: `{res['command']}`", "",
             f"Pipeline: `{res['pipeline_command']}` (exit {res['pipeline_exit']}); run folder `{res['run']}`, "
             f"board `{res['board']}`, data `{res['data']}`, {b['test_images']} test images, int8 model: "
             f"{(b['quantization'] or '?').upper()}.", "",
             "Model: " + ", ".join(f"{k} {v}" for k, v in b["config"].items() if v is not None) + ".", "",
             "## Accuracy on the test split", "",
             "| model | where | accuracy | macro F1 |", "|---|---|---|---|"]
    rows = [("float", "host, tf_keras", acc["float"]), ("int8", "host, tflite-micro", acc["int8_host_tflm"]),
            ("int8", "host, TFLite reference kernels", acc["int8_host_tflite_ref"]),
            ("int8", f"on the device ({(acc['int8_device'] or {}).get('target')})", acc["int8_device"])]
    for k, v in acc["other_int8_variants"].items():
        rows.append((f"int8 {k.upper()} (not shipped)", "host, tflite-micro", v))
    for name, where, v in rows:
        v = v or {}
        lines.append(f"| {name} | {where} | {f4(v.get('accuracy'))} | {f4(v.get('f1'))} |")
    ra = b["ratios"]
    lines += ["", "| agreement | rate |", "|---|---|",
              f"| device vs host int8 scores bit-exact | {f4(ag['device_vs_host_bit_exact'])} |",
              f"| device vs host labels | {f4(ag['device_vs_host_labels'])} |",
              f"| tflite-micro vs TFLite-ref scores bit-exact | {f4(ag['tflm_vs_tflite_ref_bit_exact'])} |",
              f"| int8 vs float labels | {f4(ag['int8_vs_float_labels'])} |", "",
              "## Size and speed against the MLPerf Tiny VWW int8 reference (measured in this run)", "",
              "| | this model | reference | ratio |", "|---|---|---|---|",
              f"| tensor arena (TFLM, KiB) | {kib(m['arena_bytes'])} | {kib(r['arena_bytes'])} | {ra['arena']:.1%} |",
              f"| flatbuffer = model flash (KiB) | {kib(m['flatbuffer_bytes'])} | {kib(r['flatbuffer_bytes'])} | "
              f"{ra['flash']:.1%} |",
              f"| MACs | {m['macs']:,} | {r['macs']:,} | {ra['macs']:.1%} |"]
    for name in BOARDS:
        lm, lr = m["boards"][name]["latency_ms"], r["boards"][name]["latency_ms"]
        clock = m["boards"][name]["clock_hz"] / 1e6
        lines.append(f"| latency estimate {name} @ {clock:.0f} MHz (ms) | {lm[0]:.0f}-{lm[1]:.0f} | "
                     f"{lr[0]:.0f}-{lr[1]:.0f} | {lm[1] / lr[1]:.1%} |")
    for name in BOARDS:
        mb, rb = m["boards"][name], r["boards"][name]
        lines.append(f"| fits {name} (arena+margin {kib(mb['arena_with_margin_bytes'])} KiB, RAM left "
                     f"{kib(mb['ram_left_bytes'])} KiB) | {'yes' if mb['fits'] else 'NO'} | "
                     f"{'yes' if rb['fits'] else 'NO'} | |")
    lines += ["", "## Targets (issue 7)", "", "| target | value | required | met |", "|---|---|---|---|"]
    for k, c in b["checks"].items():
        v = c["value"]
        if isinstance(v, bool):
            vs = "yes" if v else "no"
        elif k.endswith("reference"):
            vs = f"{v:.1%}"
        elif isinstance(v, float):
            vs = f"{v:.4f}" if v <= 1 else f"{v:.1f}"
        else:
            vs = str(v)
        if k.startswith("latency"):
            vs += f" (lower estimate {c['lower_estimate_ms']:.1f})"
        lines.append(f"| {k.replace('_', ' ')} | {vs} | {c['target']} | {'yes' if c['pass'] else 'NO'} |")
    v = b["validation"]
    ips = "-" if v["images_per_s"] is None else f"{v['images_per_s']:.1f}"
    wire = "-" if v["wire_bytes_per_image"] is None else f"{v['wire_bytes_per_image']:.0f}"
    lines += ["", "## Pipeline wall time per stage", "", "| stage | seconds | status in this invocation |",
              "|---|---|---|"]
    for k, s in b["stage_seconds"].items():
        lines.append(f"| {k} | {'-' if s is None else f'{s:.1f}'} | {b['stage_status'].get(k)} |")
    lines += [f"| **all stages** | **{b['pipeline_seconds']:.1f}** | "
              f"this invocation: {res['pipeline_wall_seconds']:.1f} s |",
              "", f"Validation throughput: {v['images']} images at {ips} images/s on {v['target']}, "
              f"{wire} wire bytes/image, {v['retries']} retries.",
              "", "## Machine", "",
              f"{mach['cpu']}, {mach['cores']} cores ({mach['usable_cores']} usable), {mach['ram_gib']} GiB RAM, "
              f"{mach['os']}, Python {mach['python']}; "
              + ", ".join(f"{k} {v}" for k, v in mach["versions"].items())
              + f". Load average at start: {', '.join(f'{x:.2f}' for x in mach['load_average_at_start'] or [])} "
              "(the machine may be shared: wall times are upper bounds).",
              "", "Notes: latency is MACs x cycles-per-MAC / clock with the board table's published constants "
              "(a range); the target is checked on the upper estimate. Flash compares flatbuffers (the "
              "model's share of flash). Arena is tflite-micro's recording allocator on this 64-bit host.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("FACEMASK_EDGE_DEV_DATA") or str(SHARED / "datasets" / "facemask-dev")
    ap.add_argument("--data", type=Path, default=Path(default_data))
    ap.add_argument("--weights", type=Path, default=SHARED / "weights" / "vww_96.h5")
    ap.add_argument("--reference", type=Path, default=SHARED / "weights" / "vww_96_int8.tflite")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "benchmark", help="pipeline run folder")
    ap.add_argument("--board", default="nano33ble")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks",
                    help="folder of results.md and results.json")
    args = ap.parse_args(argv)
    for what, p in (("data set", args.data), ("weights", args.weights), ("reference model", args.reference)):
        if not p.exists():
            print(f"error: {what} {p} not found (set FACEMASK_EDGE_DEV_DATA or pass --data/--weights/--reference)",
                  file=sys.stderr)
            return 2
    t0 = time.monotonic()
    mach = machine()
    cmd, wall, rc = run_pipeline(args, extra)
    summary_path = args.out / "summary.json"
    if rc != 0 or not summary_path.exists():
        print(f"error: the pipeline failed (exit {rc}); see {args.out / 'summary.md'}", file=sys.stderr)
        return 1
    summary = json.loads(summary_path.read_text())
    measured = measure(args.out, args.reference)
    bench = collect(summary, measured, args.out, args.board)
    res = {"schema": 1, "command": " ".join(shlex.quote(a) for a in ["benchmarks/run_benchmark.py", *sys.argv[1:]]),
           "pipeline_command": " ".join(shlex.quote(c) for c in ["facemask-edge", *cmd[3:]]),
           "pipeline_exit": rc, "pipeline_wall_seconds": round(wall, 1), "run": str(args.out),
           "board": args.board, "data": str(args.data), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "machine": mach, "bench": bench, "summary_headline": summary.get("headline"),
           "benchmark_seconds": round(time.monotonic() - t0, 1)}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "results.json").write_text(json.dumps(res, indent=1, default=str))
    (args.results / "results.md").write_text(markdown(res))
    met = all(c["pass"] for c in bench["checks"].values())
    print(f"{'all targets met' if met else 'targets NOT all met'}: "
          + ", ".join(f"{k} {'ok' if c['pass'] else 'NO'}" for k, c in bench["checks"].items()))
    print(f"results: {args.results / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
