"""A real HTTP server on loopback that plays Edge Impulse for tests: ingestion + studio API.

It implements the subset of the two services that the ``edgeimpulse`` SDK (1.0.x, with
``edgeimpulse_api`` 1.9x) and ``facemask-edge ei`` call, with the real paths, headers, multipart
field names, JSON shapes and status codes (every JSON answer validates against the SDK's own
pydantic models; ``test_edge_impulse_server.py`` checks that):

Ingestion service (base URL = ``ingestion_endpoint``):
    ``POST /api/{training,testing,split,anomaly}/files`` - ``multipart/form-data``, one or more
    parts named ``data`` (max 1000); headers ``x-api-key`` (``421`` if missing, ``401``
    ``text/plain`` "Invalid API key" if wrong: the ingestion API documentation, as issue 15
    found; the 421 body text is a guess), ``x-metadata`` (a JSON object of strings, kept with
    the sample and returned by the listing), ``x-label`` (URI-encoded; else inferred from the
    file name with ``^[a-zA-Z0-9\\s-_]+``, unless ``x-no-label: 1``), ``x-disallow-duplicates``
    (refuse content whose sha256 is already in the project, any category). Answer 200
    ``{"success": true, "files": [...]}``, one entry per part in order: ``{"success": true,
    "sampleId", "projectId", "fileName"}`` or ``{"success": false, "error": "An item with this
    hash already exists (ids: N)"}`` / an unsupported-file error. Images must be .jpg/.jpeg/.png
    whose bytes really are JPEG/PNG. ``split`` puts a file in training or testing by its md5 (first
    non-``f`` hex digit 0-b: training), as the Edge Impulse uploader does.

Studio API (base URL = ``api_endpoint`` = ``<server>/v1``), auth by ``x-api-key``:
    ``GET /api/projects``, ``GET /api/{id}`` (project info with ``latencyDevices``),
    ``GET /api/{id}/raw-data/count``, ``GET /api/{id}/raw-data`` (``category`` required; each
    sample with ``sha256Hash`` = sha256 of the stored bytes (a guess for images) and
    ``metadata``), ``POST /api/{id}/raw-data/{sample}/edit-label`` (``{"label"}``),
    ``POST /api/{id}/raw-data/{sample}/move`` (``{"newCategory"}``),
    ``DELETE /api/{id}/raw-data/{sample}``,
    ``GET /api/{id}/impulses``, ``POST /api/{id}/impulse/new`` (``{"type"}``),
    ``POST /api/{id}/impulse/update?impulseId=`` (``{"name"}``). Every pretrained-model, build
    and download call takes ``impulseId``; without it the default impulse is used (guesses:
    the lowest id is the default; a model upload to a project without impulses creates one;
    see ``_Handler._impulse_for``). ``EIServer.add_impulse`` plays a user's Studio impulse,
    ``fail_job`` a job that finishes with ``finishedSuccessful: false`` and a log.
    ``POST /api/{id}/pretrained-model/upload`` (multipart ``modelFile``, ``modelFileName``,
    ``modelFileType``, optional ``device``, ``representativeFeatures``),
    ``POST /api/{id}/pretrained-model/profile``, ``GET /api/{id}/pretrained-model``,
    ``POST /api/{id}/pretrained-model/save`` (JSON ``{"input": ..., "model": ...}``; an image
    input's ``resizeMode`` must be one of ``ImageInputResizeMode``),
    ``GET /api/{id}/deployment/targets/data-sources``,
    ``POST /api/{id}/jobs/build-ondevice-model?type=T`` (JSON ``{"engine", "modelType"}``),
    ``GET /api/{id}/jobs/{job}/status``, ``GET /api/{id}/jobs/{job}/stdout``,
    ``POST /api/{id}/jobs/{job}/cancel``,
    ``GET /api/{id}/deployment/download?type=&engine=&modelType=`` (a zip, ``Content-Disposition``).

The profiling figures it returns are made up (deterministic functions of the model's size), not
estimates; the deployment zip holds the uploaded model, the saved labels and input scaling.

Faults: ``FaultConfig(rate, seed, kinds)`` injects, on a seeded fraction of ingestion requests
(or all requests with ``paths="all"``), a 429 with ``Retry-After``, a 500 or 503, a slow answer,
or a dropped connection before reading the request or after storing the sample (the client cannot
tell whether it was stored). ``script(pattern, action, times)`` queues one-shot faults for a path.

Hostile answers (scripted only, never drawn at random):
    ``redirect`` - ``302`` (``redirect_status``) to ``redirect_to`` + the same path and query: with
    ``redirect_to`` the URL of another server (another port), a client that follows it with
    ``x-api-key`` attached hands the key to a third party. Guess: the real services do not
    redirect API calls; a proxy, a captive portal or a compromised DNS entry could.
    ``refuse`` - ``200 {"success": false, "error": refusal_error}``: the shape Edge Impulse uses for
    an application-level failure. Guess: the ingestion service answers this (instead of a per-file
    ``files`` list) for project-wide refusals such as a full data quota; the message text here is
    made up, the shape is the one the SDK's ``check_response_errors`` handles.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import io
import json
import random
import re
import secrets
import threading
import time
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["EIServer", "FaultConfig", "Sample", "RecordedRequest", "LATENCY_DEVICES", "TARGETS"]

FAULT_KINDS = ("429", "500", "503", "slow", "drop_before", "drop_after")
SCRIPTED_ONLY = ("401", "redirect", "refuse")
INGESTION_CATEGORIES = ("training", "testing", "split", "anomaly")
LATENCY_DEVICES = [
    # mcu, name, clock MHz (drives the made-up latency)
    ("cortex-m4f-80mhz", "Cortex-M4F 80MHz", 80),
    ("cortex-m7-216mhz", "Cortex-M7 216MHz", 216),
    ("arduino-nano-33-ble", "Arduino Nano 33 BLE Sense (Cortex-M4F 64MHz)", 64),
    ("espressif-esp32", "Espressif ESP-EYE (ESP32 240MHz)", 240),
    ("raspberry-pi-4", "Raspberry Pi 4", 1500),
    ("jetson-nano", "Jetson Nano", 1430),
]
TARGETS = {  # format -> (name, engines)
    "zip": ("C++ library", ["tflite", "tflite-eon"]),
    "arduino": ("Arduino library", ["tflite", "tflite-eon"]),
    "wasm": ("WebAssembly", ["tflite"]),
    "brickml": ("BrickML", ["tflite"]),
}
_TFL_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 7: "int16",
              9: "int8"}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class FaultConfig:
    """Random faults.

    Attributes:
        rate: fraction of eligible requests that fail (0..1).
        seed: seed of the fault draw.
        kinds: fault name -> weight; names from ``FAULT_KINDS``.
        retry_after: value of the ``Retry-After`` header of a 429 (seconds).
        slow_seconds: delay of a slow answer.
        paths: ``"ingestion"`` (upload requests only) or ``"all"``.
    """

    rate: float = 0.0
    seed: int = 0
    kinds: dict[str, float] = field(default_factory=lambda: {k: 1.0 for k in FAULT_KINDS})
    retry_after: int = 1
    slow_seconds: float = 0.5
    paths: str = "ingestion"


@dataclass
class Sample:
    id: int
    filename: str
    label: str
    category: str
    sha256: str
    size: int
    content_type: str
    created: str
    data: bytes | None = None
    metadata: dict[str, str] | None = None


@dataclass
class RecordedRequest:
    """One request as the server saw it (``body`` is dropped for ingestion to save memory)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes | None
    json: object = None
    form: dict[str, list] = field(default_factory=dict)
    status: int | None = None
    fault: str | None = None
    time: float = 0.0  # time.monotonic() when the request arrived
    peer_port: int = 0  # the client's source port (tells a proxied request from a direct one)


