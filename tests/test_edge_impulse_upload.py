"""``ei upload-data`` against the loopback Edge Impulse: labels, categories, exactly once under
injected failures, resume after an interruption, and clear one-line errors."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from _ei_helpers import ei_env, key, small_dataset  # noqa: E402,F401
from ei_server import EIServer, FaultConfig  # noqa: E402

from facemask_edge.cli import cli, main  # noqa: E402
from facemask_edge.data.splits import make_split, save_split  # noqa: E402
from facemask_edge.data.ingest import scan_dataset  # noqa: E402
from facemask_edge.edge_impulse.config import resolve_config  # noqa: E402
from facemask_edge.edge_impulse.ledger import Ledger  # noqa: E402
from facemask_edge.edge_impulse.upload import RetryPolicy, plan_upload, upload_dataset  # noqa: E402
from facemask_edge.errors import DataError, EdgeImpulseError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = small_dataset(tmp_path_factory.mktemp("ds") / "data", per_class=12)
    # two byte-identical copies and one file that does not decode
    shutil.copy(root / "with_mask" / "with_mask_0000.jpg", root / "with_mask" / "copy_a.jpg")
    shutil.copy(root / "without_mask" / "without_mask_0001.png",
                root / "without_mask" / "copy_b.png")
    (root / "without_mask" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _expected(root: Path) -> dict[str, str]:
    """content sha256 -> label, for every usable image (copies collapse)."""
    ds = scan_dataset(root, size=None)
    return {_sha(ds.root / it.path): ds.classes[it.label] for it in ds.items}


def _ledger_entries(cache: Path) -> dict[str, dict]:
    (path,) = (cache / "edge-impulse").glob("*.jsonl")
    with Ledger(path) as led:
        return dict(led.entries)


def _stored_by_file(server, entries) -> dict[str, tuple[str, str]]:
    """file content sha256 -> (label, category) of the sample the ledger says holds it.

    WEBP and BMP files are sent re-encoded as PNG, so the service's hash differs from the file's:
    the ledger's sample id is the link."""
    by_id = {s.id: s for s in server.samples}
    return {sha: (by_id[e["sample_id"]].label, by_id[e["sample_id"]].category)
            for sha, e in entries.items()}


def _run(server, key, *args, env=None):
    full = {**server.env(key), **(env or {})}
    res = CliRunner().invoke(cli, ["ei", "upload-data", *args], env=full, catch_exceptions=True)
    return res


def test_upload_sends_every_usable_image_once_with_its_label(server_factory, key, dataset,
                                                             ei_env):
    server = server_factory(key)
    res = _run(server, key, "--data", str(dataset), "--category", "training")
    assert res.exit_code == 0, res.output
    expected = _expected(dataset)
    assert len(server.samples) == len({s.sha256 for s in server.samples}) == len(expected) == 24
    stored = _stored_by_file(server, _ledger_entries(ei_env))  # 26 usable files, 2 copies
    assert stored == {sha: (label, "training") for sha, label in expected.items()}
    assert "uploaded 24," in res.output and "failed 0" in res.output
    assert "2 byte-identical copies" in res.output
    assert "broken.jpg" in res.output  # reported, not sent
    # every request carried what the real service needs
    for r in server.requests_to(r"^/api/training/files$"):
        assert r.headers["x-api-key"] == key
        assert r.headers["x-disallow-duplicates"] == "1"
        assert r.headers["x-label"] in ("with_mask", "without_mask")
        assert r.headers["content-type"].startswith("multipart/form-data")
        (name, size, ctype, sha) = r.form["data"][0]
        assert name.endswith((".jpg", ".png")) and ctype in ("image/jpeg", "image/png")
    # WEBP and BMP files were re-encoded as PNG, not refused
    assert any(n.startswith("with_mask_0002") and n.endswith(".png")
               for r in server.requests_to("files$") for n, *_ in r.form["data"])


def test_rerun_uploads_nothing_and_ledger_holds_no_key(server_factory, key, dataset, ei_env):
    server = server_factory(key)
    assert _run(server, key, "--data", str(dataset)).exit_code == 0
    before = len(server.requests_to("files$"))
    res = _run(server, key, "--data", str(dataset))
    assert res.exit_code == 0
    assert len(server.requests_to("files$")) == before  # nothing sent again
    assert "uploaded 0, skipped 24 already there (24 from the ledger" in res.output
    (ledger,) = (ei_env / "edge-impulse").glob("*.jsonl")
    text = ledger.read_text()
    assert key not in text
    entries = [json.loads(line) for line in text.splitlines()]
    assert {e["sample_id"] for e in entries} == {s.id for s in server.samples}


