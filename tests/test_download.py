"""Default data download against a real HTTP server on loopback: resume, checksums, errors."""

from __future__ import annotations

import hashlib
import io
import socket
import sys
import time
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _http_server import Server, make_repo_zip  # noqa: E402

from facemask_edge.data import download as dl  # noqa: E402
from facemask_edge.errors import DataError  # noqa: E402


@pytest.fixture()
def payload() -> bytes:
    return make_repo_zip()


@pytest.fixture()
def server(payload):
    s = Server(payload)
    yield s
    s.close()


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FACEMASK_EDGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_download_records_checksum_then_serves_from_cache(server, payload, cache):
    got = dl.download(server.url + "/data.zip")
    assert got.path.read_bytes() == payload
    assert got.sha256 == hashlib.sha256(payload).hexdigest()
    assert got.path.parent == cache / "downloads"
    record = got.path.with_name(got.path.name + ".sha256")
    assert record.read_text().split()[0] == got.sha256
    again = dl.download(server.url + "/data.zip")
    assert again.cached and again.sha256 == got.sha256
    assert len(server.requests) == 1  # the second call fetched nothing


def test_truncated_download_resumes_with_range(server, payload, cache):
    cut = len(payload) // 3
    server.truncate_next = cut
    with pytest.raises(DataError, match="interrupted.*run the same command again to resume"):
        dl.download(server.url + "/data.zip", retries=0)
    part = next((cache / "downloads").glob("*.part"))
    assert part.stat().st_size == cut
    got = dl.download(server.url + "/data.zip", retries=0)
    assert got.resumed_from == cut
    assert server.requests[-1]["range"] == f"bytes={cut}-"
    assert got.path.read_bytes() == payload and not part.exists()


def test_truncation_is_retried_within_one_call(server, payload, cache):
    server.truncate_next = 1000
    got = dl.download(server.url + "/data.zip", retries=2, retry_wait=0.01)
    assert got.path.read_bytes() == payload
    assert [r["range"] for r in server.requests] == [None, "bytes=1000-"]


def test_server_without_range_support_restarts(server, payload, cache):
    server.truncate_next = 500
    with pytest.raises(DataError):
        dl.download(server.url + "/data.zip", retries=0)
    server.ignore_range = True
    got = dl.download(server.url + "/data.zip", retries=0)
    assert got.path.read_bytes() == payload  # not 500 stale bytes + the whole file


def test_wrong_pinned_checksum_fails_and_deletes(server, cache):
    with pytest.raises(DataError, match="checksum mismatch.*pinned"):
        dl.download(server.url + "/data.zip", sha256="0" * 64)
    assert not list((cache / "downloads").glob("*.zip*"))  # nothing half-trusted is left


def test_right_pinned_checksum(server, payload, cache):
    got = dl.download(server.url + "/data.zip", sha256=hashlib.sha256(payload).hexdigest().upper())
    assert got.pinned and got.path.read_bytes() == payload


def test_cached_file_changed_is_fetched_again(server, payload, cache):
    got = dl.download(server.url + "/data.zip")
    got.path.write_bytes(b"tampered")
    again = dl.download(server.url + "/data.zip")
    assert again.path.read_bytes() == payload and not again.cached
    assert len(server.requests) == 2


def test_server_file_changed_after_first_download(server, payload, cache):
    got = dl.download(server.url + "/data.zip")
    got.path.unlink()
    server.payload = make_repo_zip(per_class=7)
    with pytest.raises(DataError, match="recorded at the first download"):
        dl.download(server.url + "/data.zip")


def test_http_404(server, cache):
    with pytest.raises(DataError, match="HTTP 404") as exc:
        dl.download(server.url + "/nothing.zip")
    assert "--data" in str(exc.value)


def test_unreachable_says_pass_data(cache):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(DataError) as exc:
        dl.download(f"http://127.0.0.1:{port}/data.zip", timeout=3)
    msg = str(exc.value)
    assert "cannot download" in msg and "offline? pass --data" in msg and "\n" not in msg


def test_server_that_never_answers_times_out(cache):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)  # accepts the connection, never answers
    try:
        with pytest.raises(DataError, match="offline\\? pass --data"):
            dl.download(f"http://127.0.0.1:{sock.getsockname()[1]}/data.zip", timeout=0.5)
    finally:
        sock.close()


def test_fetch_default_dataset_extracts_dataset_folder(server, cache, monkeypatch):
    from facemask_edge.data.ingest import scan_dataset

    monkeypatch.setenv("FACEMASK_EDGE_DATA_URL", server.url + "/data.zip")
    path, info = dl.resolve_data(None)
    root = Path(path)
    assert root.name == "dataset" and sorted(p.name for p in root.iterdir()) == ["with_mask", "without_mask"]
    assert not (root.parent / "Readme_images").exists()  # only dataset/ is extracted
    assert info["source"] == "download" and info["checksum"] == "recorded at first download"
    ds = scan_dataset(path, size=16)
    assert ds.classes == ["with_mask", "without_mask"] and len(ds.items) == 12
    # Second time: from the cache, same folder, no request.
    n = len(server.requests)
    assert dl.resolve_data(None)[0] == path and len(server.requests) == n


