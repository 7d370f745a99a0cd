"""Where Edge Impulse is and which key to use: options first, then ``EI_*`` environment variables.

The SDK reads ``edgeimpulse.API_KEY``, ``API_ENDPOINT`` and ``INGESTION_ENDPOINT`` at call time;
:func:`sdk_settings` sets them for the duration of a call and puts the old values back.

Every request we make carries the key in ``x-api-key``. Neither ``requests`` nor urllib3 (the
SDK's generated client) knows that header is a credential: on a redirect to another host they
strip only ``Authorization``/``Cookie`` and send ``x-api-key`` on. So a redirect is followed only
within the same origin (scheme, host and port); one to another origin is refused with one error
line, in :func:`ei_session` for our calls and in :func:`sdk_settings` for the SDK's.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from facemask_edge.edge_impulse.redact import redact, redact_clip, register_secret, sanitized
from facemask_edge.errors import EdgeImpulseError

__all__ = ["EIConfig", "resolve_config", "Deadline", "unreachable", "failure_kind", "Project", "project_for_key", "sdk_settings",
           "ei_session", "RedirectRefused", "DEFAULT_API_ENDPOINT", "DEFAULT_INGESTION_ENDPOINT",
           "KEY_HINT"]

DEFAULT_API_ENDPOINT = "https://studio.edgeimpulse.com/v1"
DEFAULT_INGESTION_ENDPOINT = "https://ingestion.edgeimpulse.com"
KEY_HINT = "pass --api-key or set EI_API_KEY to a project API key (Studio: Dashboard > Keys)"


@dataclass(frozen=True)
class EIConfig:
    """Connection settings. ``repr`` never shows the key.

    Attributes:
        api_key: project API key (``ei_...``).
        api_endpoint: studio API base, with ``/v1``.
        ingestion_endpoint: ingestion service base.
        timeout: seconds to wait to connect and for each answer.
    """

    api_key: str
    api_endpoint: str = DEFAULT_API_ENDPOINT
    ingestion_endpoint: str = DEFAULT_INGESTION_ENDPOINT
    timeout: float = 30.0
    api_endpoint_given: bool = True
    ingestion_endpoint_given: bool = True

    @property
    def studio_unasked(self) -> bool:
        """Only a custom ingestion endpoint was given and the studio API is the default: then
        the key must not be sent to studio.edgeimpulse.com for a mere project lookup (the user
        pointed us at another service, e.g. a private deployment)."""
        return self.ingestion_endpoint_given and not self.api_endpoint_given

    def key_id(self) -> str:
        """A short fingerprint of the key (12 hex digits of its SHA-256) to name files by when
        the project id is unknown. It identifies the key without revealing it: recovering a
        64-hex-digit key from 48 bits of its hash is not possible."""
        import hashlib

        return hashlib.sha256(self.api_key.encode()).hexdigest()[:12]

    def __repr__(self) -> str:
        return (f"EIConfig(api_key='***', api_endpoint={self.api_endpoint!r}, "
                f"ingestion_endpoint={self.ingestion_endpoint!r}, timeout={self.timeout})")

    __str__ = __repr__

    def url(self, path: str) -> str:
        return self.api_endpoint.rstrip("/") + path

    def ingestion_url(self, path: str) -> str:
        return self.ingestion_endpoint.rstrip("/") + path

    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.api_key, "Accept": "application/json"}


def _check_endpoint(name: str, url: str, example: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise EdgeImpulseError(f"{name} {url!r} is not an http(s) URL", f"e.g. {example}")
    return url.rstrip("/")


def resolve_config(api_key: str | None = None, api_endpoint: str | None = None,
                   ingestion_endpoint: str | None = None, timeout: float = 30.0) -> EIConfig:
    """Build an :class:`EIConfig` from options, falling back to ``EI_API_KEY``,
    ``EI_API_ENDPOINT`` and ``EI_INGESTION_ENDPOINT``.

    Raises:
        EdgeImpulseError: no key, or an endpoint that is not an http(s) URL.
    """
    key = (api_key or os.environ.get("EI_API_KEY") or "").strip()
    if not key:
        raise EdgeImpulseError("no Edge Impulse API key", KEY_HINT)
    register_secret(key)
    if timeout <= 0:
        raise EdgeImpulseError(f"timeout must be positive, got {timeout}")
    api_given = api_endpoint or os.environ.get("EI_API_ENDPOINT")
    ing_given = ingestion_endpoint or os.environ.get("EI_INGESTION_ENDPOINT")
    api = _check_endpoint("API endpoint", api_given or DEFAULT_API_ENDPOINT, DEFAULT_API_ENDPOINT)
    ing = _check_endpoint("ingestion endpoint", ing_given or DEFAULT_INGESTION_ENDPOINT,
                          DEFAULT_INGESTION_ENDPOINT)
    return EIConfig(key, api, ing, float(timeout), bool(api_given), bool(ing_given))


class Deadline:
    """One time limit for a whole command (``--job-timeout``): every request and every job
    wait takes what is left, so a profile or a deploy never runs longer than asked.

    Args:
        seconds: the budget; ``None`` for none.
        what: what is limited, for the error.
    """

    def __init__(self, seconds: float | None, what: str = "--job-timeout"):
        import time

        if seconds is not None and seconds <= 0:
            raise EdgeImpulseError(f"{what} must be positive, got {seconds:g}")
        self.seconds = seconds
        self.what = what
        self._end = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        import time

        return None if self._end is None else self._end - time.monotonic()

    def check(self, doing: str) -> None:
        """Raise if the time is up."""
        left = self.remaining()
        if left is not None and left <= 0:
            raise EdgeImpulseError(f"Edge Impulse {doing} did not finish within {self.what} "
                                   f"{self.seconds:g} s (for the whole command)",
                                   f"raise {self.what}, or try again later")

    def cap(self, timeout: float) -> float:
        """``timeout``, shortened to what is left (at least 0.05 s so a request can fail)."""
        left = self.remaining()
        return timeout if left is None else max(0.05, min(timeout, left))


@dataclass(frozen=True)
class Project:
    id: int
    name: str


def _error_text(resp: requests.Response) -> str:
    try:
        body = resp.json()
        text = body.get("error") if isinstance(body, dict) else None
    except ValueError:
        text = None
    text = text or resp.text.strip() or resp.reason or ""
    return redact_clip(text)


# -- redirects --------------------------------------------------------------------------------

def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


class RedirectRefused(requests.RequestException):
    """A server redirected a request that carries the API key to another origin.

    Attributes:
        error: the one-line :class:`EdgeImpulseError` to show.
    """

    def __init__(self, source: str, target: str):
        src, dst = redact(source), redact(target)
        super().__init__(f"refused redirect from {src} to {dst}")
        self.error = EdgeImpulseError(
            f"Edge Impulse endpoint {src} answered with a redirect to another origin ({dst}); "
            "refused, so that the API key is not sent there",
            "point --api-endpoint / --ingestion-endpoint (EI_API_ENDPOINT / EI_INGESTION_ENDPOINT)"
            " at the final address, or check for a proxy or captive portal")


def check_redirect(source: str, location: str) -> None:
    """Raise :class:`RedirectRefused` unless ``location`` (relative to ``source``) has the same
    scheme, host and port as ``source``."""
    target = urljoin(source, location)
    if _origin(target) != _origin(source):
        raise RedirectRefused(source, target)


class _SameOriginSession(requests.Session):
    """A ``requests`` session that follows redirects only within the request's origin."""

    def rebuild_auth(self, prepared_request, response):
        # Called for every redirect hop, before the next request is sent.
        check_redirect(response.request.url, prepared_request.url)
        super().rebuild_auth(prepared_request, response)