def test_split_from_run_follows_split_json(server_factory, key, dataset, tmp_path):
    ds = scan_dataset(dataset, size=None)
    split = make_split(ds, fractions=(0.5, 0.25, 0.25), seed=3)
    run = tmp_path / "run"
    run.mkdir()
    save_split(split, run)
    server = server_factory(key)
    res = _run(server, key, "--data", str(dataset), "--split-from", str(run))
    assert res.exit_code == 0, res.output
    want = {}
    for name, cat in (("train", "training"), ("val", "training"), ("test", "testing")):
        for path, label in split[name]:
            want.setdefault(_sha(ds.root / path), (label, cat))
    assert _stored_by_file(server, _ledger_entries(tmp_path / "cache")) == want
    assert len(server.samples) == len(want)
    assert Counter(s.category for s in server.samples)["testing"] > 0
    # both ways of saying where images go at once is refused
    res = _run(server, key, "--data", str(dataset), "--split-from", str(run), "--category",
               "testing")
    assert res.exit_code != 0 and isinstance(res.exception, DataError)


def test_exactly_once_under_injected_faults(key, dataset, tmp_path):
    faults = FaultConfig(rate=0.3, seed=11, slow_seconds=1.2, retry_after=1)
    with EIServer(key, faults=faults) as server:
        cfg = resolve_config(key, server.api_endpoint, server.ingestion_endpoint, timeout=0.6)
        plan = plan_upload(dataset, category="split")
        with Ledger(tmp_path / "l.jsonl") as ledger:
            summary = upload_dataset(cfg, plan, ledger, 4242, concurrency=4, seed=1,
                                     policy=RetryPolicy(attempts=10, base_delay=0.05),
                                     show_progress=False)
        assert not summary.failed and summary.sent_ok == 24
        assert set(server.fault_counts) >= {"429", "500", "drop_after", "slow"}
        shas = [s.sha256 for s in server.samples]
        assert len(shas) == len(set(shas)) == 24  # nothing stored twice
        # sample ids recorded in the ledger are the stored ones, even when a retry learnt the id
        # from the service's "already exists (ids: N)" answer; labels are right
        with Ledger(tmp_path / "l.jsonl") as ledger:
            entries = dict(ledger.entries)
        assert {e["sample_id"] for e in entries.values()} == {s.id for s in server.samples}
        assert {k: v[0] for k, v in _stored_by_file(server, entries).items()} == \
            _expected(dataset)
        # 429 answers were honoured: the retry of that file came >= Retry-After (1 s) later
        reqs = server.requests_to("files$")
        checked = 0
        for i, r in enumerate(reqs):
            if r.fault != "429" or not r.form:
                continue
            sha = r.form["data"][0][3]
            later = [q for q in reqs[i + 1:] if q.form and q.form["data"][0][3] == sha]
            assert later, "a 429'd image was never retried"
            assert later[0].time - r.time >= 0.95
            checked += 1
        assert checked >= 1


def test_slow_answer_then_retry_is_not_a_duplicate(key, dataset, tmp_path):
    with EIServer(key, faults=FaultConfig(slow_seconds=1.0)) as server:
        server.script(r"/api/testing/files", "slow", times=3)
        cfg = resolve_config(key, server.api_endpoint, server.ingestion_endpoint, timeout=0.3)
        plan = plan_upload(dataset, category="testing")
        plan.items = plan.items[:3]
        with Ledger(tmp_path / "l.jsonl") as ledger:
            s = upload_dataset(cfg, plan, ledger, 4242, concurrency=3, show_progress=False,
                               policy=RetryPolicy(base_delay=0.5))
        time.sleep(1.0)  # let the slow handlers finish
        assert s.uploaded == 3 and not s.failed
        assert len(server.samples) == 3