@dataclass
class _Job:
    id: int
    category: str
    key: str
    created: str
    finish_at: float
    ok: bool = True
    logs: list[str] = field(default_factory=list)
    cancelled: bool = False


class _State:
    def __init__(self, api_key: str, project_id: int, project_name: str, store_data: bool):
        self.api_key = api_key
        self.project_id = project_id
        self.project_name = project_name
        self.store_data = store_data
        self.lock = threading.RLock()
        self.samples: list[Sample] = []
        self.by_hash: dict[str, list[int]] = {}
        self.next_sample = 1000
        self.jobs: dict[int, _Job] = {}
        self.next_job = 500
        self.impulses: dict[int, _Impulse] = {}
        self.next_impulse = 1
        self.current: _Impulse | None = None  # the impulse the last pretrained-model call used
        self.deployment_version = 0
        self.requests: list[RecordedRequest] = []
        self.created = _now()
        self.failing_jobs: list[list] = []  # [regex, logs, times]

    # The last used impulse's pretrained-model state, for tests.
    @property
    def model(self) -> dict | None:
        return self.current.model if self.current else None

    @property
    def device(self) -> str | None:
        return self.current.device if self.current else None

    @property
    def profile(self) -> dict | None:
        return self.current.profile if self.current else None

    @property
    def saved(self) -> dict | None:
        return self.current.saved if self.current else None

    @property
    def builds(self) -> dict:
        return self.current.builds if self.current else {}


@dataclass
class _Impulse:
    id: int
    name: str
    type: str = "default"
    blocks: bool = False  # has blocks (an impulse designed in Studio) - shown in the listing
    model: dict | None = None  # the uploaded pretrained model
    device: str | None = None
    profile: dict | None = None
    saved: dict | None = None
    builds: dict = field(default_factory=dict)


def _self_signed_cert() -> tuple[str, str]:
    """A throw-away certificate and key for 127.0.0.1 (PEM files in a temporary folder)."""
    import datetime
    import ipaddress
    import os
    import tempfile

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ei-loopback")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tempfile.mkdtemp(prefix="ei-tls-")
    cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    return cert_path, key_path


def _parse_multipart(content_type: str, body: bytes) -> dict[str, list]:
    """name -> list of (filename, bytes, content type) for files, or str for plain fields.

    Split on the boundary bytes ourselves: ``email`` re-interprets parts whose own content type
    is ``multipart/form-data`` (the SDK labels its file parts that way) and alters their bytes.
    """
    header = email.parser.HeaderParser(policy=email.policy.HTTP).parsestr(
        "Content-Type: " + content_type + "\r\n\r\n")
    boundary = header.get_param("boundary")
    if not boundary:
        raise ValueError("no boundary in Content-Type")
    delim = b"--" + boundary.encode("latin-1")
    chunks = body.split(delim)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise ValueError("body does not end with the closing boundary")
    out: dict[str, list] = {}
    for chunk in chunks[1:-1]:
        if not chunk.startswith(b"\r\n") or not chunk.endswith(b"\r\n"):
            raise ValueError("malformed part")
        head, sep, content = chunk[2:-2].partition(b"\r\n\r\n")
        if not sep:
            head, content = chunk[2:-2].rstrip(b"\r\n"), b""
        headers = email.parser.HeaderParser(policy=email.policy.HTTP).parsestr(
            head.decode("utf-8", "replace") + "\r\n\r\n")
        name = headers.get_param("name", header="content-disposition")
        if name is None:
            continue
        filename = headers.get_filename()
        if filename is not None:
            ctype = headers.get("Content-Type", "application/octet-stream").split(";")[0].strip()
            out.setdefault(name, []).append((filename, content, ctype))
        else:
            out.setdefault(name, []).append(content.decode("utf-8", "replace"))
    return out


def _file_summary(content_type: str, body: bytes) -> dict[str, list]:
    """The multipart fields of an ingestion request, files as (name, size, type, sha256): the
    bytes themselves are not kept."""
    try:
        form = _parse_multipart(content_type, body)
    except Exception:
        return {}
    return {k: [(f[0], len(f[1]), f[2], hashlib.sha256(f[1]).hexdigest())
                if isinstance(f, tuple) else f for f in v] for k, v in form.items()}


def parse_tflite(buf: bytes) -> dict:
    """Inputs and outputs of a TFLite flatbuffer: name, dataType, shape, scale, zeroPoint."""
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ValueError("not a TFLite flatbuffer (no TFL3 identifier)")
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    model = schema.Model.GetRootAs(buf, 0)
    if model.SubgraphsLength() < 1:
        raise ValueError("model has no subgraph")
    g = model.Subgraphs(0)

    def tensor(i):
        t = g.Tensors(i)
        q = t.Quantization()
        scale = q.ScaleAsNumpy() if q is not None and q.ScaleLength() else None
        zp = q.ZeroPointAsNumpy() if q is not None and q.ZeroPointLength() else None
        return {"name": (t.Name() or b"").decode(), "dataType": _TFL_TYPES.get(t.Type(), "other"),
                "shape": [int(v) for v in t.ShapeAsNumpy()],
                "scale": float(scale[0]) if scale is not None else None,
                "zeroPoint": int(zp[0]) if zp is not None else None}

    ops = sum(g.OperatorsLength() for g in (model.Subgraphs(i)
                                            for i in range(model.SubgraphsLength())))
    return {"inputs": [tensor(g.Inputs(i)) for i in range(g.InputsLength())],
            "outputs": [tensor(g.Outputs(i)) for i in range(g.OutputsLength())],
            "operators": ops, "bytes": len(buf)}