def ei_session() -> requests.Session:
    """A ``requests.Session`` for calls that carry the key: cross-origin redirects refused."""
    return _SameOriginSession()


class _SameOriginRetry(urllib3.Retry):
    """urllib3 retry policy of the SDK's client, refusing redirects to another origin.

    ``PoolManager.urlopen`` calls ``increment`` with the full URL and the 3xx response before it
    follows a redirect, with the headers (``x-api-key`` included) already copied.
    """

    def increment(self, method=None, url=None, response=None, error=None, _pool=None,
                  _stacktrace=None):
        location = response.get_redirect_location() if response is not None else None
        if location and url:
            source = url
            if _pool is not None and not urlsplit(url).scheme:
                source = f"{_pool.scheme}://{_pool.host}:{_pool.port}{url}"
            check_redirect(source, location)
        return super().increment(method, url, response, error, _pool, _stacktrace)


def _cause_chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        for attr in ("reason", "__cause__", "__context__"):
            nxt = getattr(exc, attr, None)
            if isinstance(nxt, BaseException):
                exc = nxt
                break
        else:
            args = [a for a in getattr(exc, "args", ()) if isinstance(a, BaseException)]
            exc = args[0] if args else None


def failure_kind(exc: BaseException, timeout: float) -> str:
    """What really happened to a request that got no answer, in a few words.

    A refused connection fails at once and a TLS handshake fails on a certificate: saying
    "after 30 s" for those sent users looking for a slow network.
    """
    import ssl

    import urllib3.exceptions as u3

    chain = list(_cause_chain(exc))
    for e in chain:
        if isinstance(e, (requests.exceptions.SSLError, ssl.SSLError, u3.SSLError)):
            detail = next((str(x) for x in chain if isinstance(x, ssl.SSLError)), str(e))
            return "TLS error: " + redact_clip(detail, 160)
    for e in chain:
        if isinstance(e, (requests.exceptions.ProxyError, u3.ProxyError)):
            return "the proxy failed: " + redact_clip(str(e), 160)
    for e in chain:
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, socket.gaierror):
            return "host name not found"
        if isinstance(e, (ConnectionResetError, BrokenPipeError)):
            return "connection reset by the server"
    for e in chain:
        # urllib3's NewConnectionError subclasses ConnectTimeoutError: it is no timeout.
        if isinstance(e, (requests.Timeout, socket.timeout, TimeoutError, u3.TimeoutError)) \
                and not isinstance(e, u3.NewConnectionError):
            return f"timed out after {timeout:g} s"
    for e in chain:
        if isinstance(e, (u3.ProtocolError, requests.exceptions.ChunkedEncodingError)) \
                or "RemoteDisconnected" in repr(e):
            return "the server closed the connection without an answer"
    return "connection failed: " + redact_clip(type(chain[-1]).__name__, 80)