def test_interrupted_upload_resumes_without_resending(key, dataset, tmp_path, ei_env):
    """Ctrl-C in the middle, then the same command again: everything lands exactly once and the
    second run re-sends at most the requests that were in flight."""
    with EIServer(key, faults=FaultConfig(rate=1.0, kinds={"slow": 1}, slow_seconds=0.15)) \
            as server:
        env = {**os.environ, **server.env(key), "FACEMASK_EDGE_CACHE": str(ei_env)}
        cmd = [sys.executable, "-m", "facemask_edge", "ei", "upload-data", "--data",
               str(dataset), "-j", "2"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=ROOT)
        deadline = time.monotonic() + 60
        while len(server.samples) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "interrupted" in out + err
        first = len(server.samples)
        assert 6 <= first < 24
        n_before = len(server.requests_to("files$"))
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert res.returncode == 0, res.stderr
        shas = [s.sha256 for s in server.samples]
        assert len(shas) == len(set(shas)) == 24
        resent = [r for r in server.requests_to("files$")[n_before:] if r.form
                  and r.form["data"][0][3] in set(shas[:first])]
        assert len(resent) <= 2  # at most the two in flight at Ctrl-C


def test_ledger_survives_a_torn_last_line(tmp_path):
    p = tmp_path / "l.jsonl"
    with Ledger(p) as led:
        led.record("aa" * 32, sample_id=1, label="x", category="training")
    with open(p, "a") as fh:
        fh.write('{"v": 1, "sha256": "bb')  # killed mid-write
    with Ledger(p) as led:
        assert list(led.entries) == ["aa" * 32] and led.torn_lines == 1
        led.record("cc" * 32, sample_id=2, label="y", category="testing")
    with Ledger(p) as led:
        assert set(led.entries) == {"aa" * 32, "cc" * 32}
    with Ledger(p):
        with pytest.raises(EdgeImpulseError, match="in use"):
            Ledger(p).__enter__()


def test_bad_key_is_one_clear_line_without_the_key(key, dataset, capfd):
    with EIServer(key) as server:
        bad = "ei_" + secrets.token_hex(32)
        env = {**server.env(bad)}
        os.environ.update(env)
        try:
            rc = main(["ei", "upload-data", "--data", str(dataset)])
        finally:
            for k in env:
                os.environ.pop(k, None)
        out, err = capfd.readouterr()
        assert rc == 1
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert lines == ["error: Edge Impulse rejected the API key (401: Invalid API key) (pass "
                         "--api-key or set EI_API_KEY to a project API key (Studio: Dashboard > "
                         "Keys))"]
        assert bad not in out + err and key not in out + err
        assert not server.requests_to("files$")  # nothing was sent with a bad key


