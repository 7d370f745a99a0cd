"""Issue 15: Edge Impulse against a real project - impulses, jobs, proxies, deadline, status.

All against the loopback Edge Impulse (``ei_server.py``) and a loopback proxy (``_ei_proxy.py``);
the model is the checked-in ``fixtures/tiny_int8.tflite`` (no TensorFlow needed).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).parent))
import ei_server  # noqa: E402
from _ei_helpers import ei_env, key, small_dataset  # noqa: E402,F401
from _ei_proxy import LoopbackProxy  # noqa: E402
from ei_server import EIServer  # noqa: E402

from facemask_edge.cli import main  # noqa: E402
from facemask_edge.data.ingest import scan_dataset  # noqa: E402
from facemask_edge.data.splits import make_split, save_split  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "tiny_int8.tflite"


@pytest.fixture()
def run(tmp_path):
    from _ei_helpers import tiny_int8_run

    return tiny_int8_run(tmp_path / "run", model=FIXTURE.read_bytes(), size=24)


@pytest.fixture()
def server(key):
    with EIServer(key) as srv:
        yield srv


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return small_dataset(tmp_path_factory.mktemp("proj") / "data", per_class=6)


def _main(monkeypatch, env: dict, *args) -> int:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return main(["ei", *args])


def _errors(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("error:")]


# -- 1: the user's impulse is not replaced unasked ---------------------------------------------

def test_deploy_with_an_existing_impulse_refuses_in_one_line(server, key, run, monkeypatch,
                                                              capfd):
    iid = server.add_impulse("Mask detector (trained in Studio)")
    rc = _main(monkeypatch, server.env(key), "deploy", str(run))
    out, err = capfd.readouterr()
    assert rc == 1
    (line,) = _errors(err)
    assert f"already has impulse {iid} 'Mask detector (trained in Studio)'" in line
    for option in (f"--impulse {iid}", "--new-impulse", "--yes", "separate project"):
        assert option in line
    # nothing was sent to any impulse; the user's impulse is as it was
    assert not server.requests_to(r"pretrained-model|build-ondevice")
    assert server.state.impulses[iid].model is None
    rc = _main(monkeypatch, server.env(key), "profile", str(run))
    assert rc == 1 and "already has impulse" in _errors(capfd.readouterr()[1])[0]


def test_with_a_choice_it_deploys_into_that_impulse(server, key, run, monkeypatch, capfd):
    user = server.add_impulse("Mask detector (trained in Studio)")
    other = server.add_impulse("Second impulse")
    rc = _main(monkeypatch, server.env(key), "deploy", str(run), "--target", "zip",
               "--impulse", str(other))
    assert rc == 0, capfd.readouterr()
    calls = server.requests_to(r"pretrained-model|build-ondevice|deployment/download$")
    assert len(calls) >= 4 and all(c.query.get("impulseId") == [str(other)] for c in calls)
    (save,) = server.requests_to(r"/pretrained-model/save$")
    assert save.json["input"]["resizeMode"] == "fit-short"
    assert server.state.impulses[other].saved is not None
    assert server.state.impulses[user].model is None  # the default impulse untouched
    assert json.loads((run / "ei_deploy.json").read_text())["impulse"] == other
    # --new-impulse: a new impulse of ours, the others untouched
    rc = _main(monkeypatch, server.env(key), "deploy", str(run), "--target", "zip",
               "--new-impulse")
    assert rc == 0
    new = max(server.state.impulses)
    assert new not in (user, other) and server.state.impulses[new].name.startswith(
        "facemask-edge") and server.state.impulses[new].saved is not None
    assert server.state.impulses[user].model is None
    # --yes: no impulseId, so the default impulse (the user's) gets the model, as asked
    rc = _main(monkeypatch, server.env(key), "deploy", str(run), "--target", "zip", "--yes")
    assert rc == 0
    assert "impulseId" not in server.requests_to(r"/pretrained-model/save$")[-1].query
    assert server.state.impulses[user].saved is not None
    # an unknown id lists the real ones
    rc = _main(monkeypatch, server.env(key), "deploy", str(run), "--impulse", "99")
    (line,) = _errors(capfd.readouterr()[1])
    assert "no impulse 99" in line and f"{user} (Mask detector" in line


# -- 4: a failed job says why -----------------------------------------------------------------

def test_a_failing_deploy_job_ends_with_one_error_line_and_the_log_tail(server, key, run,
                                                                        monkeypatch, capfd):
    logs = [f"step {i}: compiling" for i in range(30)] + [
        "Error: the model uses operator CUSTOM_FOO which is not supported by the EON compiler"]
    server.fail_job(r"/jobs/build-ondevice-model$", logs)
    rc = _main(monkeypatch, server.env(key), "deploy", str(run), "--target", "zip",
               "--engine", "tflite-eon")
    out, err = capfd.readouterr()
    assert rc == 1
    lines = err.strip().splitlines()
    (line,) = _errors(err)
    assert lines[-1] == line  # the error is the last line, after the log
    assert "Edge Impulse deployment job" in line and "failed" in line
    assert "CUSTOM_FOO which is not supported" in line
    shown = [ln for ln in lines if ln.startswith("  | ")]
    assert shown[-1].endswith("not supported by the EON compiler")
    assert "  | step 29: compiling" in lines and "  | step 0: compiling" not in lines
    assert 5 <= len(shown) <= 12
    assert not server.requests_to(r"/deployment/download$")  # no "No build found" 404
    assert key not in out + err


def test_a_failing_upload_job_is_caught_at_once(server, key, run, monkeypatch, capfd):
    server.fail_job(r"/pretrained-model/upload$", ["Failed to load model: bad flatbuffer"])
    rc = _main(monkeypatch, server.env(key), "profile", str(run))
    (line,) = _errors(capfd.readouterr()[1])
    assert rc == 1 and "model upload job" in line and "bad flatbuffer" in line
    assert not server.requests_to(r"/pretrained-model/profile$")


# -- 6: one deadline for the whole command ----------------------------------------------------

def test_job_timeout_is_one_deadline_for_the_whole_command(key, run, monkeypatch, capfd):
    """Each job (1.2 s) fits in 2 s; the upload and the build together do not. With per-job
    timeouts both jobs would finish and the command succeed; the time bound only catches a hang
    (it is loose: a loaded CI machine adds seconds of start-up)."""
    jobs = {"pretrained-model-upload": 1.2, "build-ondevice-model": 1.2}
    with EIServer(key, job_seconds=jobs) as server:
        t0 = time.monotonic()
        rc = _main(monkeypatch, server.env(key), "deploy", str(run), "--target", "zip",
                   "--job-timeout", "2")
        elapsed = time.monotonic() - t0
    (line,) = _errors(capfd.readouterr()[1])
    assert rc == 1 and "did not finish within --job-timeout 2 s" in line
    assert elapsed < 2 + 6, elapsed


def test_a_job_still_running_at_the_deadline_is_cancelled(key, run, monkeypatch, capfd):
    with EIServer(key, job_seconds={"build-ondevice-model": 30}) as server:
        t0 = time.monotonic()
        rc = _main(monkeypatch, server.env(key), "deploy", str(run), "--target", "zip",
                   "--job-timeout", "1.5")
        elapsed = time.monotonic() - t0
        (build,) = [j for j in server.state.jobs.values() if j.key == "build-ondevice-model"]
    assert rc == 1 and "within --job-timeout 1.5 s" in _errors(capfd.readouterr()[1])[0]
    assert elapsed < 1.5 + 6, elapsed  # not the build's 30 s (loose: start-up on a loaded machine)
    assert build.cancelled  # the build we stopped waiting for does not go on


# -- 6: devices and targets from the service --------------------------------------------------

def test_unknown_device_lists_the_services_devices(server, key, run, monkeypatch, capfd):
    monkeypatch.setattr(ei_server, "LATENCY_DEVICES",
                        ei_server.LATENCY_DEVICES + [("loopback-npu-1ghz", "Loopback NPU", 1000)])
    rc = _main(monkeypatch, server.env(key), "profile", str(run), "--device", "mortex-c4")
    (line,) = _errors(capfd.readouterr()[1])
    assert rc == 1 and "no profiling device 'mortex-c4'" in line
    assert "loopback-npu-1ghz" in line and "cortex-m4f-80mhz" in line
    assert not server.requests_to(r"pretrained-model")
    rc = _main(monkeypatch, server.env(key), "devices")
    out = capfd.readouterr()[0]
    assert rc == 0 and "loopback-npu-1ghz  " in out and "Loopback NPU" in out
    assert len(out.splitlines()) == len(ei_server.LATENCY_DEVICES)
    rc = _main(monkeypatch, server.env(key), "targets")
    out = capfd.readouterr()[0]
    assert rc == 0
    assert any(ln.startswith("arduino ") and "tflite-eon" in ln for ln in out.splitlines())
    assert len(out.splitlines()) == len(ei_server.TARGETS)


# -- 3: proxies -------------------------------------------------------------------------------

def test_upload_profile_and_deploy_all_go_through_the_proxy(server, key, run, dataset,
                                                            monkeypatch, capfd):
    with LoopbackProxy() as proxy:
        env = {**server.env(key), **proxy.env()}
        assert _main(monkeypatch, env, "upload-data", "--data", str(dataset)) == 0
        assert _main(monkeypatch, env, "profile", str(run)) == 0
        assert _main(monkeypatch, env, "deploy", str(run), "--target", "zip") == 0
    capfd.readouterr()
    base = server.url
    assert proxy.seen(f"{base}/api/split/files")                    # upload
    assert proxy.seen(f"{base}/v1/api/4242/pretrained-model/profile")  # profile
    assert proxy.seen(f"{base}/v1/api/4242/jobs/build-ondevice-model")  # deploy
    assert proxy.seen(f"{base}/v1/api/4242/deployment/download")
    # every request the server saw came through the proxy (from one of its sockets)
    assert len(server.requests) == len(proxy.log)
    assert {r.peer_port for r in server.requests} <= proxy.upstream_ports


def test_https_goes_through_the_proxy_with_connect(key, run, dataset, monkeypatch, capfd):
    """The real service is https: HTTPS_PROXY alone, CONNECT tunnels, TLS end to end."""
    with EIServer(key, tls=True) as server, LoopbackProxy() as proxy:
        env = {**server.env(key), "REQUESTS_CA_BUNDLE": server.ca_file,
               "HTTPS_PROXY": proxy.url, "https_proxy": proxy.url, "NO_PROXY": "",
               "no_proxy": ""}
        assert _main(monkeypatch, env, "upload-data", "--data", str(dataset)) == 0
        assert _main(monkeypatch, env, "profile", str(run)) == 0
        assert _main(monkeypatch, env, "deploy", str(run), "--target", "zip") == 0
        port = server.url.rsplit(":", 1)[1]
    capfd.readouterr()
    assert proxy.log and all(e == ("CONNECT", f"127.0.0.1:{port}") for e in proxy.log)
    assert {r.peer_port for r in server.requests} <= proxy.upstream_ports
    for path in (r"^/api/split/files$", r"/pretrained-model/profile$",
                 r"/jobs/build-ondevice-model$", r"/deployment/download$"):
        assert server.requests_to(path), path


def test_a_tls_failure_says_so_at_once(key, run, monkeypatch, capfd):
    """An untrusted certificate fails in the handshake: not "connection failed after 30 s"."""
    with EIServer(key, tls=True) as server:
        t0 = time.monotonic()
        rc = _main(monkeypatch, server.env(key), "profile", str(run))
        elapsed = time.monotonic() - t0
    (line,) = _errors(capfd.readouterr()[1])
    assert rc == 1 and elapsed < 10
    assert "(TLS error: " in line and "CERTIFICATE_VERIFY_FAILED" in line
    assert "after" not in line.split("(TLS error")[1].split(")")[0]


def test_only_an_ingestion_endpoint_does_not_ask_the_default_studio(server, key, dataset,
                                                                    monkeypatch, capfd, tmp_path):
    """With only EI_INGESTION_ENDPOINT set, the key must not go to studio.edgeimpulse.com. The
    proxy takes everything but loopback, so a request to the studio would show in its log."""
    with LoopbackProxy() as proxy:
        env = {"EI_API_KEY": key, "EI_INGESTION_ENDPOINT": server.ingestion_endpoint,
               **proxy.env(), "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
        rc = _main(monkeypatch, env, "upload-data", "--data", str(dataset))
        out, err = capfd.readouterr()
    assert rc == 0, err
    assert proxy.log == []
    assert not server.requests_to(r"^/v1/")
    assert len(server.samples) == 12
    (ledger,) = (tmp_path / "cache" / "edge-impulse").glob("*.jsonl")
    assert "-key-" in ledger.name and key not in ledger.read_text()


# -- 5: reconciliation ------------------------------------------------------------------------

def _split_run(dataset, tmp_path) -> Path:
    ds = scan_dataset(dataset, size=None)
    split = make_split(ds, fractions=(0.5, 0.25, 0.25), seed=3)
    r = tmp_path / "r7"
    r.mkdir()
    save_split(split, r)
    return r


def test_status_reports_repairs_and_rebuilds_the_ledger(server, key, dataset, tmp_path,
                                                        monkeypatch, capfd):
    splitrun = _split_run(dataset, tmp_path)
    env = server.env(key)
    data = ["--data", str(dataset), "--split-from", str(splitrun)]
    assert _main(monkeypatch, env, "upload-data", *data) == 0
    samples = sorted(server.samples, key=lambda s: s.id)
    assert len(samples) == 12
    meta = samples[0].metadata
    assert set(meta) == {"source", "sha256", "split", "run_id"} and meta["run_id"] == "r7"
    assert meta["split"] in ("train", "val", "test") and (dataset / meta["source"]).is_file()
    capfd.readouterr()
    # in sync: exit 0, nothing to report
    assert _main(monkeypatch, env, "status", *data) == 0
    assert "ok 12, missing 0, extra 0, wrong label 0, wrong category 0" in capfd.readouterr()[0]
    # in Studio: 3 deleted, 2 relabelled, 1 extra sample uploaded by hand
    deleted = samples[:3]
    for s in deleted:
        server.delete_sample(s.id)
    for s in samples[3:5]:
        s.label = "unsure"
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(buf, "PNG")
    r = requests.post(f"{server.ingestion_endpoint}/api/training/files",
                      headers={"x-api-key": key, "x-label": "hand"},
                      files=[("data", ("hand.png", buf.getvalue(), "image/png"))], timeout=10)
    extra_id = r.json()["files"][0]["sampleId"]
    rc = _main(monkeypatch, env, "status", *data)
    out = capfd.readouterr()[0]
    assert rc == 1
    assert "ok 7, missing 3, extra 1, wrong label 2, wrong category 0" in out.splitlines()[0]
    for s in deleted:
        assert f"{s.metadata['source']} ({s.label}, {s.category})" in out
    for s in samples[3:5]:
        assert f"sample {s.id} is labelled 'unsure'" in out
    assert f"sample {extra_id} 'hand' (hand, training)" in out
    assert "3 ledger entries point at samples that are gone" in out
    # a moved sample is a wrong category
    samples[5].category = "testing" if samples[5].category == "training" else "training"
    _main(monkeypatch, env, "status", *data)
    assert "ok 6, missing 3, extra 1, wrong label 2, wrong category 1" in capfd.readouterr()[0]
    # --repair: uploads 3, relabels 2, moves 1; the extra sample stays (it may be the user's)
    before = len(server.requests_to(r"/files$"))
    rc = _main(monkeypatch, env, "status", *data, "--repair")
    out = capfd.readouterr()[0]
    assert rc == 0, out
    assert "repaired: uploaded 3, relabelled 2, moved 1" in out
    assert "after repair: project 4242: 13 samples for 12 distinct images: ok 12, missing 0, " \
           "extra 1, wrong label 0, wrong category 0" in out
    assert len(server.requests_to(r"/files$")) == before + 3
    assert any(s.id == extra_id for s in server.samples)
    # the ledger is lost: --repair rebuilds it from the listing; a re-run uploads nothing
    (ledger,) = (tmp_path / "cache" / "edge-impulse").glob("*.jsonl")
    ledger.unlink()
    assert _main(monkeypatch, env, "status", *data, "--repair") == 0
    out = capfd.readouterr()[0]
    assert "repaired: uploaded 0, relabelled 0, moved 0; ledger entries written 12" in out
    entries = [json.loads(x) for x in ledger.read_text().splitlines()]
    assert len(entries) == 12 and {e["status"] for e in entries} == {"from-listing"}
    assert {e["sample_id"] for e in entries} == {s.id for s in server.samples} - {extra_id}
    before = len(server.requests_to(r"/files$"))
    assert _main(monkeypatch, env, "upload-data", *data) == 0
    assert "uploaded 0, skipped 12 already there (12 from the ledger" in capfd.readouterr()[0]
    assert len(server.requests_to(r"/files$")) == before


def test_status_matches_by_content_hash_without_metadata_or_ledger(server, key, dataset,
                                                                   monkeypatch, capfd,
                                                                   tmp_path):
    """Samples uploaded by other tools carry no x-metadata: matched by ``sha256Hash``."""
    env = server.env(key)
    assert _main(monkeypatch, env, "upload-data", "--data", str(dataset)) == 0
    for s in server.samples:
        s.metadata = None
    capfd.readouterr()
    rc = _main(monkeypatch, env, "status", "--data", str(dataset), "--ledger",
               str(tmp_path / "empty-ledger.jsonl"))
    out = capfd.readouterr()[0]
    # the synthetic set has WEBP/BMP files, sent as PNG: their hash is of the PNG we send
    assert rc == 0 and "ok 12, missing 0, extra 0" in out.splitlines()[0], out


def test_sdk_settings_hand_the_proxy_to_the_sdks_client(server, key, monkeypatch):
    """The generated client reads only ``Configuration.proxy``: under ``sdk_settings`` an SDK
    call goes through the proxy the environment names."""
    pytest.importorskip("edgeimpulse")
    from facemask_edge.edge_impulse.config import resolve_config, sdk_settings

    cfg = resolve_config(key, server.api_endpoint, server.ingestion_endpoint, timeout=10)
    with LoopbackProxy() as proxy:
        for k, v in proxy.env().items():
            monkeypatch.setenv(k, v)
        with sdk_settings(cfg) as ei:
            devices = ei.model.list_profile_devices()
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        n = len(proxy.log)
        with sdk_settings(cfg) as ei:
            ei.model.list_profile_devices()
    assert devices[0] == "cortex-m4f-80mhz"
    assert proxy.seen(f"{server.url}/v1/api/projects") and proxy.seen(f"{server.url}/v1/api/4242")
    assert len(proxy.log) == n  # NO_PROXY honoured too


def test_a_421_for_a_missing_key_header_stops_the_upload_at_once(server, dataset, tmp_path):
    """421 is the ingestion service's answer to a request without the key header (a proxy
    that strips it, say): a key problem for the whole run, not three per-image refusals."""
    from facemask_edge.edge_impulse.config import EIConfig
    from facemask_edge.edge_impulse.ledger import Ledger
    from facemask_edge.edge_impulse.upload import plan_upload, upload_dataset
    from facemask_edge.errors import EdgeImpulseError

    cfg = EIConfig("", server.api_endpoint, server.ingestion_endpoint, 5.0)
    with Ledger(tmp_path / "l.jsonl") as led, \
            pytest.raises(EdgeImpulseError, match=r"rejected the API key \(421: Missing"):
        upload_dataset(cfg, plan_upload(dataset), led, 4242, concurrency=1,
                       show_progress=False)
    # the first answer stops the run (the one worker may have started the next image)
    assert len(server.requests_to(r"/files$")) <= 2


def test_our_impulse_beside_a_users_is_not_taken_unasked(server, key, run, monkeypatch, capfd):
    assert _main(monkeypatch, server.env(key), "deploy", str(run), "--target", "zip") == 0
    (ours,) = server.state.impulses
    user = server.add_impulse("Trained in Studio")
    rc = _main(monkeypatch, server.env(key), "deploy", str(run), "--target", "zip")
    (line,) = _errors(capfd.readouterr()[1])
    assert rc == 1 and f"impulse {user} 'Trained in Studio'" in line
    assert f"--impulse {ours}" in line