def unreachable(what: str, url: str, exc: BaseException, timeout: float) -> EdgeImpulseError:
    """The one-line error for a service that does not answer (raise it ``from sanitized(exc)``)."""
    return EdgeImpulseError(f"cannot reach the Edge Impulse {what} at {url} "
                            f"({failure_kind(exc, timeout)})",
                            "check the network, the proxy (HTTPS_PROXY / NO_PROXY) or the "
                            "endpoint (--api-endpoint / --ingestion-endpoint, EI_API_ENDPOINT / "
                            "EI_INGESTION_ENDPOINT)")


def project_for_key(cfg: EIConfig, session: requests.Session | None = None) -> Project:
    """Ask the studio API which project the key belongs to (``GET /api/projects``).

    This is the SDK's ``default_project_id_for`` call, made with a timeout so that a bad key or an
    unreachable endpoint fails in one clear line before any upload starts.

    Raises:
        EdgeImpulseError: key rejected, endpoint unreachable, or an unexpected answer.
    """
    http = session or ei_session()
    url = cfg.url("/api/projects")
    try:
        with http if session is None else _no_close(http):
            resp = http.get(url, headers=cfg.headers(), timeout=(cfg.timeout, cfg.timeout))
    except RedirectRefused as exc:
        raise exc.error from None
    except requests.RequestException as exc:
        raise unreachable("API", cfg.api_endpoint, exc, cfg.timeout) from sanitized(exc)
    if resp.status_code in (401, 403):
        raise EdgeImpulseError(f"Edge Impulse rejected the API key ({resp.status_code}: "
                               f"{_error_text(resp)})", KEY_HINT)
    if resp.status_code != 200:
        raise EdgeImpulseError(f"Edge Impulse API answered {resp.status_code} to GET /api/projects "
                               f"({_error_text(resp)})", "try again later")
    try:
        body = resp.json()
        if not body.get("success", False):
            raise EdgeImpulseError(f"Edge Impulse API error: {redact_clip(body.get('error'))}",
                                   KEY_HINT)
        projects = body["projects"]
        if not projects:
            raise EdgeImpulseError("the API key has no project", KEY_HINT)
        return Project(int(projects[0]["id"]), str(projects[0].get("name", "")))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise EdgeImpulseError(f"unexpected answer from {cfg.api_endpoint}/api/projects",
                               "is --api-endpoint the studio API (ending in /v1)?") from None


