"""A logging HTTP proxy on loopback for the Edge Impulse tests.

It does what a corporate proxy does with the two kinds of request a client sends it:

- ``CONNECT host:port`` (an ``https://`` URL through ``HTTPS_PROXY``): a byte tunnel;
- an absolute-URI request (``GET http://host:port/path``, an ``http://`` URL through
  ``HTTP_PROXY``): forwarded to the origin, answer relayed; keep-alive towards the client.

Every request is logged as ``(method, target)``. Only loopback origins are reached (the tests
have no network); any other host gets a ``502`` - and is still logged, so a test can see that
a client tried to reach, say, ``studio.edgeimpulse.com``.
"""

from __future__ import annotations

import select
import socket
import socketserver
import threading
from urllib.parse import urlsplit

__all__ = ["LoopbackProxy"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class LoopbackProxy:
    """Use as a context manager; ``url`` is ``http://127.0.0.1:PORT``; ``log`` the requests."""

    def __init__(self):
        self.log: list[tuple[str, str]] = []
        self.upstream_ports: set[int] = set()  # local ports of the proxy's origin connections
        self._lock = threading.Lock()
        self._server: socketserver.ThreadingTCPServer | None = None

    def __enter__(self) -> "LoopbackProxy":
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                proxy._handle(self.connection, self.rfile)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request, client_address):
                pass  # clients hanging up are normal

        self._server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self._server.server_address[1]

    def env(self) -> dict[str, str]:
        """Proxy variables (both spellings) pointing here, with nothing exempt: urllib/requests
        would otherwise skip the proxy for hosts listed in ``NO_PROXY``."""
        out = {}
        for name in ("HTTPS_PROXY", "HTTP_PROXY"):
            out[name] = out[name.lower()] = self.url
        out["NO_PROXY"] = out["no_proxy"] = ""
        return out

    def seen(self, fragment: str) -> list[tuple[str, str]]:
        with self._lock:
            return [e for e in self.log if fragment in e[1]]

    # -- one client connection -----------------------------------------------------------------
    def _handle(self, conn: socket.socket, rfile) -> None:
        while True:
            line = rfile.readline(65536)
            if not line:
                return
            try:
                method, target, version = line.decode("latin-1").split()
            except ValueError:
                return
            headers = []
            length = 0
            while True:
                h = rfile.readline(65536)
                if h in (b"\r\n", b"\n", b""):
                    break
                headers.append(h)
                name, _, value = h.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            with self._lock:
                self.log.append((method, target))
            if method == "CONNECT":
                self._tunnel(conn, rfile, target)
                return
            parts = urlsplit(target)
            if parts.hostname not in _LOOPBACK:
                conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                rfile.read(length)
                continue
            body = rfile.read(length) if length else b""
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            kept = [h for h in headers if not h.lower().startswith((b"connection:",
                                                                     b"proxy-"))]
            with socket.create_connection((parts.hostname, parts.port or 80), timeout=30) as up:
                with self._lock:
                    self.upstream_ports.add(up.getsockname()[1])
                up.sendall(f"{method} {path} {version}\r\n".encode("latin-1") + b"".join(kept)
                           + b"Connection: close\r\n\r\n" + body)
                while True:
                    chunk = up.recv(65536)
                    if not chunk:
                        break
                    conn.sendall(chunk)

    def _tunnel(self, conn: socket.socket, rfile, target: str) -> None:
        host, _, port = target.rpartition(":")
        if host.strip("[]") not in _LOOPBACK:
            conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        try:
            up = socket.create_connection((host.strip("[]"), int(port)), timeout=30)
        except OSError:
            conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        with self._lock:
            self.upstream_ports.add(up.getsockname()[1])
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        with up:
            socks = [conn, up]
            while True:
                readable, _, _ = select.select(socks, [], [], 30)
                if not readable:
                    return
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        return
                    (up if s is conn else conn).sendall(data)
