"""The Edge Impulse studio API, called directly: one session, one deadline, every job checked.

Why not the SDK (``edgeimpulse`` 1.0.20 / ``edgeimpulse_api`` 1.96.3, whose source this follows
for paths, parameters and body shapes):

- ``ei.model.profile`` / ``ei.model.deploy`` pass no ``impulseId``; every pretrained-model
  endpoint documents "if this is unset then the default impulse is used", so they replace the
  model of whatever impulse the user has (issue 15.1). The endpoints take ``impulseId``; the SDK
  functions do not expose it.
- its job polling (``edgeimpulse.util.poll``) returns as soon as ``finished`` is set and never
  reads ``finishedSuccessful``: a failed build surfaces later as "No uploaded model yet" or a 404
  on the download, with the job's log only at debug level (15.4).
- its generated client (``edgeimpulse_api.rest.RESTClientObject``) builds a urllib3
  ``PoolManager`` unless ``Configuration.proxy`` is set, so ``HTTPS_PROXY`` / ``HTTP_PROXY`` /
  ``NO_PROXY`` are ignored (15.3); its calls have no timeout; and importing ``edgeimpulse``
  imports TensorFlow (``edgeimpulse_api`` alone takes seconds).

So this module speaks the same HTTP with ``requests`` through :func:`ei_session` (cross-origin
redirects refused, the key masked in every message), which honours the standard proxy
variables exactly as the ingestion upload does, and bounds every wait by the command's
:class:`~facemask_edge.edge_impulse.config.Deadline`.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

import requests

from facemask_edge.edge_impulse.config import (KEY_HINT, Deadline, EIConfig, Project,
                                               RedirectRefused, _error_text, ei_session,
                                               project_for_key, unreachable)
from facemask_edge.edge_impulse.redact import redact_clip, sanitized
from facemask_edge.errors import EdgeImpulseError

__all__ = ["Studio", "JobFailed", "Impulse", "LOG_TAIL_LINES"]

log = logging.getLogger(__name__)

_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
LOG_TAIL_LINES = 12
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


class JobFailed(EdgeImpulseError):
    """An Edge Impulse job finished without success.

    Attributes:
        job_id: the job.
        log_tail: its log's last lines (key masked), oldest first.
    """

    def __init__(self, message: str, hint: str | None, job_id: int, log_tail: list[str]):
        super().__init__(message, hint)
        self.job_id = job_id
        self.log_tail = log_tail


@dataclass(frozen=True)
class Impulse:
    """One impulse of the project (``GET /api/{projectId}/impulses``)."""

    id: int
    name: str
    type: str = ""

    @property
    def ours(self) -> bool:
        """Created by this toolkit (``--new-impulse`` or a first deploy to an empty project)."""
        return self.name.startswith(IMPULSE_NAME_PREFIX)


#: Name prefix of the impulses this toolkit creates: how a later run recognises its own.
IMPULSE_NAME_PREFIX = "facemask-edge"


class Studio:
    """A studio-API client for one command.

    Args:
        cfg: key, endpoints, per-request timeout.
        deadline: limit for the whole command (default: none).
        session: a ``requests.Session`` (default: :func:`ei_session`).
        attempts: tries per request on 429/5xx/dropped connections.
    """

    def __init__(self, cfg: EIConfig, deadline: Deadline | None = None,
                 session: requests.Session | None = None, attempts: int = 4):
        self.cfg = cfg
        self.deadline = deadline or Deadline(None)
        self.session = session or ei_session()
        self.attempts = attempts
        self._project: Project | None = None

    def __enter__(self) -> "Studio":
        return self

    def __exit__(self, *exc) -> None:
        self.session.close()

    @property
    def project(self) -> Project:
        """The project the key belongs to (asked once)."""
        if self._project is None:
            self.deadline.check("project lookup")
            self._project = project_for_key(self.cfg, self.session)
        return self._project

    # -- requests ----------------------------------------------------------------------------
    def request(self, method: str, path: str, what: str, *, params=None, json=None, files=None,
                data=None, raw: bool = False, in_project: bool = True):
        """One call; ``path`` is under ``/api/{projectId}`` unless ``in_project`` is false.

        Returns:
            The JSON body (a dict with ``success: true``), or the response if ``raw``.

        Raises:
            EdgeImpulseError: key refused, ``success: false``, another status, unreachable, or
                the deadline passed.
        """
        path = f"/api/{self.project.id}{path}" if in_project else path
        url = self.cfg.url(path)
        params = {k: v for k, v in (params or {}).items() if v is not None}
        last = ""
        for attempt in range(1, self.attempts + 1):
            self.deadline.check(what)
            timeout = self.deadline.cap(self.cfg.timeout)
            delay = min(8.0, 0.5 * 2 ** (attempt - 1))
            try:
                resp = self.session.request(method, url, params=params, json=json, files=files,
                                            data=data, headers=self.cfg.headers(),
                                            timeout=(timeout, timeout))
            except RedirectRefused as exc:
                raise exc.error from None
            except requests.RequestException as exc:
                if attempt < self.attempts and not isinstance(exc, requests.exceptions.SSLError):
                    last = type(exc).__name__
                    self._pause(delay, what, last)
                    continue
                raise unreachable("API", self.cfg.api_endpoint, exc, timeout) \
                    from sanitized(exc)
            status = resp.status_code
            if status in (401, 403):
                raise EdgeImpulseError(f"Edge Impulse rejected the API key ({status}: "
                                       f"{_error_text(resp)})", KEY_HINT)
            if status in _RETRY_STATUS and attempt < self.attempts:
                after = resp.headers.get("Retry-After")
                try:
                    delay = max(delay, min(60.0, float(after))) if after else delay
                except ValueError:
                    pass
                last = f"HTTP {status}"
                self._pause(delay, what, last)
                continue
            if status != 200:
                raise EdgeImpulseError(f"Edge Impulse API answered {status} to {method} "
                                       f"{redact_clip(path, 120)} during {what} "
                                       f"({_error_text(resp)})",
                                       "try again later" if status >= 500 else None)
            if raw:
                return resp
            try:
                body = resp.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                raise EdgeImpulseError(f"unexpected answer from {self.cfg.api_endpoint} to "
                                       f"{method} {redact_clip(path, 120)} (not a JSON object)",
                                       "is --api-endpoint the studio API (ending in /v1)?")
            if body.get("success") is not True:
                # {"success": false, "error": ...}: the service looked and said no; asking
                # again gets the same answer.
                raise EdgeImpulseError(f"Edge Impulse {what} failed: "
                                       f"{redact_clip(str(body.get('error') or 'no reason given'))}")
            return body
        raise EdgeImpulseError(f"Edge Impulse {what}: gave up after {self.attempts} attempts "
                               f"(last: {last})", "try again later")  # pragma: no cover

    def _pause(self, delay: float, what: str, reason: str) -> None:
        left = self.deadline.remaining()
        if left is not None:
            delay = min(delay, max(0.0, left))
        log.info("Edge Impulse %s: %s; retrying in %.1f s", what, reason, delay)
        time.sleep(delay)

    def get(self, path: str, what: str, **params) -> dict:
        return self.request("GET", path, what, params=params)

    def post(self, path: str, what: str, json=None, params=None, **kw) -> dict:
        return self.request("POST", path, what, json=json, params=params, **kw)

    # -- jobs --------------------------------------------------------------------------------
    def wait_job(self, job_id: int, what: str) -> dict:
        """Poll ``/jobs/{id}/status`` until the job finishes; check ``finishedSuccessful``.

        Raises:
            JobFailed: the job finished without success (with its log's last lines).
            EdgeImpulseError: the deadline passed (the job is cancelled first).
        """
        interval = 0.1
        doing = f"{what} (job {job_id})"
        while True:
            try:
                job = self.get(f"/jobs/{job_id}/status", doing).get("job") or {}
            except EdgeImpulseError:
                left = self.deadline.remaining()
                if left is not None and left <= 0:
                    self._cancel(job_id)  # out of time: stop the job we no longer wait for
                raise
            if job.get("finished"):
                if job.get("finishedSuccessful") is True:
                    return job
                tail = self.log_tail(job_id)
                reason = next((ln for ln in reversed(tail) if ln.strip()), "")
                raise JobFailed(f"Edge Impulse {what} job {job_id} failed"
                                + (f": {redact_clip(reason, 200)}" if reason else ""),
                                "the job's last log lines are above; fix the cause, or look at "
                                "the job in Studio", job_id, tail)
            left = self.deadline.remaining()
            if left is not None and left <= 0:
                self._cancel(job_id)
                self.deadline.check(doing)
            time.sleep(interval if left is None else max(0.0, min(interval, left)))
            interval = min(2.0, interval * 2)

    def _cancel(self, job_id: int) -> None:
        """Best effort: a job we stop waiting for should not keep building."""
        try:
            self.session.post(self.cfg.url(f"/api/{self.project.id}/jobs/{job_id}/cancel"),
                              params={"forceCancel": "true"}, headers=self.cfg.headers(),
                              timeout=(min(5.0, self.cfg.timeout),) * 2)
        except (requests.RequestException, EdgeImpulseError):
            pass

    def log_tail(self, job_id: int, lines: int = LOG_TAIL_LINES) -> list[str]:
        """The last ``lines`` lines of a job's log (``/jobs/{id}/stdout``), oldest first, key
        masked; ``[]`` if the log cannot be read."""
        try:
            body = self.get(f"/jobs/{job_id}/stdout", f"job {job_id} log", limit=200)
        except EdgeImpulseError as exc:
            return [f"(the job log could not be read: {exc.message})"]
        entries = [e for e in body.get("stdout") or [] if isinstance(e, dict)]
        # Guess: the order of the entries is not documented; their ``created`` stamps are, so
        # sort by them (a stable sort keeps the server's order for equal stamps).
        entries.sort(key=lambda e: str(e.get("created") or ""))
        out: list[str] = []
        for e in entries:
            text = _ANSI.sub("", str(e.get("data") or ""))
            out += [ln.rstrip() for ln in text.replace("\r", "\n").split("\n") if ln.strip()]
        return [redact_clip(ln, 240) for ln in out[-lines:]]

    def start_and_wait(self, path: str, what: str, json=None, params=None, **kw) -> dict:
        """POST something that starts a job (answer ``{"id": ...}``) and wait for it."""
        body = self.post(path, what, json=json, params=params, **kw)
        try:
            job_id = int(body["id"])
        except (KeyError, TypeError, ValueError):
            raise EdgeImpulseError(f"Edge Impulse {what}: the answer has no job id") from None
        log.info("Edge Impulse %s: job %s", what, job_id)
        self.wait_job(job_id, what)
        return body

    # -- listings ----------------------------------------------------------------------------
    def devices(self) -> list[tuple[str, str]]:
        """Profiling devices ``(mcu, name)`` from the project info's ``latencyDevices``."""
        info = self.get("", "device listing")
        return [(str(d.get("mcu")), str(d.get("name", ""))) for d in info.get("latencyDevices")
                or [] if isinstance(d, dict) and d.get("mcu")]

    def targets(self) -> list[dict]:
        """Deployment targets (``format``, ``name``, ``supportedEngines``...) of the project."""
        body = self.get("/deployment/targets/data-sources", "target listing")
        return [t for t in body.get("targets") or [] if isinstance(t, dict) and t.get("format")]

    def impulses(self) -> list[Impulse]:
        """The project's impulses (``GET /api/{projectId}/impulses``)."""
        body = self.get("/impulses", "impulse listing")
        return [Impulse(int(i["id"]), str(i.get("name", "")), str(i.get("type", "")))
                for i in body.get("impulses") or [] if isinstance(i, dict) and "id" in i]

    def new_impulse(self, name: str) -> Impulse:
        """Create an empty bring-your-own-model impulse and name it."""
        body = self.post("/impulse/new", "impulse creation", json={"type": "BYOM"})
        try:
            iid = int(body["id"])
        except (KeyError, TypeError, ValueError):
            raise EdgeImpulseError("Edge Impulse impulse creation: the answer has no id") from None
        self.post("/impulse/update", "impulse naming", json={"name": name},
                  params={"impulseId": iid})
        return Impulse(iid, name, "BYOM")

    def samples(self, category: str, page: int = 500) -> list[dict]:
        """Every sample of ``category`` (``training``/``testing``), page by page."""
        out: list[dict] = []
        offset = 0
        while True:
            body = self.get("/raw-data", f"{category} sample listing", category=category,
                            offset=offset, limit=page, excludeSensors="true")
            got = [s for s in body.get("samples") or [] if isinstance(s, dict)]
            out += got
            total = body.get("totalCount")
            offset += len(got)
            if not got or (isinstance(total, int) and offset >= total) or len(got) < page:
                return out
