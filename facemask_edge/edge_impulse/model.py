"""Bring your own model to Edge Impulse: profile it and get a deployable library back.

Both go through the SDK (``ei.model.profile`` / ``ei.model.deploy``), which uploads the run's
``model_int8.tflite`` as a pretrained model, waits for the studio jobs and returns the profile or
the built library. We describe the model to Edge Impulse the way our firmware uses it: image input
with the scaling its int8 input quantization implies (scale 1/255, zero point -128 means pixels in
0..1), classification output with the run's labels in output order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from facemask_edge.artifacts.tflite import Tensor, read_tflite
from facemask_edge.edge_impulse.config import (KEY_HINT, EIConfig, RedirectRefused, sdk_settings,
                                               unreachable)
from facemask_edge.edge_impulse.redact import redact, redact_clip, sanitized
from facemask_edge.errors import EdgeImpulseError, ModelError

__all__ = ["RunModel", "load_run_model", "profile_model", "deploy_model", "comparison_lines",
           "our_figures"]

log = logging.getLogger(__name__)


@dataclass
class RunModel:
    """What Edge Impulse needs to know about a run's int8 model."""

    run_dir: Path
    path: Path
    labels: list[str]
    scaling: str  # "0..1" or "0..255"
    input_shape: list[int]
    output_classes: int
    sha256: str


def _scaling(inp: Tensor, path: Path) -> str:
    if inp.dtype not in ("int8", "uint8") or inp.scale is None or inp.zero_point is None:
        raise ModelError(f"{path.name} has a {inp.dtype} input, not a quantized int8 one",
                         "convert the run to full int8: facemask-edge convert RUN_DIR")
    qmin = -128 if inp.dtype == "int8" else 0
    lo = inp.scale * (qmin - inp.zero_point)
    hi = inp.scale * (qmin + 255 - inp.zero_point)
    if abs(lo) < 1e-3 and abs(hi - 1.0) < 1e-2:
        return "0..1"
    if abs(lo) < 0.5 and abs(hi - 255.0) < 2.5:
        return "0..255"
    raise ModelError(f"{path.name} input quantization covers {lo:.3g}..{hi:.3g}; Edge Impulse "
                     "image inputs are 0..1 or 0..255", "convert with the standard input scaling")


def load_run_model(run_dir: str | Path) -> RunModel:
    """Describe the run's shipped model (``Run.shipped``) the way Edge Impulse needs it.

    Raises:
        ModelError: no usable shipped model, no labels, or labels that do not match the outputs.
    """
    from facemask_edge.artifacts.run import LABELS, Run

    run = Run(run_dir)
    m = run.shipped()  # missing, damaged, replaced or stale: one error line
    labels = run.labels if run.exists(LABELS) else m.labels
    if not labels:
        raise ModelError(f"no labels for {m.path}", f"{run.path} needs labels.txt (one class per line)")
    info = read_tflite(m.data, name=str(m.path))
    inp, out = info.inputs[0], info.outputs[0]
    classes = out.shape[-1] if out.shape else 0
    if classes != len(labels):
        raise ModelError(f"{m.path.name} has {classes} outputs but labels.txt lists {len(labels)} "
                         "classes", "use the labels.txt of the run that made the model")
    return RunModel(run.path, m.path, labels, _scaling(inp, m.path), list(inp.shape), classes, m.sha256)


def our_figures(run_dir: Path) -> dict[str, dict]:
    """Our own figures: ``profile_<board>.json`` per board, and the model card's."""
    out: dict[str, dict] = {}
    for p in sorted(Path(run_dir).glob("profile_*.json")):
        try:
            out[p.stem[len("profile_"):]] = json.loads(p.read_text())
        except ValueError:
            continue
    from facemask_edge.artifacts.run import Run

    try:
        c = Run(run_dir).shipped().card
        out["model_card"] = {"arena_bytes": c.get("arena_bytes"), "flash_bytes": c.get("flatbuffer_bytes")}
    except ModelError:
        pass
    return out


# -- calling the SDK --------------------------------------------------------------------------

def _sdk_message(exc: BaseException) -> str:
    """The SDK wraps messages in dashes and links; keep the message."""
    text = str(exc)
    if "----------------" in text:
        parts = text.split("----------------")
        if len(parts) >= 3:
            text = parts[1]
    return redact_clip(text, 500)


def _transient(exc: BaseException) -> bool:
    import socket

    import urllib3.exceptions as u3
    from edgeimpulse_api.exceptions import ApiException

    if isinstance(exc, RedirectRefused):
        return False
    if isinstance(exc, ApiException):
        return exc.status in (408, 429, 500, 502, 503, 504)
    return isinstance(exc, (u3.HTTPError, socket.timeout, ConnectionError, TimeoutError))


