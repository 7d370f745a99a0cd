"""A hostile or broken Edge Impulse endpoint: redirects to another origin never receive the API
key (requests and the SDK's urllib3 client alike), long server messages are masked before they
are cut, and a ``200 {"success": false, "error": ...}`` answer is a permanent failure that is shown
and stops the run when it repeats (issue 12, findings 1, 2 and 12)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).parent))
from _ei_helpers import ei_env, key, small_dataset, tiny_int8_run  # noqa: E402,F401
from ei_server import EIServer  # noqa: E402

from facemask_edge.edge_impulse import config as ei_config  # noqa: E402
from facemask_edge.edge_impulse import upload as ei_upload  # noqa: E402
from facemask_edge.edge_impulse.config import project_for_key, resolve_config  # noqa: E402
from facemask_edge.edge_impulse.ledger import Ledger  # noqa: E402
from facemask_edge.edge_impulse.redact import MASK  # noqa: E402
from facemask_edge.edge_impulse.upload import RetryPolicy, plan_upload, upload_dataset  # noqa
from facemask_edge.errors import EdgeImpulseError  # noqa: E402

FAST = RetryPolicy(attempts=8, base_delay=0.01, max_delay=0.02)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return small_dataset(tmp_path_factory.mktemp("hostile") / "data", per_class=4)


@pytest.fixture()
def pair(key):
    """The project's server and a third party on another port (which knows no key)."""
    with EIServer(key) as srv, EIServer("ei_" + "f" * 64) as other:
        srv.redirect_to = other.url
        yield srv, other


def _keys_seen(server: EIServer) -> list[str]:
    return [r.headers["x-api-key"] for r in server.requests if "x-api-key" in r.headers]


def _cfg(server, key, timeout=5.0):
    return resolve_config(key, server.api_endpoint, server.ingestion_endpoint, timeout=timeout)


# -- finding 1: no key to another origin ------------------------------------------------------

def test_project_lookup_refuses_a_redirect_to_another_port(pair, key):
    srv, other = pair
    srv.script(r"^/v1/api/projects$", "redirect")
    with pytest.raises(EdgeImpulseError, match="redirect") as exc:
        project_for_key(_cfg(srv, key))
    assert _keys_seen(other) == []
    assert key not in str(exc.value)


@pytest.mark.parametrize("status", [302, 307])
def test_upload_refuses_a_redirect_to_another_port(pair, key, dataset, tmp_path, status):
    srv, other = pair
    srv.redirect_status = status
    srv.script(r"^/api/[a-z]+/files$", "redirect", times=100)
    plan = plan_upload(dataset)
    start = time.monotonic()
    with Ledger(tmp_path / "ledger.jsonl") as led, \
            pytest.raises(EdgeImpulseError, match="redirect"):
        upload_dataset(_cfg(srv, key), plan, led, 4242, concurrency=2, policy=FAST,
                       show_progress=False)
    assert _keys_seen(other) == []
    assert time.monotonic() - start < 10


def test_same_origin_redirect_is_still_followed(key):
    with EIServer(key) as srv:
        srv.redirect_to = srv.url  # same scheme, host and port: the key may go there
        srv.script(r"^/v1/api/projects$", "redirect")
        assert project_for_key(_cfg(srv, key)).id == 4242
        assert len(srv.requests_to(r"^/v1/api/projects$")) == 2


def test_sdk_calls_refuse_a_redirect_to_another_port(pair, key, tmp_path):
    """Profile/deploy's studio calls (once the SDK's generated client, which follows redirects
    and strips only ``Authorization``-like headers; now :mod:`.studio` on ``ei_session``)
    refuse a redirect to another origin."""
    pytest.importorskip("edgeimpulse")
    from facemask_edge.edge_impulse.model import profile_model

    srv, other = pair
    srv.redirect_status = 307
    srv.script(r"/pretrained-model/upload$", "redirect", times=100)
    run = tiny_int8_run(tmp_path / "run")
    with pytest.raises(EdgeImpulseError, match="redirect") as exc:
        profile_model(_cfg(srv, key), run, device="cortex-m4f-80mhz", job_timeout=20)
    assert _keys_seen(other) == []
    assert key not in str(exc.value)
    # refused at once, not retried by either layer
    assert len(srv.requests_to(r"/pretrained-model/upload$")) == 1


# -- finding 2: mask, then cut ----------------------------------------------------------------

def _leaked(key: str, text: str, n: int = 8) -> bool:
    return any(key[i:i + n] in text for i in range(len(key) - n + 1))


def _response(status: int, text: str) -> requests.Response:
    r = requests.Response()
    r.status_code, r._content, r.encoding = status, text.encode(), "utf-8"
    r.headers["Content-Type"] = "text/plain"
    return r


def test_a_key_echoed_at_any_offset_of_a_long_message_is_masked(key):
    """The old code cut to 200 characters and then masked: a key across the cut leaked."""
    from facemask_edge.edge_impulse.model import _translate

    pytest.importorskip("edgeimpulse")
    from edgeimpulse_api.exceptions import ApiException

    cfg = ei_config.EIConfig(key, "http://127.0.0.1:9/v1", "http://127.0.0.1:9", 1.0)
    ei_config.register_secret(key)
    for offset in range(0, 330):
        msg = "x" * offset + key + " tail" * 60
        as_json = json.dumps({"success": False, "error": msg})
        outs = [ei_config._error_text(_response(500, msg)),
                ei_config._error_text(_response(500, as_json)),
                ei_upload._body_error(_response(500, msg)),
                ei_upload._body_error(_response(500, as_json))]
        for body in (msg.encode(), "not json " + msg):
            exc = ApiException(status=500, reason="Internal Server Error")
            exc.body = body
            outs.append(str(_translate(exc, cfg, "profiling")))
        for out in outs:
            assert not _leaked(key, out), (offset, out)
            assert len(out) < 400
        if offset < 150:  # the key is inside the part that is kept: shown as the mask
            assert all(MASK in out for out in outs), (offset, outs)


# -- finding 12: {"success": false} in a 200 --------------------------------------------------

def test_a_refusal_in_a_200_is_shown_once_and_not_retried(key, dataset, tmp_path):
    with EIServer(key) as srv:
        srv.refusal_error = f"Project is read-only for key {key}"
        srv.script(r"^/api/[a-z]+/files$", "refuse", times=1)
        plan = plan_upload(dataset)
        with Ledger(tmp_path / "ledger.jsonl") as led:
            summary = upload_dataset(_cfg(srv, key), plan, led, 4242, concurrency=1,
                                     policy=FAST, show_progress=False)
    assert len(summary.failed) == 1
    path, error = summary.failed[0]
    assert "Project is read-only" in error and MASK in error and key not in error
    assert summary.uploaded == len(plan.items) - 1
    assert summary.requests == len(plan.items)  # the refused image was sent once


def test_the_same_refusal_again_and_again_stops_the_run(key, dataset, tmp_path, capfd):
    with EIServer(key) as srv:
        srv.script(r"^/api/[a-z]+/files$", "refuse", times=10_000)
        plan = plan_upload(dataset)
        start = time.monotonic()
        with Ledger(tmp_path / "ledger.jsonl") as led, \
                pytest.raises(EdgeImpulseError, match="quota exceeded") as exc:
            upload_dataset(_cfg(srv, key), plan, led, 4242, concurrency=2, policy=FAST,
                           show_progress=False)
        sent = len(srv.requests_to(r"/files$"))
    assert "in a row" in str(exc.value)
    assert sent <= 3 + 1  # three in a row, plus the one the other worker had in flight
    assert time.monotonic() - start < 5
