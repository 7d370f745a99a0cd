"""The API key never appears in anything ``facemask-edge ei`` produces: stdout, stderr (with
``--verbose`` debug logs and tracebacks), files it writes, exception messages - even when the
server echoes the key back in its error messages."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _ei_helpers import small_dataset, tiny_int8_run  # noqa: E402
from ei_server import EIServer, FaultConfig  # noqa: E402

from facemask_edge.edge_impulse.config import project_for_key, resolve_config  # noqa: E402
from facemask_edge.edge_impulse.redact import MASK, redact, redacting, sanitized  # noqa: E402
from facemask_edge.errors import EdgeImpulseError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _files_containing(root: Path, needle: str) -> list[Path]:
    raw = needle.encode()
    hits = []
    for p in root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            if raw in data:
                hits.append(p)
            elif p.suffix == ".zip":
                import zipfile

                with zipfile.ZipFile(p) as zf:
                    if any(raw in zf.read(n) for n in zf.namelist()):
                        hits.append(p)
    return hits


def _cli(args, env, home: Path):
    full = {**os.environ, **env, "HOME": str(home), "FACEMASK_EDGE_CACHE": str(home / "cache")}
    return subprocess.run([sys.executable, "-m", "facemask_edge", "--verbose", "ei", *args],
                          env=full, capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.mark.slow
def test_no_key_anywhere_in_output_logs_tracebacks_or_files(tmp_path):
    key = "ei_" + secrets.token_hex(32)
    bad = "ei_" + secrets.token_hex(32)
    home = tmp_path / "home"
    home.mkdir()
    data = small_dataset(tmp_path / "data", per_class=6)
    run = tiny_int8_run(tmp_path / "run")
    outputs = []
    faults = FaultConfig(rate=0.3, seed=5, kinds={"500": 1, "429": 1, "drop_after": 1})
    with EIServer(key, faults=faults, leaky=True) as srv:
        # 1. a successful upload through injected (key-echoing) 500s, with debug logging on
        r = _cli(["upload-data", "--data", str(data)], srv.env(key), home)
        assert r.returncode == 0, r.stderr
        assert "DEBUG" in r.stderr  # --verbose really logged (urllib3 at least)
        outputs.append(r)
        # 2. a bad key: the server's 401 echoes it back; with --verbose the traceback is shown
        r = _cli(["upload-data", "--data", str(data), "--api-key", bad], srv.env(key), home)
        assert r.returncode != 0 and "Traceback" in r.stderr
        assert "Invalid API key '" + MASK + "'" in r.stderr  # the echo was there, masked
        outputs.append(r)
        # 3. profile (debug logs of the studio client and urllib3), key on argv
        r = _cli(["profile", str(run), "--api-key", key], srv.env(""), home)
        assert r.returncode == 0, r.stderr
        outputs.append(r)
        # 4. deploy that fails after retries (500s echoing the key): traceback
        srv.script(r"/deployment/download$", "500", times=10)
        r = _cli(["deploy", str(run), "--target", "zip", "--yes"], srv.env(key), home)
        assert r.returncode != 0 and "Traceback" in r.stderr and "answered 500" in r.stderr
        outputs.append(r)
        # 5. unreachable endpoint: traceback with its (sanitized) cause
        r = _cli(["profile", str(run), "--api-endpoint", "http://127.0.0.1:9/v1",
                  "--timeout", "2"], srv.env(key), home)
        assert r.returncode != 0 and "cannot reach" in r.stderr and "direct cause" in r.stderr
        outputs.append(r)
    for r in outputs:
        for secret in (key, bad):
            assert secret not in r.stdout
            assert secret not in r.stderr
    for secret in (key, bad):
        assert _files_containing(tmp_path, secret) == []
    # and the files were really written
    assert list((home / "cache" / "edge-impulse").glob("*.jsonl"))
    assert (run / "ei_profile.json").is_file()


def test_exception_messages_and_causes_carry_no_key(tmp_path):
    key = "ei_" + secrets.token_hex(32)
    with EIServer("ei_other", leaky=True) as srv:
        cfg = resolve_config(key, srv.api_endpoint, srv.ingestion_endpoint, timeout=5)
        with pytest.raises(EdgeImpulseError) as info:
            project_for_key(cfg)
    exc = info.value
    text = str(exc) + repr(exc) + str(exc.hint) + repr(cfg)
    assert key not in text and MASK in str(exc)  # the echoed key was masked
    assert key not in str(sanitized(RuntimeError(f"boom {key}")))


def test_redacting_covers_logging_prints_and_tracebacks(capsys):
    key = "ei_" + secrets.token_hex(32)
    logger = logging.getLogger("some.library")
    stream_records = []

    class ListHandler(logging.Handler):
        def emit(self, record):
            stream_records.append(self.format(record))

    handler = ListHandler()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with redacting(key):
            logger.debug("header %s", {"x-api-key": key})
            try:
                raise ValueError(f"bad key {key}")
            except ValueError:
                logger.exception("failed")
            print(f"stray print {key}")
            sys.stderr.write(f"stray stderr {key}\n")
            sys.stdout.buffer.write(f"raw bytes {key}\n".encode())
            sys.stdout.flush()
    finally:
        logger.removeHandler(handler)
    out, err = capsys.readouterr()
    everything = out + err + "\n".join(stream_records)
    assert key not in everything
    assert everything.count(MASK) >= 5
    assert redact(f"a{key}b") == f"a{MASK}b"
