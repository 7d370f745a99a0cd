"""Classify photos with a run's shipped int8 model, on the host and optionally on a board.

The host answer is the board's own computation: every file is decoded as the data set is
(:func:`facemask_edge.data.images.decode_image`), preprocessed with the firmware's integer
pipeline (:func:`facemask_edge.data.preprocess.device_preprocess`, then ``pixel - 128``) and run
in tflite-micro, the interpreter the firmware links, so its label and scores are those
``evaluate`` reports for the same image. With a board session, the same int8 input bytes go
over the validation protocol and both answers are returned side by side.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facemask_edge.errors import DataError

__all__ = ["Prediction", "load_shipped_model", "expand_images", "predict_images", "predict_on_board"]


@dataclass
class Prediction:
    """One image's answer (or why there is none).

    Attributes:
        path: the file as given (or found in a given folder).
        label: the predicted class name (``None`` when ``error``).
        index: its output index.
        confidence: the dequantized score of that class (0..1).
        scores: dequantized score per class, in the model's output order.
        raw: the int8 outputs.
        error: why the file could not be classified.
        board: the board's answer for the same input (``label``, ``index``, ``confidence``,
            ``scores``, ``raw``, ``ms``, ``same_as_host``), when a board was asked.
    """

    path: str
    label: str | None = None
    index: int | None = None
    confidence: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    raw: list[int] = field(default_factory=list)
    error: str | None = None
    board: dict | None = None
    pixels: bytes | None = field(default=None, repr=False)  # the int8 input, as sent to a board

    def as_dict(self) -> dict:
        d = {"path": self.path}
        if self.error is not None:
            d["error"] = self.error
            return d
        d.update(label=self.label, index=self.index, confidence=self.confidence, scores=self.scores,
                 raw=self.raw)
        if self.board is not None:
            d["board"] = self.board
        return d


def load_shipped_model(run_dir: str | Path) -> tuple[bytes, dict]:
    """The run's shipped int8 model (``model_int8.tflite``) and its card, through the run loader.

    Raises:
        ModelError: the run is not converted, or its model is damaged, replaced or stale.
    """
    from facemask_edge.artifacts.run import Run

    m = Run(run_dir).shipped()
    return m.data, m.card


def expand_images(paths: list[str | Path]) -> list[Path]:
    """The files to classify: files as given, folders as every non-hidden file under them
    (sorted; whether a file is an image is for the decoder to say, as in a data set)."""
    from facemask_edge.data.ingest import _is_hidden

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += [f for f in sorted(p.rglob("*"))
                    if not any(_is_hidden(part) for part in f.relative_to(p).parts)
                    and (f.is_file() or not f.is_dir())]
        else:
            out.append(p)  # missing or unreadable: the per-file error says so
    return out


def _dequantize(raw, card: dict) -> np.ndarray:
    out = card["output"]
    return (np.asarray(raw, np.float64) - out["zero_point"]) * out["scale"]


def _answer(raw, card: dict) -> dict:
    labels = card["labels"]
    raw = [int(v) for v in raw]
    probs = _dequantize(raw, card)
    index = int(np.argmax(raw))  # the first of equal scores, as evaluate and validate count it
    return {"label": labels[index], "index": index, "confidence": round(float(probs[index]), 6),
            "scores": {c: round(float(p), 6) for c, p in zip(labels, probs)}, "raw": raw}


def predict_images(model: bytes, card: dict, files: list[Path], show_progress: bool = False
                   ) -> list[Prediction]:
    """Classify each file on the host in tflite-micro; a file that fails gets its ``error``.

    Args:
        model: the int8 ``.tflite`` bytes.
        card: its model card (input size and colour, labels, output quantization).
        files: image files (see :func:`expand_images`).
        show_progress: a bar (terminal) or periodic lines while classifying.
    """
    from contextlib import nullcontext

    from facemask_edge.convert.runtimes import TFLMRunner
    from facemask_edge.progress import progress

    inp = card["input"]
    size = int(inp.get("size") or inp["shape"][1])
    color = inp.get("color") or ("grayscale" if int(inp["shape"][-1]) == 1 else "rgb")
    runner = TFLMRunner(model)  # before the bar: it imports TensorFlow, which takes seconds
    out = []
    with (progress(f"classifying {len(files)} image(s)", total=len(files), transient=True)
          if show_progress else nullcontext()) as bar:
        for f in files:
            out.append(_predict_one(runner, card, f, size, color))
            if bar is not None:
                bar.advance()
    return out


def _predict_one(runner, card: dict, f: Path, size: int, color: str) -> Prediction:
    from facemask_edge.data.images import decode_image
    from facemask_edge.data.preprocess import device_preprocess, to_int8

    pred = Prediction(path=str(f))
    try:
        if not f.exists() and not f.is_symlink():
            raise ValueError("no such file")
        # Exactly data.ingest's decoding: the pixels evaluate and validate use for this file.
        x = to_int8(device_preprocess(decode_image(f).rgb, size, color))
    except Exception as exc:  # any file the decoder refuses is that file's error line
        pred.error = _reason(exc)
        return pred
    a = _answer(runner.run(x), card)
    pred.label, pred.index, pred.confidence = a["label"], a["index"], a["confidence"]
    pred.scores, pred.raw, pred.pixels = a["scores"], a["raw"], x.tobytes()
    return pred


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:  # unreadable: permission, a symlink loop...
        return exc.strerror
    if isinstance(exc, (ValueError, OSError)):  # the decoder's own reasons
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def predict_on_board(session, model: bytes, card: dict, predictions: list[Prediction]) -> None:
    """Send every classified image's int8 input to the board and attach its answer.

    Args:
        session: a :class:`~facemask_edge.device.session.BoardSession` on an open port (not yet
            handshaken); it is closed at the end.
        model: the shipped model's bytes: a board running another model is refused.
        card: its model card.
        predictions: from :func:`predict_images`; each one with pixels gets ``board``.

    Raises:
        DeviceError: the board does not answer or runs another model.
    """
    todo = [(i, p.pixels) for i, p in enumerate(predictions) if p.pixels is not None]
    if not todo:
        raise DataError("no image could be decoded, nothing to send to the board")
    shape = tuple(int(v) for v in card["input"]["shape"][1:])
    answers: dict[int, object] = {}
    try:
        session.handshake(expect_sha256=hashlib.sha256(model).hexdigest(), expect_shape=shape,
                          expect_classes=len(card["labels"]))
        session.stream(todo, lambda r: answers.setdefault(int(r.key), r))
    finally:
        session.close()
    for i, _ in todo:
        p, r = predictions[i], answers.get(i)
        if r is None:  # stream() returns only when every image has its result; never expected
            p.board = {"error": "no answer"}
            continue
        a = _answer(r.scores, card)
        a["ms"] = round(r.micros / 1000, 3)
        a["same_as_host"] = a["raw"] == p.raw
        p.board = a