@contextmanager
def _no_close(session):
    yield session


_SDK_ATTRS = ("API_KEY", "API_ENDPOINT", "INGESTION_ENDPOINT")


@contextmanager
def _quiet_fd2():
    """Send C-level stderr to /dev/null for the block (unless debugging)."""
    import logging
    import sys

    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_sdk():
    """Import ``edgeimpulse`` (it imports TensorFlow, so only when a command needs it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import sys

    if "edgeimpulse" in sys.modules:
        return sys.modules["edgeimpulse"]
    try:
        # TensorFlow 2.21 writes oneDNN/CUDA notices to fd 2 at import whatever
        # TF_CPP_MIN_LOG_LEVEL says; they are noise for a user profiling on Edge Impulse.
        with _quiet_fd2():
            import edgeimpulse
    except ImportError:
        from facemask_edge.errors import ToolMissing

        raise ToolMissing("the edgeimpulse Python SDK is not installed",
                          "pip install 'facemask-edge[edgeimpulse]'") from None
    return edgeimpulse


def env_proxy(url: str) -> str | None:
    """The proxy the standard variables name for ``url`` (``None``: direct, e.g. by
    ``NO_PROXY``) - the same choice ``requests`` makes for the toolkit's own calls."""
    from requests.utils import get_environ_proxies, select_proxy

    return select_proxy(url, get_environ_proxies(url)) or None


@contextmanager
def sdk_settings(cfg: EIConfig):
    """Point the ``edgeimpulse`` SDK at ``cfg`` for the block; bound every socket wait.

    The SDK makes most calls without a timeout; urllib3 then falls back to the socket default,
    which we set to ``cfg.timeout`` so that an endpoint that stops answering fails in time.

    Its generated client (``edgeimpulse_api.rest.RESTClientObject``) builds a urllib3
    ``PoolManager`` that follows redirects and keeps ``x-api-key`` on a host change; for the
    block, every such client gets :class:`_SameOriginRetry` (same ``total=10, backoff_factor=1``
    as the SDK's default) so that a redirect to another origin raises :class:`RedirectRefused`,
    and the proxy of the standard variables (:func:`env_proxy`), which it would ignore.

    The toolkit's own commands no longer call the SDK (see :mod:`.studio` for why); this is for
    scripts and tests that do.
    """
    ei = import_sdk()
    from edgeimpulse_api import rest

    old = {a: getattr(ei, a, None) for a in _SDK_ATTRS}
    old_timeout = socket.getdefaulttimeout()
    old_init = rest.RESTClientObject.__init__

    def init(self, configuration, *args, **kwargs):
        if not isinstance(configuration.retries, _SameOriginRetry):
            configuration.retries = _SameOriginRetry(total=10, backoff_factor=1.0)
        if not configuration.proxy:
            # The generated client reads only ``configuration.proxy``; give it what
            # HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY say, as requests does for ours.
            configuration.proxy = env_proxy(configuration.host)
        old_init(self, configuration, *args, **kwargs)

    ei.API_KEY, ei.API_ENDPOINT, ei.INGESTION_ENDPOINT = (cfg.api_key, cfg.api_endpoint,
                                                           cfg.ingestion_endpoint)
    socket.setdefaulttimeout(cfg.timeout)
    rest.RESTClientObject.__init__ = init
    try:
        yield ei
    finally:
        rest.RESTClientObject.__init__ = old_init
        socket.setdefaulttimeout(old_timeout)
        for a, v in old.items():
            setattr(ei, a, v)
