"""The Flask application behind ``facemask-edge view``: live board, run report, try it.

Pages are server-rendered templates; the live page and the try-it page use a small plain
JavaScript file (``static/view.js``, no build step) that polls ``/api/live`` and posts photos to
``/api/try``. Every bad input (not an image, too large, no board) is a JSON ``{"error": ...}``
with a 4xx/5xx status that the page shows; the server itself keeps running.
"""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path

import numpy as np

from facemask_edge.errors import FacemaskError

__all__ = ["create_app", "MAX_UPLOAD_BYTES", "TryModel"]

MAX_UPLOAD_BYTES = 10 * 1024 * 1024


def png_data_url(rgb: np.ndarray) -> str:
    """A uint8 ``(H, W, 3)`` array as a ``data:image/png`` URL (the page upscales it)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class TryModel:
    """The run's shipped int8 model with the board's exact preprocessing.

    Args:
        run: a converted run folder (``model_int8.tflite`` and ``model_card.json``).
    """

    def __init__(self, run: Path):
        from facemask_edge.artifacts.run import Run
        from facemask_edge.validate.reference import HostReference

        shipped = Run(run).shipped()  # missing, damaged, replaced or stale: one error line
        model, card = shipped.data, shipped.card
        self.card = card
        self.sha256 = shipped.sha256
        self.labels = list(card.get("labels") or [])
        inp = card.get("input", {})
        shape = inp.get("shape") or [1, inp.get("size", 96), inp.get("size", 96), 3]
        self.size = int(shape[1])
        self.channels = int(shape[3])
        self.color = inp.get("color", "rgb" if self.channels == 3 else "grayscale")
        out = card.get("output", {})
        self.scale = float(out.get("scale", 1 / 256))
        self.zero_point = int(out.get("zero_point", -128))
        self._ref = HostReference(model)
        self._lock = threading.Lock()  # one TFLM interpreter: one image at a time

    def preprocess(self, data: bytes) -> tuple[np.ndarray, bytes]:
        """Decode and preprocess like the firmware: ``(uint8 crop, int8 input bytes)``.

        Raises:
            ValueError: not an image (the reason is in the message).
        """
        from facemask_edge.data.images import decode_image
        from facemask_edge.data.preprocess import device_preprocess, to_int8

        rgb = decode_image(data).rgb
        crop = device_preprocess(rgb, self.size, self.color)
        return crop, to_int8(crop).tobytes()

    def scores(self, x: bytes) -> list[int]:
        with self._lock:
            return self._ref.scores(x)

    def answer(self, scores, label: int | None = None) -> dict:
        """Scores as the page shows them: raw int8, probability, label."""
        scores = [int(s) for s in scores]
        if label is None:
            label = max(range(len(scores)), key=lambda i: (scores[i], -i))
        return {"label": label, "name": self.label_name(label), "scores": scores,
                "probs": [round((s - self.zero_point) * self.scale, 4) for s in scores]}

    def label_name(self, i: int) -> str:
        return self.labels[i] if 0 <= i < len(self.labels) else str(i)


def create_app(run: Path | None = None, link=None, try_model: TryModel | None = None):
    """Build the app.

    Args:
        run: the run folder the report and try-it pages read (``None``: those pages say so).
        link: a started :class:`facemask_edge.view.board_link.BoardLink`, or ``None`` (no board).
        try_model: the model for try-it (default: loaded from ``run`` when it has one).
    """
    from flask import Flask, abort, jsonify, render_template, request, send_file

    from facemask_edge.view.report import load_report

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_UPLOAD_BYTES
    run = Path(run).resolve() if run else None
    state = {"try": try_model, "try_error": None}
    thumbs_cache: dict = {}

    def model() -> TryModel | None:
        if state["try"] is None and state["try_error"] is None and run is not None:
            try:
                state["try"] = TryModel(run)
            except FacemaskError as exc:
                state["try_error"] = str(exc)
        return state["try"]

    def labels() -> list[str]:
        m = model()
        return m.labels if m else []

    @app.errorhandler(413)
    def too_large(_):
        return jsonify(error=f"the file is too large (at most {MAX_UPLOAD_BYTES // (1024 * 1024)} MB)"), 413

    @app.route("/")
    def index():
        return render_template("live.html", page="live", run=run, board=link is not None)

    @app.route("/live")
    def live():
        return render_template("live.html", page="live", run=run, board=link is not None)

    @app.route("/api/live")
    def api_live():
        after = request.args.get("after", default=0, type=int)
        if link is None:
            return jsonify(status="no board", message="no board: start with --device PORT",
                           frames=[], received=0)
        snap = link.snapshot(after)
        m = model()
        frames = []
        for f in snap["frames"][-10:]:
            cf = f.frame
            ans = m.answer(cf.scores, cf.label) if m else {
                "label": cf.label, "name": str(cf.label), "scores": list(cf.scores), "probs": []}
            frames.append({"n": f.n, "t": f.received, "board_frame": cf.frame, "micros": cf.micros,
                           "image": png_data_url(cf.rgb()), **ans})
        snap["frames"] = frames
        return jsonify(snap)

    @app.route("/report")
    def report():
        if run is None:
            return render_template("report.html", page="report", run=None, rep=None)
        rep = load_report(run)
        thumbs_cache["list"] = rep.thumbs
        return render_template("report.html", page="report", run=run, rep=rep)

    @app.route("/run/<path:rel>")
    def run_file(rel):
        # Only the run's own pictures, and nothing outside the run folder.
        if run is None or not rel.lower().endswith(".png"):
            abort(404)
        path = (run / rel).resolve()
        if not path.is_relative_to(run) or not path.is_file():
            abort(404)
        return send_file(path, mimetype="image/png")

    @app.route("/thumb/<int:i>")
    def thumb(i):
        items = thumbs_cache.get("list")
        if items is None:
            items = thumbs_cache["list"] = load_report(run).thumbs if run else []
        if not 0 <= i < len(items):
            abort(404)
        from PIL import Image

        from facemask_edge.data.images import decode_image

        try:
            rgb = decode_image(items[i].path).rgb
        except (ValueError, OSError):
            abort(404)
        img = Image.fromarray(rgb)
        img.thumbnail((128, 128))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        buf.seek(0)
        return send_file(buf, mimetype="image/png")

    @app.route("/try")
    def try_page():
        m = model()
        return render_template("try.html", page="try", run=run, board=link is not None,
                               model=m, model_error=state["try_error"])

    @app.route("/api/try", methods=["POST"])
    def api_try():
        m = model()
        if m is None:
            return jsonify(error=state["try_error"] or "no run given: facemask-edge view RUN"), 400
        f = request.files.get("image")
        if f is None:
            return jsonify(error="no file: choose a photo first"), 400
        data = f.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            return too_large(None)
        if not data:
            return jsonify(error="the file is empty"), 400
        try:
            crop, x = m.preprocess(data)
        except ValueError as exc:
            why = str(exc)
            return jsonify(error=why if why.startswith("not an image") else f"not an image: {why}"), 400
        host = m.answer(m.scores(x))
        out = {"crop": png_data_url(crop if crop.shape[-1] == 3 else np.repeat(crop, 3, axis=2)),
               "size": m.size, "host": host}
        if request.form.get("board"):
            if link is None:
                out["board_error"] = "no board: start the server with --device PORT"
            else:
                try:
                    r = link.classify(x)
                    out["board"] = {**m.answer(r.scores, r.label), "micros": r.micros}
                except FacemaskError as exc:
                    out["board_error"] = exc.message
        return jsonify(out)

    app.jinja_env.globals["labels"] = labels
    return app