class EIServer:
    """The loopback Edge Impulse. Use as a context manager.

    Args:
        api_key: the one valid project key.
        leaky: put the key the client sent into error messages, to test client-side redaction.
        faults: random fault injection (default: none).
        job_seconds: how long each job runs before ``finished`` is set; or a dict by job key
            (``pretrained-model-upload``, ``pretrained-model-profile``,
            ``build-ondevice-model``), 0 for the others.
        store_data: keep uploaded bytes (off for the big acceptance run).
    """

    def __init__(self, api_key: str = "ei_" + "0123456789abcdef" * 4, *,
                 faults: FaultConfig | None = None, project_id: int = 4242,
                 project_name: str = "facemask-edge loopback", job_seconds: float | dict = 0.0,
                 store_data: bool = True, leaky: bool = False, tls: bool = False):
        self.state = _State(api_key, project_id, project_name, store_data)
        self.leaky = leaky  # echo the received key in error bodies (a careless server)
        self.tls = tls  # serve https with a self-signed certificate for 127.0.0.1 (ca_file)
        self.ca_file: str | None = None
        self.faults = faults or FaultConfig()
        self.job_seconds = job_seconds
        self._rng = random.Random(self.faults.seed)
        self._scripted: list[list] = []  # [regex, action, times]
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.fault_counts: dict[str, int] = {}
        self.redirect_to: str | None = None  # base URL the ``redirect`` action points at
        self.redirect_status = 302
        self.refusal_error = "Project storage quota exceeded (guessed wording)"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "EIServer":
        server = self

        class Handler(_Handler):
            ei = server

        self._httpd = _HTTPServer(("127.0.0.1", 0), Handler)
        if self.tls:
            import ssl

            cert, key = _self_signed_cert()
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            self.ca_file = cert
            self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="ei-server",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "EIServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    @property
    def api_endpoint(self) -> str:
        return self.url + "/v1"

    @property
    def ingestion_endpoint(self) -> str:
        return self.url

    def env(self, api_key: str | None = None) -> dict[str, str]:
        """``EI_*`` environment variables pointing at this server."""
        return {"EI_API_KEY": api_key if api_key is not None else self.state.api_key,
                "EI_API_ENDPOINT": self.api_endpoint,
                "EI_INGESTION_ENDPOINT": self.ingestion_endpoint}

    # -- faults ------------------------------------------------------------------------------
    def script(self, pattern: str, action: str, times: int = 1) -> None:
        """Make the next ``times`` requests whose path matches ``pattern`` fail with ``action``."""
        if action not in FAULT_KINDS + SCRIPTED_ONLY:
            raise ValueError(f"unknown fault {action!r}")
        with self.state.lock:
            self._scripted.append([re.compile(pattern), action, times])

    def _draw_fault(self, path: str, ingestion: bool) -> str | None:
        with self.state.lock:
            for entry in self._scripted:
                if entry[2] > 0 and entry[0].search(path):
                    entry[2] -= 1
                    return entry[1]
            f = self.faults
            if f.rate <= 0 or (f.paths == "ingestion" and not ingestion):
                return None
            if self._rng.random() >= f.rate:
                return None
            kinds = [k for k, w in f.kinds.items() if w > 0]
            return self._rng.choices(kinds, weights=[f.kinds[k] for k in kinds])[0]

    # -- views for tests ---------------------------------------------------------------------
    @property
    def samples(self) -> list[Sample]:
        with self.state.lock:
            return list(self.state.samples)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self.state.lock:
            return list(self.state.requests)

    def requests_to(self, pattern: str, method: str | None = None) -> list[RecordedRequest]:
        rx = re.compile(pattern)
        return [r for r in self.requests if rx.search(r.path) and (method is None
                                                                    or r.method == method)]

    def add_impulse(self, name: str, type: str = "default", blocks: bool = True) -> int:
        """Create an impulse, as a user designing one in Studio would (``blocks``: it has an
        input, DSP and learn block, like an impulse trained on the data). Returns its id."""
        st = self.state
        with st.lock:
            iid = st.next_impulse
            st.next_impulse += 1
            st.impulses[iid] = _Impulse(iid, name, type, blocks)
        return iid

    def fail_job(self, pattern: str, logs: list[str], times: int = 1) -> None:
        """Make the next ``times`` jobs started by a request whose path matches ``pattern``
        finish with ``finishedSuccessful: false`` and ``logs`` as their log."""
        with self.state.lock:
            self.state.failing_jobs.append([re.compile(pattern), list(logs), times])

    def sample(self, sample_id: int) -> Sample:
        with self.state.lock:
            return next(s for s in self.state.samples if s.id == sample_id)

    def delete_sample(self, sample_id: int) -> None:
        """Delete a sample, as a user in Studio would."""
        st = self.state
        with st.lock:
            s = self.sample(sample_id)
            st.samples.remove(s)
            st.by_hash[s.sha256].remove(sample_id)

    def clear_samples(self) -> None:
        with self.state.lock:
            self.state.samples.clear()
            self.state.by_hash.clear()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):  # clients that hang up are normal here
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            return
        super().handle_error(request, client_address)


class _Drop(Exception):
    """Close the connection without an answer."""


