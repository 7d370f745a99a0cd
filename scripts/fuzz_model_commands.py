"""Feed random, truncated and mutated ``model_int8.tflite`` files through ``profile``, ``export``,
``board-sim`` and ``evaluate`` for a while; every outcome must be success or one ``error:`` line.

Each case builds a run folder whose card matches the damaged file (so the checks behind the
card's sha256 do not stop it first) and runs the command in a forked child, so a crash of the
process counts as a finding instead of ending the fuzz. Usage::

    python scripts/fuzz_model_commands.py [--seconds 60] [--seed 1]

Exit status 1 when any case printed a traceback, an "unexpected" error, more than one error
line, or died by a signal; the cases are saved under ``--out`` for replay.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import sys
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from test_corrupt_model_cli import COMMANDS, make_run  # noqa: E402

from facemask_edge.cli import main  # noqa: E402

TINY = (ROOT / "tests" / "fixtures" / "tiny_int8.tflite").read_bytes()


def mutate(rng: random.Random) -> bytes:
    kind = rng.choice(["truncate", "flip", "flip", "splice", "random"])
    data = bytearray(TINY)
    if kind == "truncate":
        return bytes(data[:rng.randrange(len(data))])
    if kind == "random":
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 6000)))
    if kind == "splice":
        i = rng.randrange(len(data))
        return bytes(data[:i] + bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 64))) + data[i:])
    for _ in range(rng.randrange(1, 8)):
        data[rng.randrange(len(data))] = rng.getrandbits(8)
    return bytes(data)


def run_case(command: str, model: bytes, root: Path) -> tuple[str, str]:
    """``(verdict, stderr)``: verdict ``ok``, ``error`` (one line) or ``FINDING: ...``."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: build the run, run the command, report through the pipe
        os.close(r)
        err = io.StringIO()
        code = 99
        try:
            run = make_run(root, TINY)  # a good run, then the damaged file with a card that names it
            (run / "model_int8.tflite").write_bytes(model)
            card = json.loads((run / "model_card.json").read_text())
            card.update(sha256=hashlib.sha256(model).hexdigest(), flatbuffer_bytes=len(model))
            (run / "model_card.json").write_text(json.dumps(card))
            with redirect_stderr(err), redirect_stdout(io.StringIO()):
                code = main(COMMANDS[command](run))
        except BaseException as exc:  # noqa: BLE001 - anything escaping main() is a finding
            err.write(f"ESCAPED {type(exc).__name__}: {exc}\n")
        os.write(w, f"{code}\n{err.getvalue()}".encode())
        os._exit(0)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode(errors="replace")
    if os.WIFSIGNALED(status):
        return f"FINDING: killed by signal {os.WTERMSIG(status)}", text
    code, _, err = text.partition("\n")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    if "ESCAPED" in err or "Traceback" in err or "unexpected" in err:
        return "FINDING: " + err.strip().splitlines()[-1][:200], err
    if code == "0":
        return "ok", err
    if len(errors) == 1:
        return "error", err
    return f"FINDING: exit {code} with {len(errors)} error lines", err


def main_() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "fuzz-model-commands")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    a.out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, dict[str, int]] = {c: {} for c in COMMANDS}
    findings = 0
    end = time.monotonic() + a.seconds
    n = 0
    while time.monotonic() < end:
        command = list(COMMANDS)[n % len(COMMANDS)]
        model = mutate(rng)
        with tempfile.TemporaryDirectory() as tmp:
            verdict, err = run_case(command, model, Path(tmp))
        key = verdict if not verdict.startswith("FINDING") else "finding"
        counts[command][key] = counts[command].get(key, 0) + 1
        if verdict.startswith("FINDING"):
            findings += 1
            (a.out / f"finding_{findings}_{command}.tflite").write_bytes(model)
            print(f"{command}: {verdict}", file=sys.stderr)
        n += 1
    for command, c in counts.items():
        print(f"{command}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
    print(f"{n} cases in {a.seconds:g} s, {findings} finding(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main_())