def _blackhole():
    """A TCP port that accepts connections and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    conns = []
    stop = threading.Event()

    def accept():
        s.settimeout(0.1)
        while not stop.is_set():
            try:
                conns.append(s.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()

    def close():
        stop.set()
        t.join()
        for c in conns:
            c.close()
        s.close()

    return s.getsockname()[1], close


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_unreachable_endpoint_fails_within_the_timeout(key, dataset, capfd, kind):
    if kind == "refused":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # closed again: connections are refused
        close = lambda: None  # noqa: E731
    else:
        port, close = _blackhole()
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        rc = main(["ei", "upload-data", "--data", str(dataset), "--api-key", key,
                   "--api-endpoint", url + "/v1", "--ingestion-endpoint", url, "--timeout", "1.5"])
        elapsed = time.monotonic() - t0
    finally:
        close()
    out, err = capfd.readouterr()
    assert rc == 1 and elapsed < 1.5 + 3.0  # the timeout plus the scan of the data set
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert line.startswith(f"error: cannot reach the Edge Impulse API at {url}/v1 (")
    if kind == "silent":
        assert "(timed out after 1.5 s)" in line
    else:  # refused at once: no "after 1.5 s" (issue 15.6)
        assert "(connection refused)" in line and "after" not in line
    assert key not in out + err


def test_unreachable_ingestion_with_working_api_is_clear(key, dataset, capfd):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with EIServer(key) as server:
        rc = main(["ei", "upload-data", "--data", str(dataset), "--api-key", key,
                   "--api-endpoint", server.api_endpoint,
                   "--ingestion-endpoint", f"http://127.0.0.1:{port}", "--timeout", "2"])
    out, err = capfd.readouterr()
    assert rc == 1
    assert f"error: cannot reach the Edge Impulse ingestion service at http://127.0.0.1:{port}" \
        in err


def test_dry_run_and_bad_category_need_no_network(dataset):
    res = CliRunner().invoke(cli, ["ei", "upload-data", "--data", str(dataset), "--dry-run"])
    assert res.exit_code == 0 and "would send up to 24 images" in res.output
    with pytest.raises(DataError, match="unknown category"):
        plan_upload(dataset, category="validation")


def test_missing_key_is_a_clear_error(dataset, monkeypatch):
    res = CliRunner().invoke(cli, ["ei", "upload-data", "--data", str(dataset)])
    assert isinstance(res.exception, EdgeImpulseError)
    assert "no Edge Impulse API key" in str(res.exception)


@pytest.fixture()
def server_factory():
    servers = []

    def make(key, **kw):
        srv = EIServer(key, **kw).start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()


def test_recheck_resends_only_what_was_deleted_on_the_service(server_factory, key, dataset,
                                                              ei_env):
    server = server_factory(key)
    assert _run(server, key, "--data", str(dataset)).exit_code == 0
    gone = server.samples[:5]
    with server.state.lock:  # deleted in Studio
        for s in gone:
            server.state.samples.remove(s)
            server.state.by_hash.pop(s.sha256)
    res = _run(server, key, "--data", str(dataset), "--recheck")
    assert res.exit_code == 0, res.output
    assert "uploaded 5, skipped 19 already there (0 from the ledger, 19 confirmed" in res.output
    assert len(server.samples) == 24 == len({s.sha256 for s in server.samples})
    # the ledger now points at the new sample ids
    assert {e["sample_id"] for e in _ledger_entries(ei_env).values()} == {
        s.id for s in server.samples}


_RACE = r'''
import json, os, signal, sys
sys.path.insert(0, sys.argv[1])
from ei_server import EIServer, FaultConfig
from facemask_edge.edge_impulse import upload as U
from facemask_edge.edge_impulse.config import resolve_config
from facemask_edge.edge_impulse.ledger import Ledger

real_wait, calls = U.wait, [0]


def racy_wait(fs, timeout=None, return_when=None):
    calls[0] += 1
    running = [f for f in fs if f.running()]
    if calls[0] >= 3 and running and not getattr(racy_wait, "done", False):
        # What a real Ctrl-C can hit: the signal lands while wait() holds a running
        # future's lock (wait() takes every future's lock to install its waiter).
        racy_wait.done = True
        cond = running[0]._condition
        cond.acquire()
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(10000):
            pass  # the Python-level handler runs here, lock held
        cond.release()
    return real_wait(fs, timeout=timeout, return_when=return_when)


U.wait = racy_wait
key = "ei_" + "ab" * 32
with EIServer(key, faults=FaultConfig(rate=1.0, kinds={"slow": 1}, slow_seconds=0.1)) as srv:
    cfg = resolve_config(key, srv.api_endpoint, srv.ingestion_endpoint, timeout=5)
    with Ledger(sys.argv[3]) as led:
        s = U.upload_dataset(cfg, U.plan_upload(sys.argv[2]), led, 4242, concurrency=2,
                             show_progress=False)
        print(json.dumps({"interrupted": s.interrupted, "uploaded": s.uploaded,
                          "stored": len(srv.samples), "ledger": len(led)}))
'''


def test_ctrl_c_inside_wait_does_not_hang_the_upload(dataset, tmp_path, ei_env):
    """A Ctrl-C that lands while ``concurrent.futures.wait`` holds a future's lock used to
    leave the lock held: the workers blocked in ``set_result`` and the upload hung forever
    after "interrupted: waiting for the requests in flight" (seen for 12 minutes)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FACEMASK_EDGE_CACHE": str(ei_env)}
    try:
        r = subprocess.run([sys.executable, "-c", _RACE, str(ROOT / "tests"), str(dataset),
                            str(tmp_path / "l.jsonl")], env=env, capture_output=True,
                           text=True, timeout=40, cwd=ROOT)
    except subprocess.TimeoutExpired:
        pytest.fail("the upload hung after Ctrl-C")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["interrupted"] and 0 < got["uploaded"] < 24
    # everything the service stored was recorded: a re-run sends nothing twice
    assert got["stored"] == got["ledger"] == got["uploaded"]
