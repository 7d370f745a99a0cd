"""Bring your own model to Edge Impulse: profile it and get a deployable library back.

Both make the calls of the SDK's ``ei.model.profile`` / ``ei.model.deploy`` (upload the run's
``model_int8.tflite`` as a pretrained model, wait for the studio jobs, fetch the profile or the
built library) through :mod:`.studio`, adding what the SDK leaves out: the impulse to use
(never the user's default impulse unasked), the resize mode, each job's outcome and log, the
proxy variables and one deadline for the whole command. We describe the model to Edge Impulse the way our firmware uses it: image input
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
from facemask_edge.edge_impulse.config import (KEY_HINT, Deadline, EIConfig, RedirectRefused,
                                               unreachable)
from facemask_edge.edge_impulse.redact import redact_clip
from facemask_edge.edge_impulse.studio import IMPULSE_NAME_PREFIX, Impulse, Studio
from facemask_edge.errors import EdgeImpulseError, ModelError

__all__ = ["RunModel", "load_run_model", "profile_model", "deploy_model", "comparison_lines",
           "our_figures", "choose_impulse", "save_request", "RESIZE_MODE"]

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


# -- talking to the studio API ----------------------------------------------------------------

#: Edge Impulse's resize mode for the toolkit's preprocessing: ``data/preprocess.py`` centre-crops
#: to a square of side ``min(H, W)`` and then resizes, which is Edge Impulse's ``fit-short``
#: ("fit the shortest axis", then crop the longer one; ``ImageInputResizeMode`` of
#: ``edgeimpulse_api``: squash, fit-short, fit-long, crop).
RESIZE_MODE = "fit-short"


def _translate(exc: BaseException, cfg: EIConfig, what: str) -> EdgeImpulseError:
    """One key-free :class:`EdgeImpulseError` for an exception from a studio call.

    Also takes the generated client's ``ApiException`` (``status``, ``reason``, ``body``) for
    callers that still use it.
    """
    if isinstance(exc, EdgeImpulseError):
        return exc
    if isinstance(exc, RedirectRefused):
        return exc.error
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        raw = getattr(exc, "body", None) or ""
        try:
            body = json.loads(raw).get("error", "") if raw else ""
        except (ValueError, AttributeError, TypeError):
            body = raw
        body = redact_clip(str(body or ""))  # mask, then cut: a key across the cut must not leak
        reason = redact_clip(str(getattr(exc, "reason", "") or ""))
        if status in (401, 403):
            return EdgeImpulseError(f"Edge Impulse rejected the API key ({status}: "
                                    f"{body or reason})", KEY_HINT)
        return EdgeImpulseError(f"Edge Impulse API answered {status} during {what} "
                                f"({body or reason})", "try again later")
    if isinstance(exc, OSError):
        return unreachable("API", cfg.api_endpoint, exc, cfg.timeout)
    return EdgeImpulseError(f"Edge Impulse {what} failed: "
                            f"{redact_clip(type(exc).__name__ + ': ' + str(exc), 300)}")


def choose_impulse(studio: Studio, impulse: int | None = None, new_impulse: bool = False,
                   yes: bool = False) -> Impulse | None:
    """Decide which impulse receives the model; never replace a user's impulse unasked.

    Every pretrained-model call without ``impulseId`` goes to the project's default impulse;
    one trained in Studio on the uploaded data would lose its model. So:

    - ``impulse``: that impulse (it must exist);
    - ``new_impulse``: a new, empty bring-your-own-model impulse named ``facemask-edge ...``;
    - no impulse in the project: a new one as well (so later runs recognise it as ours);
    - one of ours (named ``facemask-edge ...``) and no other: that one;
    - ``yes``: the default impulse (``None``: no ``impulseId`` sent);
    - otherwise: refuse, naming the impulse and the options.

    Returns:
        The impulse to use, or ``None`` for the default impulse.

    Raises:
        EdgeImpulseError: an unknown ``impulse``, or an existing impulse and no choice.
    """
    if impulse is not None and new_impulse:
        raise EdgeImpulseError("--impulse and --new-impulse both say where the model goes",
                               "use one of them")
    found = studio.impulses()
    pid = studio.project.id
    if impulse is not None:
        match = [i for i in found if i.id == impulse]
        if not match:
            known = ", ".join(f"{i.id} ({i.name})" for i in found) or "none"
            raise EdgeImpulseError(f"project {pid} has no impulse {impulse}",
                                   f"its impulses: {known}; or pass --new-impulse")
        return match[0]
    if new_impulse or not found:
        name = f"{IMPULSE_NAME_PREFIX} {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())}"
        created = studio.new_impulse(name)
        log.info("created impulse %s (%s) in project %s", created.id, created.name, pid)
        return created
    ours = [i for i in found if i.ours]
    if len(ours) == len(found) == 1:
        return ours[0]
    if yes:
        return None
    theirs = [i for i in found if not i.ours]
    first = theirs[0]
    more = f" and {len(theirs) - 1} more" if len(theirs) > 1 else ""
    mine = f" (facemask-edge's own: --impulse {ours[0].id})" if ours else ""
    raise EdgeImpulseError(
        f"project {pid} ({studio.project.name}) already has impulse {first.id} "
        f"'{redact_clip(first.name, 80)}'{more}; sending the model would replace the default "
        "impulse's model",
        f"pass --impulse {first.id} to replace it, --new-impulse to add a separate impulse, or "
        f"--yes to use the default impulse{mine}; best: a separate project (and key) for "
        "bring-your-own-model")


def _params(imp: Impulse | None) -> dict:
    return {"impulseId": imp.id} if imp is not None else {}


def _upload_model(studio: Studio, m: RunModel, imp: Impulse | None, device: str | None) -> None:
    """``POST /pretrained-model/upload`` (the SDK's multipart fields) and wait for the job."""
    form = {"modelFileName": m.path.name, "modelFileType": "tflite"}
    if device:
        form["device"] = device
    # Bytes, not a file handle: a retried request must send the whole model again.
    model = m.path.read_bytes()
    studio.start_and_wait("/pretrained-model/upload", "model upload", params=_params(imp),
                          files={"modelFile": (m.path.name, model, "application/octet-stream")},
                          data=form)


def _check_device(studio: Studio, device: str) -> None:
    devices = [mcu for mcu, _ in studio.devices()]
    if device not in devices:
        raise EdgeImpulseError(f"Edge Impulse has no profiling device {device!r}",
                               f"use --device with one of: {', '.join(devices)} "
                               "(facemask-edge ei devices lists them with names)")


def profile_model(cfg: EIConfig, run_dir: str | Path, device: str | None = None,
                  job_timeout: float | None = 900.0, impulse: int | None = None,
                  new_impulse: bool = False, yes: bool = False,
                  studio: Studio | None = None) -> dict:
    """Profile the run's int8 model on Edge Impulse; save and return the answer.

    ``job_timeout`` bounds the whole call (every request and job), not each job. Writes
    ``RUN_DIR/ei_profile.json``: the device, the impulse, Edge Impulse's profile (as the API
    returns it), and our own figures from the run for comparison.
    """
    m = load_run_model(run_dir)
    with studio or Studio(cfg, Deadline(job_timeout)) as st:
        if device:
            _check_device(st, device)
        imp = choose_impulse(st, impulse, new_impulse, yes)
        _upload_model(st, m, imp, device)
        st.start_and_wait("/pretrained-model/profile", "profiling", params=_params(imp))
        resp = st.get("/pretrained-model", "profile download", **_params(imp))
        project = st.project
    resp.pop("success", None)
    resp.pop("error", None)
    result = {"schema": 1, "model": m.path.name, "model_sha256": m.sha256, "device": device,
              "api_endpoint": cfg.api_endpoint, "project": project.id,
              "impulse": imp.id if imp else None, "edge_impulse": resp,
              "ours": our_figures(m.run_dir),
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _write_json(m.run_dir / "ei_profile.json", result)
    return result


def save_request(m: RunModel) -> dict:
    """The body of ``POST /pretrained-model/save``: image input with the run's scaling and the
    resize mode of our preprocessing, classification with the run's labels."""
    return {"input": {"inputType": "image", "inputScaling": m.scaling,
                      "resizeMode": RESIZE_MODE},
            "model": {"modelType": "classification", "labels": list(m.labels)}}


def deploy_model(cfg: EIConfig, run_dir: str | Path, target: str = "arduino",
                 engine: str = "tflite", job_timeout: float | None = 900.0,
                 impulse: int | None = None, new_impulse: bool = False, yes: bool = False,
                 studio: Studio | None = None) -> Path:
    """Build a deployable library of the run's int8 model on Edge Impulse and save it.

    The same calls as the SDK's ``ei.model.deploy`` (upload, model info, save parameters, build
    job, download), each with the chosen impulse's ``impulseId`` and with ``resizeMode``.

    Returns:
        ``RUN_DIR/ei_<target>_<engine>.zip``; ``RUN_DIR/ei_deploy.json`` describes it.
    """
    m = load_run_model(run_dir)
    with studio or Studio(cfg, Deadline(job_timeout)) as st:
        targets = {t["format"]: t for t in st.targets()}
        if target not in targets:
            raise EdgeImpulseError(f"Edge Impulse has no deployment target {target!r} for this "
                                   "project", f"use --target with one of: {', '.join(targets)}")
        engines = targets[target].get("supportedEngines")
        if isinstance(engines, list) and engines and engine not in engines:
            raise EdgeImpulseError(f"deployment target {target!r} does not support engine "
                                   f"{engine!r}", f"use --engine with one of: {', '.join(engines)}")
        imp = choose_impulse(st, impulse, new_impulse, yes)
        params = _params(imp)
        _upload_model(st, m, imp, None)
        info = st.get("/pretrained-model", "model check", **params)
        types = info.get("availableModelTypes") or []
        if "int8" not in types:
            raise EdgeImpulseError(f"Edge Impulse offers {types or 'no'} model types for "
                                   f"{m.path.name}, not int8", "convert the run to full int8")
        st.post("/pretrained-model/save", "model parameters", json=save_request(m),
                params=params)
        st.start_and_wait("/jobs/build-ondevice-model", "deployment",
                          json={"engine": engine, "modelType": "int8"},
                          params={"type": target, **params})
        data = st.request("GET", "/deployment/download", "download",
                          params={"type": target, "engine": engine, "modelType": "int8",
                                  **params}, raw=True).content
        project = st.project
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
        "labels": m.labels, "input_scaling": m.scaling, "resize_mode": RESIZE_MODE,
        "project": project.id, "impulse": imp.id if imp else None,
        "api_endpoint": cfg.api_endpoint,
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
