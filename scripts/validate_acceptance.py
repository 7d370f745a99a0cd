#!/usr/bin/env python
"""Acceptance of on-device validation (issue 4) on a converted run, with simulated boards.

    .venv/bin/python scripts/validate_acceptance.py RUN_DIR [--out DIR] [--board nano33ble]
        [--baud 921600] [--limit N] [--only clean,faults,resume,farm,errors]

Runs the commands a user would run (``facemask-edge board-sim`` and ``facemask-edge validate``
as separate processes on real ptys) and checks:

1. clean:  the run's test split is 100 % bit-exact with the host int8 reference, same accuracy;
2. faults: with ``--fault corrupt=0.01,drop=0.01,reset-after=200`` the same results, each image
           once, the retries and the reset counted;
3. link:   at ``--baud`` (921600) at least 90 % of wire bytes are image payload and the line is
           busy while images remain (line busy >= 90 % of the streaming time, board compute
           beyond the receive window excepted and reported);
4. resume: ``validate`` killed (SIGKILL) mid-run and started again finishes without redoing
           images; farm: two boards share the work and give the same report;
5. errors: a missing port, a board that never answers, a wrong model, and random bytes each give
           a one-line error within the timeout.

Writes ``OUT/acceptance.json`` and ``OUT/acceptance.md`` (default OUT: RUN_DIR/acceptance).
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import signal
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CLI = [sys.executable, "-m", "facemask_edge"]
FAULTS = "corrupt=0.01,drop=0.01,reset-after=200"


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


class Sim:
    """A ``facemask-edge board-sim`` process."""

    def __init__(self, run: Path, *args: str):
        self.proc = subprocess.Popen(CLI + ["board-sim", str(run), *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env())
        self.path = self.proc.stdout.readline().strip()
        if not self.path:
            raise SystemExit(f"board-sim did not start: {self.proc.stderr.read()}")
        self.summary = ""

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        self.summary = err.strip().splitlines()[-1] if err.strip() else ""
        return self.summary


def validate(run: Path, ports: list[str], out: Path, *extra: str, timeout: float = 600):
    cmd = CLI + ["validate", str(run), "--out", str(out)]
    for p in ports:
        cmd += ["--port", p]
    cmd += list(extra)
    t = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env())
    return proc, time.monotonic() - t


def load(out: Path) -> tuple[dict, dict]:
    report = json.loads((out / "report.json").read_text())
    from facemask_edge.validate.runner import read_results

    _, records, _ = read_results(out / "results.jsonl")
    return report, records


def image_lines(out: Path) -> int:
    return sum('"kind":"image"' in line for line in (out / "results.jsonl").read_text().splitlines())


def same_results(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[i]["board"]["scores"] == b[i]["board"]["scores"] and
                                        a[i]["board"]["label"] == b[i]["board"]["label"] for i in a)


def model_sha(run: Path) -> str:
    import hashlib

    card = json.loads((run / "model_card.json").read_text())
    return hashlib.sha256((run / card.get("model", "model_int8.tflite")).read_bytes()).hexdigest()


def link_figures(report: dict) -> dict:
    link = report["link"]
    port = next(iter(link["ports"].values()))
    return {"images_per_s": link["images_per_s"], "wire_bytes_per_image": link["wire_bytes_per_image"],
            "payload_efficiency": link["payload_efficiency"], "bytes_per_s": link["bytes_per_s"],
            "line_busy": port.get("line_busy"), "line_busy_host": port.get("line_busy_host"),
            "board_stall_s": port.get("board_stall_s"), "window_full_s": port.get("window_full_s"),
            "retries": link["retries"], "resets": link["resets"], "wall_s": link["wall_s"],
            "naks": port.get("naks"), "timeouts": port.get("timeouts"),
            "result_requests": port.get("result_requests")}


def check_clean(run, out, board, baud, extra, res):
    sim = Sim(run, "--board", board, "--baud", str(baud), "--camera-every", "1")
    try:
        proc, secs = validate(run, [sim.path], out / "clean", "--fresh", *extra)
    finally:
        sim.stop()
    if proc.returncode:
        res["clean"] = {"pass": False, "error": proc.stderr.strip()}
        return None
    report, records = load(out / "clean")
    a = report["agreement"]
    res["clean"] = {
        "pass": report["complete"] and a["bit_exact"] == 1.0 and report["board"]["accuracy"] == report["host"]["accuracy"],
        "images": report["validated"], "bit_exact": a["bit_exact"], "max_score_diff": a["max_score_diff"],
        "board_accuracy": report["board"]["accuracy"], "host_accuracy": report["host"]["accuracy"],
        "board_macro_f1": report["board"]["macro_f1"], "latency_ms": report["latency_ms"],
        "seconds": secs, "note": proc.stdout.strip().splitlines()[0], "sim": sim.summary,
    }
    evaluated = _evaluated_accuracy(run)
    if evaluated is not None:
        # The run's own evaluation (facemask-edge evaluate, TFLM int8 on the same split).
        res["clean"]["evaluate_tflm_accuracy"] = evaluated
        res["clean"]["pass"] = res["clean"]["pass"] and abs(evaluated - report["board"]["accuracy"]) < 1e-9
    fig = link_figures(report)
    # The line may idle only while the board computes longer than its receive window lasts.
    res["link"] = {"pass": fig["payload_efficiency"] >= 0.90 and (fig["line_busy_host"] or 0) >= 0.90,
                   "baud": baud, **fig}
    return records


def _evaluated_accuracy(run: Path) -> float | None:
    path = run / "evaluation" / "evaluation.json"
    if not path.exists():
        return None
    entry = json.loads(path.read_text()).get("shipped")  # evaluate's figures of model_int8.tflite
    try:
        return float(entry["tflm"]["accuracy"])
    except (TypeError, KeyError):
        return None


def check_faults(run, out, board, baud, extra, res, clean):
    sim = Sim(run, "--board", board, "--baud", str(baud), "--fault", FAULTS, "--camera-every", "1")
    try:
        proc, secs = validate(run, [sim.path], out / "faults", "--fresh", *extra)
    finally:
        summary = sim.stop()
    if proc.returncode:
        res["faults"] = {"pass": False, "error": proc.stderr.strip()}
        return
    report, records = load(out / "faults")
    n = report["validated"]
    lines = image_lines(out / "faults")
    reset_expected = n > 200
    res["faults"] = {
        "pass": (report["complete"] and lines == n and (clean is None or same_results(clean, records))
                 and report["link"]["retries"] > 0 and report["link"]["resets"] == (1 if reset_expected else 0)),
        "fault": FAULTS, "images": n, "result_lines": lines,
        "same_results_as_clean": None if clean is None else same_results(clean, records),
        "bit_exact": report["agreement"]["bit_exact"], "seconds": secs, "sim": summary,
        **{k: v for k, v in link_figures(report).items() if k in ("retries", "resets", "naks", "timeouts",
                                                                   "result_requests", "payload_efficiency",
                                                                   "images_per_s")},
    }


def check_resume(run, out, board, baud, extra, res, clean):
    sim = Sim(run, "--board", board, "--baud", str(baud), "--camera-every", "1")
    target = out / "resume"
    results = target / "results.jsonl"
    try:
        if results.exists():
            results.unlink()
        cmd = CLI + ["validate", str(run), "--port", sim.path, "--out", str(target), *extra]
        first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env())
        total = len(clean) if clean else None
        want = max(3, (total or 30) // 3)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and first.poll() is None:
            if results.exists() and results.read_text().count('"kind":"image"') >= want:
                break
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)
        first.wait()
        before = image_lines(target)
        proc, secs = validate(run, [sim.path], target, *extra)
    finally:
        sim.stop()
    if proc.returncode:
        res["resume"] = {"pass": False, "error": proc.stderr.strip()}
        return
    from facemask_edge.validate.runner import read_results

    _, records, segments = read_results(results)
    n = len(records)
    res["resume"] = {
        "pass": image_lines(target) == n and segments[-1]["images"] == n - before and
        (clean is None or same_results(clean, records)),
        "done_before_kill": before, "streamed_after_restart": segments[-1]["images"], "images": n,
        "result_lines": image_lines(target), "seconds_after_restart": secs,
    }


def check_farm(run, out, board, baud, extra, res, clean_report):
    sims = [Sim(run, "--board", board, "--baud", str(baud), "--camera-every", "1") for _ in range(2)]
    try:
        proc, secs = validate(run, [s.path for s in sims], out / "farm", "--fresh", *extra)
    finally:
        for s in sims:
            s.stop()
    if proc.returncode:
        res["farm"] = {"pass": False, "error": proc.stderr.strip()}
        return
    report, _ = load(out / "farm")
    same = clean_report is not None and all(report[k] == clean_report[k] for k in ("board", "host", "agreement"))
    res["farm"] = {"pass": report["complete"] and same and all(v > 0 for v in report["per_port_images"].values())
                   and len(report["per_port_images"]) == 2,
                   "per_port_images": report["per_port_images"], "same_report_as_one_board": same,
                   "images_per_s": report["link"]["images_per_s"], "seconds": secs}


class _FakePort:
    def __init__(self, noise: bool):
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.stop = threading.Event()
        if noise:
            threading.Thread(target=self._noise, daemon=True).start()

    def _noise(self):
        os.set_blocking(self.master, False)
        while not self.stop.is_set():
            for op in (lambda: os.read(self.master, 65536), lambda: os.write(self.master, os.urandom(512))):
                try:
                    op()
                except BlockingIOError:
                    pass
            time.sleep(0.005)

    def close(self):
        self.stop.set()
        time.sleep(0.02)
        os.close(self.master)
        os.close(self.slave)


def check_errors(run, out, res, timeout=3.0):
    from facemask_edge.device.testing import make_tiny_run

    cases = {}

    def one(name, ports, expect_in_msg):
        proc, secs = validate(run, ports, out / f"err-{name}", "--fresh", "--timeout", str(timeout), "--limit", "5")
        err = proc.stderr.strip()
        cases[name] = {"pass": proc.returncode != 0 and err.count("\n") == 0 and err.startswith("error:")
                       and expect_in_msg in err and secs < timeout + 15,
                       "message": err, "seconds": round(secs, 2)}

    one("missing_port", ["/dev/ttyFACEMASK_MISSING"], "does not exist")
    silent = _FakePort(noise=False)
    try:
        one("never_answers", [silent.path], "no answer")
    finally:
        silent.close()
    noise = _FakePort(noise=True)
    try:
        one("random_bytes", [noise.path], "none of them a protocol frame")
    finally:
        noise.close()
    other = make_tiny_run(out / "other-model" / "run", size=int(json.loads((run / "model_card.json").read_text())["input"]["size"]))
    sim = Sim(other, "--camera-every", "0")
    try:
        one("wrong_model", [sim.path], "runs model")
    finally:
        sim.stop()
    res["errors"] = {"pass": all(c["pass"] for c in cases.values()), "timeout_s": timeout, **cases}


def markdown(res: dict) -> str:
    lines = ["# Validation acceptance", "", f"Run: `{res['run']}`, board `{res['board']}`, {res['baud']} baud, "
             f"{res.get('images', '?')} images, {res['total_s']:.0f} s in all.", ""]
    for key, title in (("clean", "1. Bit-exact on the test split"), ("faults", "2. Faults"),
                       ("link", "3. Link efficiency"), ("resume", "4a. Kill and resume"),
                       ("farm", "4b. Two boards"), ("errors", "5. Errors"),
                       ("model_unchanged", "The same model throughout")):
        if key not in res:
            continue
        r = res[key]
        lines += [f"## {title}: {'PASS' if r.get('pass') else 'FAIL'}", "", "```",
                  json.dumps(r, indent=1, default=str), "```", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--board", default="nano33ble")
    ap.add_argument("--baud", type=int, default=921600)
    ap.add_argument("--limit", type=int, default=None, help="only the first N test images")
    ap.add_argument("--only", default="clean,faults,resume,farm,errors")
    args = ap.parse_args()
    out = args.out or args.run / "acceptance"
    out.mkdir(parents=True, exist_ok=True)
    extra = ["--limit", str(args.limit)] if args.limit else []
    only = set(args.only.split(","))
    res: dict = {"run": str(args.run), "board": args.board, "baud": args.baud,
                 "model_sha256": model_sha(args.run)}
    t0 = time.monotonic()
    clean = clean_report = None
    if only & {"clean", "faults", "resume", "farm"}:
        print("clean run ...", flush=True)
        clean = check_clean(args.run, out, args.board, args.baud, extra, res)
        clean_report = json.loads((out / "clean" / "report.json").read_text()) if clean else None
        res["images"] = len(clean) if clean else None
        print(f"  {res['clean']}\n  link: {res.get('link')}", flush=True)
    if "faults" in only:
        print("faults ...", flush=True)
        check_faults(args.run, out, args.board, args.baud, extra, res, clean)
        print(f"  {res['faults']}", flush=True)
    if "resume" in only:
        print("kill and resume ...", flush=True)
        check_resume(args.run, out, args.board, args.baud, extra, res, clean)
        print(f"  {res['resume']}", flush=True)
    if "farm" in only:
        print("two boards ...", flush=True)
        check_farm(args.run, out, args.board, args.baud, extra, res, clean_report)
        print(f"  {res['farm']}", flush=True)
    if "errors" in only:
        print("errors ...", flush=True)
        check_errors(args.run, out, res)
        print(f"  {res['errors']}", flush=True)
    res["total_s"] = time.monotonic() - t0
    # Every phase must have validated the same model: a run folder rewritten meanwhile (a new
    # convert) makes the comparisons meaningless.
    used = {}
    for phase in ("clean", "faults", "resume", "farm"):
        f = out / phase / "results.jsonl"
        if phase in res and f.exists():
            used[phase] = json.loads(f.open().readline()).get("model_sha256")
    changed = sorted(p for p, sha in used.items() if sha != res["model_sha256"]) or (
        ["after"] if model_sha(args.run) != res["model_sha256"] else [])
    res["model_unchanged"] = {"pass": not changed, "changed_in": changed}
    keys = [k for k in ("clean", "link", "faults", "resume", "farm", "errors", "model_unchanged") if k in res]
    res["pass"] = all(res[k]["pass"] for k in keys)
    (out / "acceptance.json").write_text(json.dumps(res, indent=1, default=str))
    (out / "acceptance.md").write_text(markdown(res))
    print(("PASS" if res["pass"] else "FAIL") + f": {', '.join(f'{k} ' + ('ok' if res[k]['pass'] else 'FAILED') for k in keys)}"
          f" ({res['total_s']:.0f} s); see {out / 'acceptance.md'}")
    return 0 if res["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