def _retry_after(exc: BaseException) -> float | None:
    headers = getattr(exc, "headers", None)
    try:
        value = headers.get("Retry-After") if headers is not None else None
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _translate(exc: BaseException, cfg: EIConfig, what: str) -> EdgeImpulseError:
    import urllib3.exceptions as u3
    from edgeimpulse import exceptions as eix
    from edgeimpulse_api.exceptions import ApiException

    if isinstance(exc, RedirectRefused):
        return exc.error
    if isinstance(exc, ApiException):
        body = ""
        try:
            body = json.loads(exc.body).get("error", "") if exc.body else ""
        except (ValueError, AttributeError, TypeError):
            body = exc.body or ""
        body = redact_clip(body)  # mask, then cut: a key across the cut must not leak its head
        if exc.status in (401, 403):
            err = EdgeImpulseError(f"Edge Impulse rejected the API key ({exc.status}: "
                                   f"{body or exc.reason})", KEY_HINT)
        else:
            err = EdgeImpulseError(f"Edge Impulse API answered {exc.status} during {what} "
                                   f"({body or exc.reason})", "try again later")
    elif isinstance(exc, eix.InvalidDeviceException):
        err = EdgeImpulseError(f"Edge Impulse has no profiling device {exc.device!r}",
                               f"use --device with one of: {', '.join(exc.profile_devices)}")
    elif isinstance(exc, eix.InvalidTargetException):
        err = EdgeImpulseError(f"Edge Impulse has no deployment target {exc.deploy_target!r} "
                               "for this project", f"use --target with one of: "
                                                   f"{', '.join(exc.target_names)}")
    elif isinstance(exc, eix.TimeoutException):
        err = EdgeImpulseError(f"Edge Impulse {what} job did not finish in time",
                               "raise --job-timeout, or try again later")
    elif isinstance(exc, eix.EdgeImpulseException):
        err = EdgeImpulseError(f"Edge Impulse {what} failed: {_sdk_message(exc)}")
    elif isinstance(exc, (u3.HTTPError, OSError)):
        err = unreachable("API", cfg.api_endpoint, exc, cfg.timeout)
    else:
        err = EdgeImpulseError(f"Edge Impulse {what} failed: "
                               f"{redact_clip(type(exc).__name__ + ': ' + str(exc), 300)}")
    return err


def _call(cfg: EIConfig, what: str, fn, attempts: int = 3):
    """Run an SDK call; retry it whole on 429/5xx/network errors (the upload is idempotent:
    the project's pretrained model is replaced)."""
    from facemask_edge.edge_impulse.config import project_for_key

    project_for_key(cfg)  # bad key / unreachable API: one clear line, within the timeout
    for attempt in range(1, attempts + 1):
        try:
            with sdk_settings(cfg) as ei:
                return fn(ei)
        except Exception as exc:  # the SDK raises many types; all become one EdgeImpulseError
            if attempt < attempts and _transient(exc):
                delay = _retry_after(exc) or min(10.0, 0.5 * 2 ** (attempt - 1))
                log.info("Edge Impulse %s: %s; retrying in %.1f s", what,
                         redact(type(exc).__name__), delay)
                time.sleep(min(delay, 60.0))
                continue
            raise _translate(exc, cfg, what) from sanitized(exc)


