"""A real HTTP server on loopback serving a zip (Range requests, truncation, 404), for tests."""

from __future__ import annotations

import io
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

__all__ = ["Server", "make_repo_zip"]


def make_repo_zip(per_class: int = 6) -> bytes:
    """A zip laid out like GitHub's archive of Face-Mask-Detection: other folders with files,
    and the class folders under ``<repo>-master/dataset/``."""
    buf = io.BytesIO()
    rng = np.random.RandomState(0)
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("Face-Mask-Detection-master/README.md", "# repo\n")
        zf.writestr("Face-Mask-Detection-master/Readme_images/a.png", b"not really a png")
        zf.writestr("Face-Mask-Detection-master/face_detector/deploy.prototxt", "x")
        zf.writestr("Face-Mask-Detection-master/mydataset/notes.txt", "decoy")
        for cls in ("with_mask", "without_mask"):
            for i in range(per_class):
                img = Image.fromarray(rng.randint(0, 256, (20, 20, 3)).astype(np.uint8))
                b = io.BytesIO()
                img.save(b, "PNG")
                zf.writestr(f"Face-Mask-Detection-master/dataset/{cls}/{i}.png", b.getvalue())
    # Large enough to arrive in several reads.
    return buf.getvalue() + b""


class Server:
    """Serves ``payload`` at /data.zip with Range support; knobs for failure modes."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.requests: list[dict] = []
        self.truncate_next = 0  # bytes to send before hanging up, on the next request only
        self.ignore_range = False
        self.no_length = False  # send no Content-Length (the body ends when the connection does)
        self.trickle = 0.0  # seconds between single bytes (a server that never quite stalls)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.requests.append({"path": self.path, "range": self.headers.get("Range")})
                if self.path != "/data.zip":
                    self.send_error(404, "Not Found")
                    return
                data, start = outer.payload, 0
                rng = self.headers.get("Range")
                if rng and not outer.ignore_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                if outer.no_length:
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/zip")
                self.end_headers()
                if outer.trickle:
                    import time

                    for i in range(len(body)):
                        try:
                            self.wfile.write(body[i:i + 1])
                            self.wfile.flush()
                        except OSError:
                            return
                        time.sleep(outer.trickle)
                    return
                if outer.truncate_next:
                    n, outer.truncate_next = outer.truncate_next, 0
                    self.wfile.write(body[:n])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