def test_data_url_and_plain_paths(server, cache, tmp_path):
    path, info = dl.resolve_data(server.url + "/data.zip")
    assert Path(path).is_dir() and info["url"].endswith("/data.zip")
    assert dl.resolve_data(str(tmp_path)) == (str(tmp_path), {"source": "path", "path": str(tmp_path)})


def test_not_a_zip(cache):
    srv = Server(b"<html>not a zip</html>")
    try:
        with pytest.raises(DataError, match="not a valid zip"):
            dl.fetch_dataset(srv.url + "/data.zip")
    finally:
        srv.close()


def test_zip_slip_members_are_skipped(cache):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../evil.txt", "x")
        zf.writestr("r/dataset/a/1.txt", "1")
        zf.writestr("r/dataset/b/2.txt", "2")
    srv = Server(buf.getvalue())
    try:
        path, _ = dl.fetch_dataset(srv.url + "/data.zip", subdir="dataset")
    finally:
        srv.close()
    assert sorted(p.name for p in Path(path).iterdir()) == ["a", "b"]
    assert not (cache / "datasets" / "evil.txt").exists() and not (cache / "evil.txt").exists()


# -- issue 12, finding 5: a bad first download must not lock out later ones ---------------------

def test_truncated_body_without_length_is_not_trusted_and_does_not_lock_out(server, payload,
                                                                             cache):
    server.no_length = True
    server.truncate_next = len(payload) // 2  # ends cleanly as far as HTTP can tell
    with pytest.raises(DataError, match="not a valid zip"):
        dl.fetch_dataset(server.url + "/data.zip")
    downloads = cache / "downloads"
    assert list(downloads.glob("*.sha256")) == [] and list(downloads.glob("*.zip")) == []
    path, got = dl.fetch_dataset(server.url + "/data.zip")  # the server is fine now
    assert got.path.read_bytes() == payload
    assert next(downloads.glob("*.sha256")).read_text().split()[0] == got.sha256


def test_checksum_recorded_only_after_the_archive_extracted(payload, cache):
    srv = Server(b"<html>captive portal</html>")
    try:
        with pytest.raises(DataError, match="not a valid zip"):
            dl.fetch_dataset(srv.url + "/data.zip")
        assert list((cache / "downloads").glob("*.sha256")) == []
        srv.payload = payload
        path, got = dl.fetch_dataset(srv.url + "/data.zip")
        assert Path(path).is_dir() and got.sha256 == hashlib.sha256(payload).hexdigest()
    finally:
        srv.close()


def test_a_trickling_server_hits_the_overall_deadline(server, cache):
    server.trickle = 1.0  # one byte a second: no single read ever times out
    start = time.monotonic()
    with pytest.raises(DataError, match="longer than its 1.5 s deadline") as exc:
        dl.download(server.url + "/data.zip", timeout=5, deadline=1.5)
    assert time.monotonic() - start < 5
    assert "FACEMASK_EDGE_DOWNLOAD_DEADLINE" in str(exc.value)


def test_default_url_is_checked_against_the_pinned_tree(server, payload, cache, monkeypatch):
    monkeypatch.delenv("FACEMASK_EDGE_DATA_URL", raising=False)
    monkeypatch.setattr(dl, "DEFAULT_URL", server.url + "/data.zip")
    with pytest.raises(DataError, match="does not hold the pinned data set"):
        dl.fetch_dataset()
    assert list((cache / "downloads").glob("*")) == []
    assert [p for p in (cache / "datasets").glob("*")] == []
    # The digest of this archive's dataset/ pinned instead: accepted, and said to be pinned.
    with zipfile.ZipFile(io.BytesIO(payload)) as zf:
        lines = sorted((n.split("dataset/", 1)[1].encode(), hashlib.sha256(zf.read(n)).hexdigest())
                       for n in zf.namelist() if "/dataset/" in n and not n.endswith("/"))
    digest = hashlib.sha256(b"".join(h.encode() + b"  " + r + b"\n" for r, h in lines)).hexdigest()
    monkeypatch.setattr(dl, "DEFAULT_TREE_SHA256", digest)
    path, got = dl.fetch_dataset()
    assert got.pinned and dl.tree_digest(Path(path)) == (digest, len(lines))


def test_pinned_default_is_the_commit_archive():
    assert dl.DEFAULT_COMMIT in dl.DEFAULT_URL
    assert len(dl.DEFAULT_TREE_SHA256) == 64 and dl.DEFAULT_TREE_FILES == 4095