def profile_model(cfg: EIConfig, run_dir: str | Path, device: str | None = None,
                  job_timeout: float = 900.0) -> dict:
    """Profile the run's int8 model on Edge Impulse; save and return the answer.

    Writes ``RUN_DIR/ei_profile.json``: the device, Edge Impulse's profile (as the API returns
    it), and our own figures from the run for comparison.
    """
    m = load_run_model(run_dir)
    resp = _call(cfg, "profiling", lambda ei: ei.model.profile(model=str(m.path), device=device,
                                                               timeout_sec=job_timeout))
    result = {"schema": 1, "model": m.path.name, "model_sha256": m.sha256, "device": device,
              "api_endpoint": cfg.api_endpoint, "edge_impulse": resp.to_dict(),
              "ours": our_figures(m.run_dir),
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _write_json(m.run_dir / "ei_profile.json", result)
    return result


def deploy_model(cfg: EIConfig, run_dir: str | Path, target: str = "arduino",
                 engine: str = "tflite", job_timeout: float = 900.0) -> Path:
    """Build a deployable library of the run's int8 model on Edge Impulse and save it.

    Returns:
        ``RUN_DIR/ei_<target>_<engine>.zip``; ``RUN_DIR/ei_deploy.json`` describes it.
    """
    m = load_run_model(run_dir)

    def go(ei):
        from edgeimpulse.model.input_type import ImageInput
        from edgeimpulse.model.output_type import Classification

        return ei.model.deploy(model=str(m.path), model_output_type=Classification(m.labels),
                               model_input_type=ImageInput(scaling_range=m.scaling),
                               deploy_model_type="int8", engine=engine, deploy_target=target,
                               output_directory=None, timeout_sec=job_timeout)

    data = _call(cfg, "deployment", go).getvalue()
    import io

    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise EdgeImpulseError(f"Edge Impulse returned {len(data)} bytes that are not a zip",
                               "try again, or build the deployment in Studio")
    out = m.run_dir / f"ei_{target}_{engine}.zip"
    tmp = out.with_suffix(".zip.part")
    tmp.write_bytes(data)
    tmp.replace(out)
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
    _write_json(m.run_dir / "ei_deploy.json", {
        "schema": 1, "zip": out.name, "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(), "files": len(names), "target": target,
        "engine": engine, "model_type": "int8", "model": m.path.name, "model_sha256": m.sha256,
        "labels": m.labels, "input_scaling": m.scaling, "api_endpoint": cfg.api_endpoint,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return out


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    tmp.replace(path)


# -- printing ---------------------------------------------------------------------------------

def _kib(v) -> str:
    return "-" if v is None else f"{v / 1024:.1f} KiB"


def _ms(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return f"{v[0]:.0f}-{v[1]:.0f} ms" if v[0] != v[1] else f"{v[0]:.0f} ms"
    return f"{v:.0f} ms"


def comparison_lines(result: dict) -> list[str]:
    """Edge Impulse's RAM/flash/latency beside ours, as aligned text lines."""
    ei = result["edge_impulse"]
    info = ((ei.get("model") or {}).get("profileInfo") or {})
    device = result.get("device")
    cols: list[tuple[str, dict]] = []  # (title, {"arena","ram","flash","latency"})
    variant = None
    for v in ("int8", "float32"):
        if device and info.get(v):
            variant = v
            d = info[v]
            mem = d.get("memory") or {}
            for engine, key in (("TFLM", "tflite"), ("EON", "eon")):
                if mem.get(key):
                    cols.append((f"Edge Impulse {engine}",
                                 {"arena": mem[key].get("arenaSize"), "ram": mem[key].get("ram"),
                                  "flash": mem[key].get("rom"),
                                  "latency": d.get("timePerInferenceMs") if key == "tflite"
                                  else None}))
            break
    if not cols and info.get("table"):
        for key, title in (("lowEndMcu", "EI low-end MCU"), ("highEndMcu", "EI high-end MCU")):
            t = info["table"].get(key) or {}
            mem = (t.get("memory") or {}).get("tflite") or {}
            cols.append((title, {"ram": mem.get("ram"), "flash": mem.get("rom"),
                                 "latency": t.get("timePerInferenceMs")}))
    for board, fig in (result.get("ours") or {}).items():
        if board == "model_card":
            continue
        cols.append((f"facemask-edge {board}",
                     {"arena": fig.get("arena_bytes"), "ram": fig.get("arena_with_margin_bytes"),
                      "flash": fig.get("flash_bytes"), "latency": fig.get("latency_ms")}))
    card = (result.get("ours") or {}).get("model_card")
    if card and not any(t.startswith("facemask-edge") for t, _ in cols):
        cols.append(("facemask-edge model card", {"arena": card.get("arena_bytes"),
                                                  "flash": card.get("flash_bytes")}))
    where = f"on {device}" + (f" ({variant})" if variant else "") if device else \
        "across Edge Impulse's device classes"
    lines = [f"Edge Impulse profile of {result['model']} {where}"]
    if not cols:
        return lines + ["  (no figures in the answer)"]
    rows = [("arena", "Tensor arena", _kib), ("ram", "RAM", _kib), ("flash", "Flash/ROM", _kib),
            ("latency", "Latency", _ms)]
    width = max(14, *(len(t) + 2 for t, _ in cols))
    lines.append((" " * 16 + "".join(t.ljust(width) for t, _ in cols)).rstrip())
    for key, title, fmt in rows:
        values = [c.get(key) for _, c in cols]
        if all(v is None for v in values):
            continue
        lines.append((f"  {title:<14}" + "".join(fmt(v).ljust(width) for v in values)).rstrip())
    lines.append("  (Edge Impulse RAM and ROM include its runtime; ours: arena, arena + margin, "
                 "model flash of our firmware)")
    return lines