class _Handler(BaseHTTPRequestHandler):
    ei: EIServer
    protocol_version = "HTTP/1.1"
    server_version = "ei-loopback/1"
    timeout = 30

    def log_message(self, format, *args):  # quiet
        pass

    # -- plumbing ----------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if self._record is not None:
            self._record.status = status

    def _json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj).encode())

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"success": False, "error": message})

    def _read_body(self) -> bytes:
        n = self.headers.get("Content-Length")
        if n is None:
            if self.command in ("POST", "PUT"):
                raise ValueError("length required")
            return b""
        return self.rfile.read(int(n))

    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    def _dispatch(self) -> None:
        self._record = None
        split = urlsplit(self.path)
        path, query = split.path, parse_qs(split.query)
        ingestion = bool(re.fullmatch(r"/api/[^/]+/(files|data)", path))
        record = RecordedRequest(self.command, path, query,
                                 {k.lower(): v for k, v in self.headers.items()}, None,
                                 time=time.monotonic(), peer_port=self.client_address[1])
        self._record = record
        st = self.ei.state
        with st.lock:
            st.requests.append(record)
        fault = self.ei._draw_fault(path, ingestion)
        record.fault = fault
        if fault:
            with st.lock:
                self.ei.fault_counts[fault] = self.ei.fault_counts.get(fault, 0) + 1
        try:
            if fault == "drop_before":
                raise _Drop()
            body = self._read_body()
            if not ingestion:
                record.body = body
            else:
                record.form = _file_summary(self.headers.get("Content-Type", ""), body)
            if fault == "401":
                return self._error(401, "Invalid API key")
            if fault == "redirect":
                if not self.ei.redirect_to:
                    raise RuntimeError("set EIServer.redirect_to before scripting a redirect")
                return self._send(self.ei.redirect_status, b"", "text/plain",
                                  {"Location": self.ei.redirect_to.rstrip("/") + self.path})
            if fault == "refuse":
                return self._error(200, self.ei.refusal_error)
            if fault == "429":
                return self._send(429, b"Too many requests, slow down", "text/plain",
                                  {"Retry-After": str(self.ei.faults.retry_after)})
            if fault in ("500", "503"):
                echo = f" for key {self.headers.get('x-api-key')}" if self.ei.leaky else ""
                return self._send(int(fault), f"Internal server error ({fault}){echo}".encode(),
                                  "text/plain")
            if fault == "slow":
                time.sleep(self.ei.faults.slow_seconds)
            if ingestion:
                self._ingest(path, body, record, drop_after=fault == "drop_after")
            elif path.startswith("/v1/"):
                self._studio(path[3:], query, body, record, drop_after=fault == "drop_after")
            else:
                self._error(404, f"Cannot {self.command} {path}")
        except _Drop:
            self.close_connection = True
            record.status = None
        except ValueError as exc:
            if str(exc) == "length required":
                self._error(411, "Content-Length required")
            else:
                raise

    def _ingestion_authorized(self) -> bool:
        """The ingestion service's answers (issue 15's findings from the ingestion API
        documentation): ``421`` when the key header is missing, ``401`` ``text/plain`` "Invalid
        API key" for a wrong key. Guess: the wording of the 421 body."""
        key = self.headers.get("x-api-key")
        if not key:
            self._send(421, b"Missing x-api-key header", "text/plain")
            return False
        if key != self.ei.state.api_key:
            echo = f" '{key}'" if self.ei.leaky else ""
            self._send(401, f"Invalid API key{echo}".encode(), "text/plain")
            return False
        return True

    def _authorized(self) -> bool:
        key = self.headers.get("x-api-key")
        if not key:
            self._error(401, "Missing x-api-key header")
            return False
        if key != self.ei.state.api_key:
            self._error(401, "Invalid API key" + (f" '{key}'" if self.ei.leaky else ""))
            return False
        return True

    # -- ingestion ---------------------------------------------------------------------------
    def _ingest(self, path: str, body: bytes, record: RecordedRequest, drop_after: bool) -> None:
        m = re.fullmatch(r"/api/([^/]+)/(files|data)", path)
        category, kind = m.group(1), m.group(2)
        if not self._ingestion_authorized():
            return
        if category not in INGESTION_CATEGORIES:
            return self._error(400, f"Invalid category '{category}', must be one of "
                                    f"{', '.join(INGESTION_CATEGORIES)}")
        if kind != "files":
            return self._error(400, "This test server implements only the /files endpoints")
        ctype = self.headers.get("Content-Type", "")
        if not ctype.startswith("multipart/form-data"):
            return self._error(400, "Content-Type should be multipart/form-data")
        try:
            form = _parse_multipart(ctype, body)
        except Exception as exc:
            return self._error(400, f"Failed to parse multipart body: {exc}")
        files = [f for f in form.get("data", []) if isinstance(f, tuple)]
        if not files:
            return self._error(400, "No files uploaded (expected one or more parts named 'data')")
        if len(files) > 1000:
            return self._error(400, "Too many files in one request (max. 1000)")
        raw_label = self.headers.get("x-label")
        label = unquote(raw_label) if raw_label is not None else None
        no_label = self.headers.get("x-no-label") == "1"
        disallow = self.headers.get("x-disallow-duplicates", "").lower() not in ("", "0", "false")
        metadata = None
        if self.headers.get("x-metadata") is not None:
            # A JSON object of strings (the SDK sends ``json.dumps(sample.metadata)``). Guess:
            # the status and wording of the refusal of anything else.
            try:
                metadata = json.loads(self.headers["x-metadata"])
                if not isinstance(metadata, dict):
                    raise ValueError("not an object")
                metadata = {str(k): str(v) for k, v in metadata.items()}
            except ValueError as exc:
                return self._error(400, f"Invalid x-metadata header: {exc}")
        results = []
        for filename, data, part_type in files:
            results.append(self._store(category, filename, data, part_type, label, no_label,
                                       disallow, metadata))
        if drop_after:
            raise _Drop()
        self._json(200, {"success": True, "files": results})

    def _store(self, category, filename, data, part_type, label, no_label, disallow,
               metadata=None) -> dict:
        st = self.ei.state
        base = filename.rsplit("/", 1)[-1]
        stem, dot, ext = base.rpartition(".")
        if not dot:
            stem, ext = base, ""
        ext = ext.lower()
        if ext not in ("jpg", "jpeg", "png"):
            return {"success": False, "error": f"Failed to process {base}: unsupported file "
                                               f"type '.{ext}' (images must be .jpg or .png)"}
        is_jpeg, is_png = data[:3] == b"\xff\xd8\xff", data[:8] == b"\x89PNG\r\n\x1a\n"
        if not ((ext in ("jpg", "jpeg") and is_jpeg) or (ext == "png" and is_png)):
            return {"success": False, "error": f"Failed to process {base}: not a valid "
                                               f"{'JPEG' if ext != 'png' else 'PNG'} image"}
        if label is None and not no_label:
            m = re.match(r"^[a-zA-Z0-9\s\-_]+", base)
            label = m.group(0) if m else ""
        sha = hashlib.sha256(data).hexdigest()
        if category == "split":
            h = hashlib.md5(data).hexdigest().lstrip("f") or "0"
            category = "training" if h[0] in "0123456789ab" else "testing"
        if category == "anomaly":
            category = "testing"
        with st.lock:
            if disallow and st.by_hash.get(sha):
                ids = ", ".join(str(i) for i in st.by_hash[sha])
                return {"success": False, "error": f"An item with this hash already exists "
                                                   f"(ids: {ids})"}
            sid = st.next_sample
            st.next_sample += 1
            st.samples.append(Sample(sid, stem, label or "", category, sha, len(data),
                                     part_type, _now(), data if st.store_data else None,
                                     metadata))
            st.by_hash.setdefault(sha, []).append(sid)
        token = base64.b32encode(secrets.token_bytes(5)).decode().lower()
        return {"success": True, "sampleId": sid, "projectId": st.project_id,
                "fileName": f"{base}.{token}.json"}

    # -- studio ------------------------------------------------------------------------------
    def _studio(self, path: str, query, body: bytes, record, drop_after: bool) -> None:
        if not self._authorized():
            return
        st = self.ei.state
        if path == "/api/projects" and self.command == "GET":
            return self._answer({"success": True, "projects": [self._project()]}, drop_after)
        m = re.fullmatch(r"/api/(\d+)(/.*)?", path)
        if not m:
            return self._error(404, f"Cannot {self.command} {path}")
        if int(m.group(1)) != st.project_id:
            return self._error(404, f"Project {m.group(1)} not found")
        rest = m.group(2) or ""
        routes = [
            ("GET", r"", self._project_info),
            ("GET", r"/raw-data/count", self._count),
            ("GET", r"/raw-data", self._list),
            ("POST", r"/raw-data/(\d+)/edit-label", self._edit_label),
            ("POST", r"/raw-data/(\d+)/move", self._move),
            ("DELETE", r"/raw-data/(\d+)", self._delete),
            ("GET", r"/impulses", self._impulses),
            ("POST", r"/impulse/new", self._new_impulse),
            ("POST", r"/impulse/update", self._update_impulse),
            ("POST", r"/pretrained-model/upload", self._upload_model),
            ("POST", r"/pretrained-model/profile", self._profile),
            ("GET", r"/pretrained-model", self._model_info),
            ("POST", r"/pretrained-model/save", self._save),
            ("GET", r"/deployment/targets/data-sources", self._targets),
            ("POST", r"/jobs/build-ondevice-model", self._build),
            ("GET", r"/jobs/(\d+)/status", self._job_status),
            ("GET", r"/jobs/(\d+)/stdout", self._job_stdout),
            ("POST", r"/jobs/(\d+)/cancel", self._job_cancel),
            ("GET", r"/deployment/download", self._download),
        ]
        for method, rx, fn in routes:
            mm = re.fullmatch(rx, rest)
            if mm and method == self.command:
                ctype = self.headers.get("Content-Type", "")
                if ctype.startswith("application/json") and body:
                    try:
                        record.json = json.loads(body)
                    except ValueError:
                        return self._error(400, "Invalid JSON body")
                elif ctype.startswith("multipart/form-data"):
                    try:
                        record.form = _parse_multipart(ctype, body)
                    except Exception as exc:
                        return self._error(400, f"Failed to parse multipart body: {exc}")
                status, obj = fn(query, record, *mm.groups())
                if isinstance(obj, tuple):  # (bytes, content type, headers)
                    if drop_after:
                        raise _Drop()
                    return self._send(status, *obj)
                return self._answer(obj, drop_after, status)
        return self._error(404, f"Cannot {self.command} /api/{st.project_id}{rest}")

    def _answer(self, obj, drop_after: bool, status: int = 200) -> None:
        if drop_after:
            raise _Drop()
        self._json(status, obj)

    def _project(self) -> dict:
        st = self.ei.state
        return {"id": st.project_id, "name": st.project_name, "description": "",
                "created": st.created, "owner": "Loopback Tester",
                "ownerIsDeveloperProfile": True, "collaborators": [],
                "labelingMethod": "single_label", "metadata": {}, "isEnterpriseProject": False,
                "whitelabelId": None, "tier": "free", "hasPublicVersion": False,
                "isPublic": False, "allowsLivePublicAccess": False,
                "indPauseProcessingSamples": False, "publicProjectListed": False}

    def _summary(self, category: str | None) -> dict:
        st = self.ei.state
        with st.lock:
            ss = [s for s in st.samples if category is None or s.category == category]
        return {"totalLengthMs": 0.0, "labels": sorted({s.label for s in ss}),
                "totalLabels": len({s.label for s in ss}), "dataCount": len(ss)}

    def _project_info(self, query, record):
        st = self.ei.state
        devices = [{"mcu": mcu, "name": name, "selected": mcu == "cortex-m4f-80mhz",
                    "int8Latency": 1.0, "int8ConvLatency": 1.0, "float32Latency": 4.0,
                    "float32ConvLatency": 4.0, "helpText": ""} for mcu, name, _ in LATENCY_DEVICES]
        return 200, {
            "success": True, "project": self._project(), "developmentKeys": {},
            "impulse": {"created": False, "configured": False, "complete": False},
            "devices": [], "dataSummary": self._summary(None),
            "dataSummaryPerCategory": {"training": self._summary("training"),
                                       "testing": self._summary("testing"),
                                       "validation": self._summary("validation"),
                                       "postProcessing": self._summary("post-processing")},
            "computeTime": {"periodStartDate": st.created, "periodEndDate": st.created,
                            "timeUsedMs": 0, "timeLeftMs": 3600000},
            "acquisitionSettings": {"intervalMs": 16.0, "lengthMs": 10000, "segmentShift": False,
                                    "defaultPageSize": 50, "viewType": "list",
                                    "gridColumnCount": 9, "gridColumnCountDetailed": 3,
                                    "showExactSampleLength": False,
                                    "inlineEditBoundingBoxes": False},
            "collaborators": [],
            "deploySettings": {"eonCompiler": True, "sensor": "camera",
                               "arduinoLibraryName": "facemask_inferencing",
                               "tinkergenLibraryName": "", "particleLibraryName": ""},
            "experiments": [], "latencyDevices": devices, "urls": {},
            "showCreateFirstImpulse": True,
            "showGettingStartedWizard": {"showWizard": False, "step": 0},
            "performance": {"gpu": False, "jobLimitM": 20, "dspFileSizeMb": 100,
                            "enterprisePerformance": False, "trainJobRamMb": 4096},
            "trainJobNotificationUids": [], "dspJobNotificationUids": [],
            "modelTestingJobNotificationUids": [], "exportJobNotificationUids": [],
            "hasNewTrainingData": False, "studioUrl": self.ei.url,
            "inPretrainedModelFlow": st.model is not None,
            "showSensorDataInAcquisitionGraph": False, "notifications": []}

    def _filtered(self, query) -> list[Sample]:
        st = self.ei.state
        category = query.get("category", [None])[0]
        labels = query.get("labels", ["null"])[0]
        labels = json.loads(labels) if labels not in (None, "", "null") else None
        filename = query.get("filename", [None])[0]
        with st.lock:
            ss = list(st.samples)
        return [s for s in ss if (category is None or s.category == category)
                and (labels is None or s.label in labels)
                and (filename is None or s.filename == filename)]

    def _count(self, query, record):
        return 200, {"success": True, "count": len(self._filtered(query))}

    def _list(self, query, record):
        if not query.get("category"):
            return 400, {"success": False, "error": "Missing parameter 'category'"}
        ss = self._filtered(query)
        offset = int(query.get("offset", ["0"])[0])
        limit = int(query.get("limit", ["50"])[0])
        page = ss[offset:offset + limit]
        st = self.ei.state
        return 200, {"success": True, "totalCount": len(ss), "samples": [{
            "id": s.id, "filename": s.filename, "signatureValidate": False,
            "created": s.created, "lastModified": s.created, "category": s.category,
            "coldstorageFilename": f"{s.filename}.{s.sha256[:8]}", "label": s.label,
            "intervalMs": 0.0, "frequency": 0.0, "originalIntervalMs": 0.0,
            "originalFrequency": 0.0, "deviceType": "", "sensors": [], "valuesCount": 1,
            "added": s.created, "boundingBoxes": [], "boundingBoxesType": "object_detection",
            "chartType": "image", "isDisabled": False, "isProcessing": False,
            "processingError": False, "isCropped": False, "projectId": st.project_id,
            "sha256Hash": s.sha256, "datastreams": [],
            **({"metadata": s.metadata} if s.metadata else {})} for s in page]}

    # jobs
    def _job(self, category: str, key: str, ok: bool = True, logs=()) -> _Job:
        st = self.ei.state
        path = self._record.path if self._record is not None else ""
        with st.lock:
            for entry in st.failing_jobs:
                if entry[2] > 0 and entry[0].search(path):
                    entry[2] -= 1
                    ok, logs = False, list(logs) + entry[1]
                    break
            jid = st.next_job
            st.next_job += 1
            secs = self.ei.job_seconds
            secs = secs.get(key, 0.0) if isinstance(secs, dict) else secs
            job = _Job(jid, category, key, _now(), time.monotonic() + secs, ok,
                       list(logs))
            st.jobs[jid] = job
        return job

    def _get_job(self, jid: str) -> _Job | None:
        return self.ei.state.jobs.get(int(jid))

    def _job_status(self, query, record, jid):
        job = self._get_job(jid)
        if job is None:
            return 404, {"success": False, "error": f"Unknown job ID {jid}"}
        finished = job.cancelled or time.monotonic() >= job.finish_at
        out = {"id": job.id, "category": job.category, "categoryKey": job.key, "key": job.key,
               "created": job.created, "started": job.created, "jobNotificationUids": []}
        if finished:
            out.update(finished=_now(), finishedSuccessful=job.ok and not job.cancelled)
        return 200, {"success": True, "job": out}

    def _job_stdout(self, query, record, jid):
        job = self._get_job(jid)
        if job is None:
            return 404, {"success": False, "error": f"Unknown job ID {jid}"}
        items = [{"created": job.created, "data": line + "\n"} for line in job.logs]
        return 200, {"success": True, "stdout": items, "totalCount": len(items)}

    def _job_cancel(self, query, record, jid):
        job = self._get_job(jid)
        if job is None:
            return 200, {"success": False, "error": f"Unknown job ID {jid}"}
        job.cancelled = True
        return 200, {"success": True}

    # impulses
    def _impulse_for(self, query, create: bool = False):
        """The impulse a call addresses: ``impulseId``, else the default impulse.

        Guesses (the API says only "if this is unset then the default impulse is used"): the
        default impulse is the one with the lowest id; a model upload to a project without
        any impulse creates one named "Impulse #1"; an unknown ``impulseId`` is a 404.
        """
        st = self.ei.state
        raw = (query.get("impulseId") or [None])[0]
        with st.lock:
            if raw is not None:
                imp = st.impulses.get(int(raw))
                if imp is None:
                    return None, (404, {"success": False, "error": f"Impulse {raw} not found"})
            elif st.impulses:
                imp = st.impulses[min(st.impulses)]
            elif create:
                imp = st.impulses[self.ei.add_impulse("Impulse #1", "BYOM", False)]
            else:
                return None, (200, {"success": False, "error": "No uploaded model yet"})
            st.current = imp
        return imp, None

    def _impulses(self, query, record):
        st = self.ei.state
        with st.lock:
            imps = [st.impulses[i] for i in sorted(st.impulses)]

        def blocks(imp):
            if not imp.blocks:
                return {"inputBlocks": [], "dspBlocks": [], "learnBlocks": [],
                        "postProcessingBlocks": []}
            # Made up, but in the shape of ``Impulse`` (validated by the tests).
            return {"inputBlocks": [{"id": 1, "type": "image", "name": "Image data",
                                     "title": "Image data", "imageWidth": 96,
                                     "imageHeight": 96, "resizeMode": "fit-short"}],
                    "dspBlocks": [{"id": 2, "type": "image", "name": "Image", "axes": ["image"],
                                   "title": "Image", "implementationVersion": 1}],
                    "learnBlocks": [{"id": 3, "type": "keras-transfer-image",
                                     "name": "Transfer learning", "dsp": [2],
                                     "title": "Transfer Learning (Images)"}],
                    "postProcessingBlocks": []}

        return 200, {"success": True, "maxImpulseCount": -1, "impulses": [
            {"id": i.id, "name": i.name, "type": i.type, **blocks(i)} for i in imps]}

    def _new_impulse(self, query, record):
        body = record.json if isinstance(record.json, dict) else {}
        kind = body.get("type", "default")
        if kind not in ("default", "BYOM", "VLM"):
            return 400, {"success": False, "error": f"Invalid impulse type {kind!r}"}
        st = self.ei.state
        iid = self.ei.add_impulse(f"Impulse #{st.next_impulse}", kind, False)
        return 200, {"success": True, "id": iid,
                     "redirectUrl": f"/studio/{st.project_id}/create-impulse?impulseId={iid}"}

    def _update_impulse(self, query, record):
        imp, err = self._impulse_for(query)
        if err:
            return err
        body = record.json if isinstance(record.json, dict) else {}
        if "name" in body:
            imp.name = str(body["name"])
        return 200, {"success": True}

    # raw data edits (what a user does in Studio, and what --repair does)
    def _sample_or_404(self, sid):
        try:
            return self.ei.sample(int(sid)), None
        except StopIteration:
            return None, (200, {"success": False, "error": f"Sample {sid} not found"})

    def _edit_label(self, query, record, sid):
        s, err = self._sample_or_404(sid)
        if err:
            return err
        body = record.json if isinstance(record.json, dict) else {}
        if not isinstance(body.get("label"), str):
            return 400, {"success": False, "error": "Missing 'label'"}
        s.label = body["label"]
        return 200, {"success": True}

    def _move(self, query, record, sid):
        s, err = self._sample_or_404(sid)
        if err:
            return err
        body = record.json if isinstance(record.json, dict) else {}
        if body.get("newCategory") not in ("training", "testing", "anomaly"):
            return 400, {"success": False, "error": "Invalid 'newCategory'"}
        s.category = body["newCategory"]
        return 200, {"success": True}

    def _delete(self, query, record, sid):
        s, err = self._sample_or_404(sid)
        if err:
            return err
        self.ei.delete_sample(s.id)
        return 200, {"success": True}

    # pretrained model (bring your own model)
    def _upload_model(self, query, record):
        st = self.ei.state
        imp, err = self._impulse_for(query, create=True)
        if err:
            return err
        form = record.form
        files = form.get("modelFile", [])
        ftype = (form.get("modelFileType") or [None])[0]
        fname = (form.get("modelFileName") or [None])[0]
        device = (form.get("device") or [None])[0]
        if not files or not isinstance(files[0], tuple):
            return 400, {"success": False, "error": "Missing modelFile"}
        if ftype not in ("tflite", "onnx", "saved_model"):
            return 400, {"success": False, "error": f"Invalid modelFileType '{ftype}'"}
        if fname is None:
            return 400, {"success": False, "error": "Missing modelFileName"}
        data = files[0][1]
        logs = [f"Received {len(data)} bytes ({fname})"]
        ok = True
        try:
            if ftype != "tflite":
                raise ValueError(f"{ftype} models are not supported by this test server")
            info = parse_tflite(data)
        except Exception as exc:
            info, ok = None, False
            logs.append(f"Failed to load model: {exc}")
        with st.lock:
            if ok:
                imp.model = {"fileName": fname, "data": data, "info": info}
                imp.device, imp.profile, imp.saved = device, None, None
            else:
                imp.model = None
        return 200, {"success": True, "id": self._job("Uploading pretrained model",
                                                      "pretrained-model-upload", ok, logs).id}

    def _profile(self, query, record):
        st = self.ei.state
        imp, err = self._impulse_for(query, create=False)
        if err:
            return err
        if imp.model is None:
            return 200, {"success": False, "error": "No uploaded model yet"}
        imp.profile = self._make_profile(imp.model, imp.device)
        return 200, {"success": True, "id": self._job("Profiling", "pretrained-model-profile",
                                                      True, ["Profiling done"]).id}

    @staticmethod
    def _variant(info) -> str:
        return "int8" if info["inputs"] and info["inputs"][0]["dataType"] in ("int8", "uint8") \
            else "float32"

    def _make_profile(self, model, device) -> dict:
        info = model["info"]
        size = info["bytes"]
        inp = info["inputs"][0]["shape"] if info["inputs"] else [1]
        act = 1
        for d in inp:
            act *= max(1, d)
        ram = 8 * act + 12 * 1024          # made up: a few activation copies + runtime
        rom = size + 28 * 1024             # made up: model + interpreter
        variant = self._variant(info)
        macs = 60 * size                   # made up

        def latency(mhz):
            return max(1, round(macs * 2 / (mhz * 1000)))

        def mcu(desc, mhz, fits=True):
            return {"description": desc, "timePerInferenceMs": latency(mhz),
                    "memory": {"tflite": {"ram": ram, "rom": rom},
                               "eon": {"ram": int(ram * 0.85), "rom": int(rom * 0.9)}},
                    "supported": fits}

        table = {"variant": variant,
                 "lowEndMcu": mcu("Cortex-M0+ 48MHz", 48, ram < 32 * 1024),
                 "highEndMcu": mcu("Cortex-M7 216MHz", 216),
                 "highEndMcuPlusAccelerator": mcu("Cortex-M55 + Ethos-U55", 400),
                 "mpu": {"description": "Cortex-A72 1.5GHz",
                         "timePerInferenceMs": latency(1500) // 8 + 1, "rom": float(size),
                         "supported": True},
                 "gpuOrMpuAccelerator": {"description": "Jetson Nano",
                                         "timePerInferenceMs": 1, "rom": float(size),
                                         "supported": True}}
        out = {"table": table}
        if device:
            mhz = {m: c for m, _, c in LATENCY_DEVICES}.get(device, 80)
            out[variant] = {"variant": variant, "device": device, "tfliteFileSizeBytes": size,
                            "isSupportedOnMcu": True,
                            "memory": {"tflite": {"ram": ram, "rom": rom, "arenaSize": ram - 4096},
                                       "eon": {"ram": int(ram * 0.85), "rom": int(rom * 0.9),
                                               "arenaSize": int(ram * 0.85) - 4096}},
                            "timePerInferenceMs": latency(mhz), "customMetrics": [],
                            "hasPerformance": True}
        return out

    def _model_info(self, query, record):
        st = self.ei.state
        imp, err = self._impulse_for(query)
        if err and err[0] == 404:
            return err
        if imp is None:
            return 200, {"success": False, "error": "No uploaded model yet",
                         "specificDeviceSelected": False, "availableModelTypes": []}
        if imp.model is None:
            return 200, {"success": False, "error": "No uploaded model yet",
                         "specificDeviceSelected": False, "availableModelTypes": []}
        info = imp.model["info"]
        tensors = lambda ts: [{"dataType": t["dataType"], "name": t["name"],  # noqa: E731
                               "shape": t["shape"]} for t in ts]
        model = {"fileName": imp.model["fileName"], "inputs": tensors(info["inputs"]),
                 "outputs": tensors(info["outputs"]), "supportsTFLite": True}
        if imp.profile is not None:
            model["profileInfo"] = imp.profile
        out = {"success": True, "specificDeviceSelected": imp.device is not None,
               "availableModelTypes": [self._variant(info)], "model": model}
        if imp.saved is not None:
            out["modelInfo"] = imp.saved
        return 200, out

    def _save(self, query, record):
        st = self.ei.state
        imp, err = self._impulse_for(query, create=False)
        if err:
            return err
        body = record.json
        if imp.model is None:
            return 200, {"success": False, "error": "No uploaded model yet"}
        if not isinstance(body, dict) or "input" not in body or "model" not in body:
            return 400, {"success": False, "error": "Body should have 'input' and 'model'"}
        inp, mdl = body["input"], body["model"]
        if inp.get("inputType") not in ("image", "audio", "time-series", "other"):
            return 400, {"success": False, "error": f"Invalid inputType {inp.get('inputType')!r}"}
        if inp.get("inputType") == "image" and inp.get("inputScaling") not in ("0..1", "0..255",
                                                                                "torch"):
            return 400, {"success": False, "error": f"Invalid inputScaling "
                                                    f"{inp.get('inputScaling')!r}"}
        if inp.get("inputType") == "image" and inp.get("resizeMode") not in (
                None, "squash", "fit-short", "fit-long", "crop"):
            return 400, {"success": False, "error": f"Invalid resizeMode "
                                                    f"{inp.get('resizeMode')!r}"}
        if mdl.get("modelType") == "classification":
            labels = mdl.get("labels")
            outs = imp.model["info"]["outputs"]
            if not isinstance(labels, list) or len(labels) != outs[0]["shape"][-1]:
                return 200, {"success": False, "error": f"Model has {outs[0]['shape'][-1]} "
                                                        f"outputs but {len(labels or [])} labels"}
        elif mdl.get("modelType") not in ("regression", "object-detection"):
            return 400, {"success": False, "error": f"Invalid modelType {mdl.get('modelType')!r}"}
        imp.saved = {"input": inp, "model": mdl}
        return 200, {"success": True}

    def _targets(self, query, record):
        targets = []
        for fmt, (name, engines) in TARGETS.items():
            targets.append({
                "name": name, "description": f"{name} (loopback)", "image": "", "imageClasses": "",
                "format": fmt, "hasEonCompiler": "tflite-eon" in engines, "hasTensorRT": False,
                "hasTensaiFlow": False, "hasDRPAI": False, "hasTIDL": False, "hasAkida": False,
                "hasMemryx": False, "hasStAton": False, "hasCevaNpn": False,
                "hasNordicAxon": False, "hasQaic": False, "hideOptimizations": False,
                "uiSection": "library", "supportedEngines": engines,
                "preferredEngine": engines[-1], "docsUrl": "",
                "modelVariants": [{"variant": "int8", "supported": True},
                                  {"variant": "float32", "supported": True}],
                "parameters": []})
        return 200, {"success": True, "targets": targets}

    def _build(self, query, record):
        st = self.ei.state
        imp, err = self._impulse_for(query, create=False)
        if err:
            return err
        target = (query.get("type") or [None])[0]
        body = record.json if isinstance(record.json, dict) else {}
        engine, mtype = body.get("engine"), body.get("modelType")
        if target not in TARGETS:
            return 400, {"success": False, "error": f"Unknown deployment type '{target}'"}
        if engine not in TARGETS[target][1]:
            return 200, {"success": False, "error": f"Engine '{engine}' is not supported for "
                                                    f"'{target}'"}
        if imp.model is None or imp.saved is None:
            return 200, {"success": False, "error": "No uploaded model yet, or its parameters "
                                                    "are not saved"}
        if mtype not in (self._variant(imp.model["info"]),):
            return 200, {"success": False, "error": f"Model type '{mtype}' is not available"}
        with st.lock:
            st.deployment_version += 1
            version = st.deployment_version
            imp.builds[(target, engine, mtype)] = self._library(imp, target, engine, mtype, version)
        job = self._job("Building library", "build-ondevice-model", True,
                        [f"Building {target} ({engine}, {mtype})", "Done"])
        return 200, {"success": True, "id": job.id, "deploymentVersion": version}

    def _library(self, imp, target, engine, mtype, version) -> bytes:
        st = self.ei.state
        slug = re.sub(r"[^a-z0-9]+", "_", st.project_name.lower()).strip("_")
        info = imp.model["info"]
        labels = imp.saved["model"].get("labels") or []
        inp = info["inputs"][0]["shape"]
        meta = {"project": st.project_name, "projectId": st.project_id, "target": target,
                "engine": engine, "modelType": mtype, "deploymentVersion": version,
                "input": imp.saved["input"], "labels": labels,
                "inputShape": inp, "outputShape": info["outputs"][0]["shape"],
                "model_sha256": hashlib.sha256(imp.model["data"]).hexdigest()}
        header = "\n".join([
            "#pragma once",
            f"#define EI_CLASSIFIER_PROJECT_ID {st.project_id}",
            f"#define EI_CLASSIFIER_INPUT_WIDTH {inp[2] if len(inp) > 2 else 0}",
            f"#define EI_CLASSIFIER_INPUT_HEIGHT {inp[1] if len(inp) > 1 else 0}",
            f"#define EI_CLASSIFIER_LABEL_COUNT {len(labels)}",
            f"#define EI_CLASSIFIER_INFERENCING_ENGINE_{engine.upper().replace('-', '_')} 1",
            "static const char *ei_classifier_inferencing_categories[] = { "
            + ", ".join(json.dumps(x) for x in labels) + " };", ""])
        buf = io.BytesIO()
        prefix = f"{slug}_inferencing/src/" if target == "arduino" else ""
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            if target == "arduino":
                zf.writestr(f"{slug}_inferencing/library.properties",
                            f"name={slug}_inferencing\nversion=1.0.{version}\n"
                            "author=EdgeImpulse Inc.\narchitectures=*\n")
                zf.writestr(f"{prefix}{slug}_inferencing.h", '#include "model-parameters/'
                                                             'model_metadata.h"\n')
            zf.writestr(f"{prefix}model-parameters/model_metadata.h", header)
            zf.writestr(f"{prefix}model-parameters/deployment.json", json.dumps(meta, indent=1))
            zf.writestr(f"{prefix}tflite-model/trained_model.tflite", imp.model["data"])
        return buf.getvalue()

    def _download(self, query, record):
        st = self.ei.state
        imp, err = self._impulse_for(query, create=False)
        if err:
            return err
        key = tuple((query.get(k) or [None])[0] for k in ("type", "engine", "modelType"))
        data = imp.builds.get(key)
        if data is None:
            return 404, {"success": False, "error": f"No build found for {key}"}
        slug = re.sub(r"[^a-z0-9]+", "-", st.project_name.lower()).strip("-")
        name = f"ei-{slug}-{key[0]}-1.0.{st.deployment_version}.zip"
        return 200, (data, "application/zip",
                     {"Content-Disposition": f"attachment; filename={name}"})
