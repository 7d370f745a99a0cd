"""The loopback Edge Impulse server is faithful: the SDK's own client code and response models
accept it, and its faults look like the real failures on the wire."""

from __future__ import annotations

import io
import json
import socket
import sys
from pathlib import Path

import pytest
import requests
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from ei_server import EIServer, FaultConfig, parse_tflite  # noqa: E402

KEY = "ei_" + "5e" * 32


def _png(color=(1, 2, 3)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, "PNG")
    return buf.getvalue()


def _jpeg(color=(4, 5, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture()
def server():
    with EIServer(KEY) as srv:
        yield srv


def _post(srv, category, files, key=KEY, **headers):
    h = {"x-api-key": key, **headers}
    return requests.post(f"{srv.ingestion_endpoint}/api/{category}/files", headers=h,
                         files=[("data", f) for f in files], timeout=10)


def test_ingestion_stores_with_label_and_refuses_duplicates(server):
    r = _post(server, "training", [("a.png", _png(), "image/png")], **{"x-label": "with%20mask",
                                                                      "x-disallow-duplicates": "1"})
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True
    entry = body["files"][0]
    assert entry["success"] is True and entry["projectId"] == 4242
    assert entry["fileName"].startswith("a.png.")
    (s,) = server.samples
    assert (s.id, s.label, s.category, s.filename) == (entry["sampleId"], "with mask", "training",
                                                       "a")
    again = _post(server, "testing", [("b.png", _png(), "image/png")],
                  **{"x-label": "x", "x-disallow-duplicates": "1"}).json()["files"][0]
    assert again == {"success": False,
                     "error": f"An item with this hash already exists (ids: {s.id})"}
    # Without the header, the same bytes are stored again (the real default).
    assert _post(server, "testing", [("b.png", _png(), "image/png")]).json()["files"][0]["success"]
    assert len(server.samples) == 2


def test_ingestion_positional_results_and_label_from_filename(server):
    r = _post(server, "split", [("idle.01.png", _png((9, 9, 9)), "image/png"),
                                ("bad.webp", b"RIFF....WEBP", "image/webp"),
                                ("fake.jpg", _png((7, 7, 7)), "image/jpeg")])
    files = r.json()["files"]
    assert [f["success"] for f in files] == [True, False, False]
    assert "unsupported file type" in files[1]["error"]
    assert "not a valid JPEG" in files[2]["error"]
    (s,) = server.samples
    assert s.label == "idle" and s.category in ("training", "testing")


def test_ingestion_auth_and_request_errors(server):
    # as the ingestion API documents it: 421 without the header, 401 text/plain for a bad key
    for key, status in ((None, 421), ("ei_wrong", 401)):
        headers = {} if key is None else {"x-api-key": key}
        r = requests.post(f"{server.url}/api/training/files", headers=headers,
                          files=[("data", ("a.png", _png(), "image/png"))], timeout=10)
        assert r.status_code == status
        assert r.headers["Content-Type"] == "text/plain"
    assert r.text == "Invalid API key"
    r = requests.post(f"{server.url}/api/training/files", headers={"x-api-key": KEY},
                      data=b"{}", timeout=10)
    assert r.status_code == 400
    r = requests.post(f"{server.url}/api/training/files", headers={"x-api-key": KEY},
                      files=[("file", ("a.png", _png(), "image/png"))], timeout=10)
    assert r.status_code == 400 and "'data'" in r.json()["error"]
    assert not server.samples


def test_sdk_upload_and_listing_work_against_the_server(server, monkeypatch):
    ei = pytest.importorskip("edgeimpulse")
    from edgeimpulse.data import Sample

    for attr, value in (("API_KEY", KEY), ("API_ENDPOINT", server.api_endpoint),
                        ("INGESTION_ENDPOINT", server.ingestion_endpoint)):
        monkeypatch.setattr(ei, attr, value)
    resp = ei.data.upload_samples([
        Sample(filename="m.jpg", data=_jpeg(), label="with_mask", category="training"),
        Sample(filename="n.png", data=_png(), label="without_mask", category="testing")])
    assert len(resp.successes) == 2 and not resp.fails
    # The SDK labels file parts "multipart/form-data"; the bytes must still arrive intact.
    assert {s.sha256 for s in server.samples} == {
        __import__("hashlib").sha256(b).hexdigest() for b in (_jpeg(), _png())}
    infos = ei.data.get_sample_ids(category="training") + ei.data.get_sample_ids(category="testing")
    assert sorted((i.filename, i.label, i.category) for i in infos) == [
        ("m", "with_mask", "training"), ("n", "without_mask", "testing")]
    # Same bytes again: the SDK reports the service's duplicate refusal.
    again = ei.data.upload_samples([Sample(filename="m2.jpg", data=_jpeg(), label="with_mask",
                                           category="training")])
    assert again.fails[0].error.startswith("An item with this hash already exists")
    assert ei.model.list_profile_devices()[:2] == ["cortex-m4f-80mhz", "cortex-m7-216mhz"]
    assert "arduino" in ei.model.list_deployment_targets()
    monkeypatch.setattr(ei, "API_KEY", "ei_wrong")
    from edgeimpulse_api.exceptions import UnauthorizedException

    with pytest.raises(UnauthorizedException):
        ei.model.list_profile_devices()


def test_studio_answers_validate_against_the_sdk_models(server):
    import edgeimpulse_api.models as m

    h = {"x-api-key": KEY}
    api = server.api_endpoint
    pid = 4242
    _post(server, "training", [("a.png", _png(), "image/png")],
          **{"x-label": "with_mask", "x-metadata": '{"source": "with_mask/a.png"}'})
    checks = [
        (f"{api}/api/projects", m.ListProjectsResponse),
        (f"{api}/api/{pid}", m.ProjectInfoResponse),
        (f"{api}/api/{pid}/raw-data/count?category=training&labels=null", m.CountSamplesResponse),
        (f"{api}/api/{pid}/raw-data?category=training&offset=0&limit=10", m.ListSamplesResponse),
        (f"{api}/api/{pid}/deployment/targets/data-sources", m.DeploymentTargetsResponse),
        (f"{api}/api/{pid}/pretrained-model", m.GetPretrainedModelResponse),
    ]
    server.add_impulse("Studio impulse")
    r = requests.post(f"{api}/api/{pid}/impulse/new", headers=h, json={"type": "BYOM"},
                      timeout=10)
    m.CreateNewEmptyImpulseResponse.parse_obj(r.json())
    checks.append((f"{api}/api/{pid}/impulses", m.GetAllImpulsesResponse))
    for url, model in checks:
        r = requests.get(url, headers=h, timeout=10)
        assert r.status_code == 200, url
        # parse_obj validates (raises if a required field is missing or mistyped); the
        # generated from_dict uses construct() and validates nothing
        model.parse_obj(r.json())
    # a job that fails (the upload of a non-model) and its log
    r = requests.post(f"{api}/api/{pid}/pretrained-model/upload", headers=h,
                      files={"modelFile": ("m.tflite", b"junk", "application/octet-stream")},
                      data={"modelFileName": "m.tflite", "modelFileType": "tflite"}, timeout=10)
    job = m.StartJobResponse.parse_obj(r.json()).id
    st = m.GetJobResponse.parse_obj(requests.get(f"{api}/api/{pid}/jobs/{job}/status",
                                                 headers=h, timeout=10).json())
    assert st.job.finished and st.job.finished_successful is False
    logs = m.LogStdoutResponse.parse_obj(requests.get(f"{api}/api/{pid}/jobs/{job}/stdout",
                                                      headers=h, timeout=10).json())
    assert "Failed to load model" in logs.stdout[-1].data
    imps = m.GetAllImpulsesResponse.parse_obj(
        requests.get(f"{api}/api/{pid}/impulses", headers=h, timeout=10).json()).impulses
    assert [(i.name, i.type.value) for i in imps] == [("Studio impulse", "default"),
                                                      ("Impulse #2", "BYOM")]
    assert requests.get(f"{api}/api/{pid}/raw-data/count?category=training&labels=null",
                        headers=h, timeout=10).json()["count"] == 1
    assert requests.get(f"{api}/api/9999", headers=h, timeout=10).status_code == 404
    assert requests.get(f"{api}/api/projects", headers={"x-api-key": "nope"},
                        timeout=10).status_code == 401


def test_faults_are_seeded_and_look_real():
    counts = {}
    for _ in range(2):
        faults = FaultConfig(rate=0.5, seed=7, kinds={"429": 1, "500": 1, "drop_before": 1},
                             retry_after=3)
        with EIServer(KEY, faults=faults) as srv:
            seen = []
            for i in range(20):
                try:
                    r = _post(srv, "training", [(f"{i}.png", _png((i, 0, 0)), "image/png")])
                    seen.append(r.status_code)
                    if r.status_code == 429:
                        assert r.headers["Retry-After"] == "3"
                except requests.ConnectionError:
                    seen.append("dropped")
            counts[len(counts)] = (seen, dict(srv.fault_counts))
            stored = len(srv.samples)
            assert stored == seen.count(200)
    assert counts[0] == counts[1]  # same seed, same faults in the same order
    seen, faults = counts[0]
    assert set(faults) == {"429", "500", "drop_before"} and 5 <= sum(faults.values()) <= 15


def test_drop_after_stores_but_never_answers(server):
    server.script(r"/api/training/files", "drop_after")
    with pytest.raises(requests.ConnectionError):
        _post(server, "training", [("a.png", _png(), "image/png")])
    assert len(server.samples) == 1  # stored: the client cannot know


def test_multipart_of_the_sdk_model_upload_is_parsed(server, tmp_path):
    """The SDK's generated client posts pretrained models as multipart fields modelFile,
    modelFileName, modelFileType; the server reads them as the real API does."""
    import urllib3

    fields = {"modelFile": ("m.tflite", b"\x00\x00\x00\x00TFL3junk", "application/octet-stream"),
              "modelFileName": "m.tflite", "modelFileType": "tflite"}
    body, ctype = urllib3.encode_multipart_formdata(fields)
    r = requests.post(f"{server.api_endpoint}/api/4242/pretrained-model/upload",
                      headers={"x-api-key": KEY, "Content-Type": ctype}, data=body, timeout=10)
    assert r.status_code == 200 and r.json()["success"]
    rec = server.requests_to(r"pretrained-model/upload")[-1]
    assert rec.form["modelFileName"] == ["m.tflite"] and rec.form["modelFileType"] == ["tflite"]
    # junk is not a model: the upload job fails and the model info says so, like the real API
    info = requests.get(f"{server.api_endpoint}/api/4242/pretrained-model",
                        headers={"x-api-key": KEY}, timeout=10).json()
    assert info["success"] is False and info["error"] == "No uploaded model yet"


def test_parse_tflite_rejects_non_models():
    with pytest.raises(ValueError):
        parse_tflite(b"not a model at all")


def test_server_port_is_loopback(server):
    host = server.url.split("//")[1].split(":")[0]
    assert host == "127.0.0.1"
    with socket.create_connection((host, int(server.url.rsplit(":", 1)[1])), timeout=2):
        pass
    assert json.loads(json.dumps(server.env()))["EI_API_ENDPOINT"].endswith("/v1")
