"""Keep the Edge Impulse API key out of everything the toolkit prints, logs or raises.

The key reaches us through ``--api-key`` or ``EI_API_KEY`` and has to be handed to the SDK and to
HTTP headers, so it lives in memory; it must never reach a terminal, a log file, an exception
message or a file we write. Three layers, all driven by one registry of secrets:

- :func:`redact` replaces every registered secret in a string (used on every message we build
  from a server answer or a library exception before it becomes a ``FacemaskError``);
  :func:`redact_clip` is the one way to shorten such a message: it masks *before* it cuts, since a
  key cut in half no longer matches and its first half would be printed;
- :func:`redacting` installs, for the duration of a command, a log-record factory that redacts
  each record's message and traceback at creation time (so any logger, ours or the SDK's or
  urllib3's, at any level, is covered) and wraps ``sys.stdout``/``sys.stderr`` so that stray
  ``print`` calls inside libraries are filtered too;
- :func:`sanitized` turns any exception into a key-free ``RuntimeError`` to chain as the cause of
  the ``FacemaskError`` we raise, so ``--verbose`` tracebacks keep their cause without the key.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from contextlib import contextmanager

__all__ = ["MASK", "register_secret", "forget_secret", "redact", "redact_clip", "redacting",
           "sanitized"]

MASK = "***"
_MIN_SECRET = 6  # shorter strings would mask innocent text; real keys are ~67 characters

_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(secret: str | None) -> None:
    """Add ``secret`` to the strings :func:`redact` removes (no-op for empty or short values)."""
    if secret and len(secret) >= _MIN_SECRET:
        with _lock:
            _secrets.add(secret)


def forget_secret(secret: str | None) -> None:
    with _lock:
        _secrets.discard(secret)


def redact(text) -> str:
    """Return ``str(text)`` with every registered secret replaced by ``***``."""
    s = text if isinstance(text, str) else str(text)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in s:
            s = s.replace(secret, MASK)
    return s


def redact_clip(text, limit: int = 200) -> str:
    """Mask secrets in ``text``, fold its whitespace to single spaces, then cut it to ``limit``.

    The order matters: cutting first can leave the head of a key at the end of the message,
    which no longer matches the registered key and so would be printed unmasked.
    """
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", "replace")
    s = " ".join(redact(text).split())
    return s if len(s) <= limit else s[:max(0, limit - 3)] + "..."


def sanitized(exc: BaseException) -> RuntimeError:
    """A key-free stand-in for ``exc``: its type, message and traceback text, redacted."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return RuntimeError(redact(f"{type(exc).__name__}: {exc}") + "\n" + redact(text))


def _redact_bytes(b: bytes) -> bytes:
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        raw = secret.encode("utf-8")
        if raw in b:
            b = b.replace(raw, MASK.encode())
    return b


class _RedactingBinary:
    """Wraps a binary stream (a text stream's ``buffer``); redacts what is written."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, b):
        if isinstance(b, str):
            raise TypeError("a bytes-like object is required, not 'str'")
        return self._stream.write(_redact_bytes(bytes(b)))

    def __getattr__(self, name):
        return getattr(self._stream, name)


class _RedactingStream:
    """Wraps a text stream; redacts what is written, forwards everything else.

    Behaves like a text stream for libraries that probe it (click writes ``b""`` to tell text
    from binary streams): bytes raise ``TypeError`` and ``buffer`` is redacted as well.
    """

    def __init__(self, stream):
        self._stream = stream
        raw = getattr(stream, "buffer", None)
        self.buffer = _RedactingBinary(raw) if raw is not None else None

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        return self._stream.write(redact(s))

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextmanager
def redacting(secret: str | None):
    """Register ``secret`` and filter logs and standard streams until the block ends."""
    register_secret(secret)
    old_factory = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = old_factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep the raw parts, still redacted
            message = f"{record.msg} {record.args}"
        record.msg, record.args = redact(message), None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return record

    logging.setLogRecordFactory(factory)
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _RedactingStream(out), _RedactingStream(err)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err
        logging.setLogRecordFactory(old_factory)
