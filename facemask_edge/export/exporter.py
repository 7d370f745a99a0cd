"""Export a converted run as firmware: a board sketch with its generated sources, or an
Arduino library zip.

Both go to one place by default, the run's ``export/`` folder (``RUN/export/<board>/`` for a
sketch, ``RUN/export/FacemaskEdge_<board>.zip`` for a library), for ``export``, ``flash RUN``
and the pipeline alike: the repository's ``firmware/`` tree is only read (the hand-written
sketch from the board's entry in :mod:`facemask_edge.boards`, and ``firmware/common``), never
written, unless ``--out`` says so. An exported sketch looks like this (``src/`` is written by
the exporter only)::

    RUN/export/nano33ble/
      nano33ble.ino            hand-written (copied): camera, LED, serial, protocol
      src/facemask_edge.h      generated umbrella header the sketch includes
      src/model_data.cc/.h     the flatbuffer as alignas(16) g_facemask_model_data[]
      src/model_settings.h     input size/colour, labels, quantization, arena, sha256, board
      src/model_ops.h          MicroMutableOpResolver<N> with exactly the model's ops
      src/fe_*.{h,c,cc}        copies of firmware/common (Arduino compiles only the sketch folder)
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from facemask_edge import __version__
from facemask_edge.artifacts.run import SHIPPED, Run
from facemask_edge.artifacts.tflite import TfliteModel, read_tflite
from facemask_edge.boards import Board, get_board
from facemask_edge.device.framing import MAX_CLASSES
from facemask_edge.errors import BudgetError, ConversionError, FacemaskError, ModelError
from facemask_edge.export import generate
from facemask_edge.paths import firmware_dir

__all__ = ["FORMATS", "ExportResult", "Budget", "check_budget",
           "render_sources", "sketch_template", "default_export_dir", "export_run"]

FORMATS = ("sketch", "arduino-library")

UMBRELLA = "facemask_edge.h"
_SKETCH_INCLUDE = f'#include "src/{UMBRELLA}"'
_GENERATED = ("model_data.cc", "model_data.h", "model_settings.h", "model_ops.h", UMBRELLA)
_SOURCE_SUFFIXES = (".h", ".c", ".cc", ".cpp")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Budget:
    """Whether the model fits a board, and the arena to allocate."""

    fits: bool
    arena_bytes: int  # what TFLM used on the host
    arena_with_margin_bytes: int  # what the firmware allocates
    source: str  # where the figures come from
    reason: str = ""  # why it does not fit


@dataclass
class ExportResult:
    """What ``export_run`` wrote."""

    board: str
    format: str
    path: Path  # sketch folder or zip file
    files: list[Path] = field(default_factory=list)  # files written or rewritten (sketch) / zip entries
    ops: tuple[str, ...] = ()
    model_bytes: int = 0
    budget: Budget | None = None
    sha256: str = ""


@dataclass(frozen=True)
class _Run:
    path: Path
    model: bytes
    sha256: str
    card: dict
    info: TfliteModel


def _shipped_for_firmware(run_dir: str | Path) -> _Run:
    """The run's shipped model (``Run.shipped``), checked to be what the firmware feeds.

    Raises:
        ModelError: see ``Run.shipped`` (missing, not the card's file, stale, not TFLite).
        ConversionError: the model is not the full-int8 model the firmware feeds.
    """
    shipped = Run(run_dir).shipped()  # missing, damaged, replaced or stale: one error line
    run, model, sha, card = Path(run_dir), shipped.data, shipped.sha256, shipped.card
    labels = shipped.labels
    size, color = int(card["input"]["size"]), str(card["input"]["color"])
    info = read_tflite(model, name=str(shipped.path))
    if info.custom_ops:
        raise ConversionError(f"the model uses custom ops ({', '.join(info.custom_ops)})",
                              "convert with builtin ops only: boards have no custom kernels")
    if not 1 <= len(labels) <= MAX_CLASSES:  # FE_MAX_CLASSES: the firmware's RESULT holds no more
        raise ConversionError(f"the model has {len(labels)} classes; the firmware carries at most {MAX_CLASSES}",
                              f"train with 1 to {MAX_CLASSES} classes (FE_MAX_CLASSES in firmware/common/fe_protocol.h)")
    if len(info.inputs) != 1 or len(info.outputs) != 1:
        raise ConversionError(f"the model has {len(info.inputs)} inputs and {len(info.outputs)} outputs",
                              "the firmware runs one image in, one score vector out")
    inp, out = info.inputs[0], info.outputs[0]
    channels = 1 if color == "grayscale" else 3
    if inp.dtype != "int8" or inp.shape != (1, size, size, channels):
        raise ConversionError(
            f"model input is {inp.dtype} {list(inp.shape)}, the card says int8 [1, {size}, {size}, {channels}]",
            "convert with int8 input (`facemask-edge convert`)")
    if inp.zero_point != -128 or inp.scale is None or abs(inp.scale * 255.0 - 1.0) > 1e-3:
        raise ConversionError(
            f"model input quantization is scale {inp.scale}, zero point {inp.zero_point}",
            "the firmware feeds pixel - 128: convert with inputs in [0, 1] (scale 1/255, zero point -128)")
    if out.dtype != "int8" or out.shape != (1, len(labels)) or out.scale is None:
        raise ConversionError(f"model output is {out.dtype} {list(out.shape)} for {len(labels)} labels",
                              "convert with an int8 [1, classes] output")
    return _Run(path=run, model=model, sha256=sha, card=card, info=info)


def _round16(n: int) -> int:
    return (n + 15) // 16 * 16


def _estimate_budget(card: dict, board: Board, model_bytes: int) -> Budget:
    """Stand-in for ``facemask_edge.profile`` while it is not there: the card's measured arena,
    10 % (at least 1 KiB) margin, and the board registry's RAM and flash budgets."""
    arena = int(card.get("arena_bytes") or 0)
    if arena <= 0:
        raise ModelError("model_card.json has no arena_bytes", "re-run `facemask-edge convert`")
    with_margin = _round16(arena + max(arena // 10, 1024))
    internal, psram = board.arena_ram_bytes, board.arena_psram_bytes
    flash_need = model_bytes + board.reserved_flash_bytes
    reason = ""
    if with_margin > internal and with_margin > psram:
        where = f"{internal} B of RAM" + (f" or {psram} B of PSRAM" if psram else "")
        reason = (f"arena {with_margin} B (with margin) does not fit the {where} left "
                  f"after the core ({board.reserved_ram_bytes} B) and the camera frame ({board.frame_bytes} B)")
    elif flash_need > board.flash_bytes:
        reason = (f"model {model_bytes} B + firmware {board.reserved_flash_bytes} B exceeds "
                  f"{board.flash_bytes} B of flash")
    return Budget(fits=not reason, arena_bytes=arena, arena_with_margin_bytes=with_margin,
                  source="model_card.json arena_bytes + board registry (facemask_edge.profile not available)",
                  reason=reason)


def check_budget(run: _Run, board: Board) -> Budget:
    """Ask ``facemask_edge.profile`` whether the model fits (estimate from the card without it)."""
    try:
        from facemask_edge.profile import profile_model  # type: ignore[attr-defined]
    except ImportError:
        return _estimate_budget(run.card, board, len(run.model))
    p = profile_model(Run(run.path).file(SHIPPED), board)
    arena = int(p["arena_bytes"])
    return Budget(fits=bool(p["fits"]), arena_bytes=arena,
                  arena_with_margin_bytes=_round16(int(p.get("arena_with_margin_bytes") or arena)),
                  source=f"facemask-edge profile --board {board.name}",
                  reason=str(p.get("reason") or p.get("why") or "profile says it does not fit"))


def _umbrella(common_headers: list[str]) -> str:
    g = "FACEMASK_EDGE_UMBRELLA_H_"
    includes = "".join(f'#include "{h}"\n' for h in
                       ["model_settings.h", "model_data.h", "model_ops.h", *common_headers])
    return (generate._HEADER.format(version=__version__)
            + "// Everything the sketch needs from the model and firmware/common.\n"
            f"#ifndef {g}\n#define {g}\n\n{includes}\n#endif  // {g}\n")


def render_sources(run: _Run, board: Board, budget: Budget) -> dict[str, bytes]:
    """All files of a sketch's ``src/`` folder: generated ones and copies of firmware/common."""
    common = firmware_dir() / "common"
    copies = {p.name: p.read_bytes() for p in sorted(common.iterdir())
              if p.is_file() and p.suffix in _SOURCE_SUFFIXES}
    if "fe_protocol.c" not in copies:
        raise FacemaskError("firmware/common/fe_protocol.c is missing",
                            "the sketches need the protocol implementation; update the checkout")
    headers = sorted(n for n in copies if n.endswith(".h") and n != UMBRELLA)
    run_name = _run_name(run)
    files = {
        "model_data.cc": generate.model_data_cc(run.model, run.sha256),
        "model_data.h": generate.model_data_h(),
        "model_settings.h": generate.model_settings_h(
            run.card, run.info, board, sha256=run.sha256, run=run_name, model_bytes=len(run.model),
            arena_bytes=budget.arena_bytes, arena_size=budget.arena_with_margin_bytes,
            budget_source=budget.source),
        "model_ops.h": generate.model_ops_h(run.info, run.sha256),
        UMBRELLA: _umbrella(headers),
    }
    out = dict(copies)
    out.update({k: v.encode() for k, v in files.items()})
    return dict(sorted(out.items()))


def _write_if_changed(path: Path, data: bytes) -> bool:
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return True


def sketch_template(board: str | Board) -> Path:
    """The board's hand-written sketch folder: its entry's ``sketch``, or ``firmware/boards/<name>``.

    Raises:
        FacemaskError: the folder has no ``<name>.ino``.
    """
    b = get_board(board)
    sketch = Path(b.sketch) if b.sketch is not None else firmware_dir() / "boards" / b.name
    ino = sketch / f"{b.name}.ino"
    if not ino.is_file():
        raise FacemaskError(f"sketch {ino} not found",
                            "update the facemask-edge checkout" if b.sketch is None
                            else f"give board {b.name!r} a sketch folder with {b.name}.ino")
    return sketch


def default_export_dir(run_dir: str | Path) -> Path:
    """Where exports go unless ``out`` is given: ``RUN_DIR/export`` (a sketch in ``<board>/``)."""
    return Path(run_dir) / "export"


def _sketch_files(template: Path) -> dict[str, bytes]:
    """Hand-written files at the sketch's top level (the .ino and any board headers)."""
    return {p.name: p.read_bytes() for p in sorted(template.iterdir())
            if p.is_file() and p.suffix in (".ino", *_SOURCE_SUFFIXES)}


def _write_sketch(target: Path, template: Path, sources: dict[str, bytes]) -> list[Path]:
    written = []
    if target.resolve() != template.resolve():
        for name, data in _sketch_files(template).items():
            if _write_if_changed(target / name, data):
                written.append(target / name)
    src = target / "src"
    if src.is_dir():  # src/ belongs to the exporter: drop sources an older export left behind
        for stale in src.iterdir():
            if stale.is_file() and stale.suffix in _SOURCE_SUFFIXES and stale.name not in sources:
                stale.unlink()
    for name, data in sources.items():
        if _write_if_changed(src / name, data):
            written.append(src / name)
    return written


def _library_properties(board: Board, run: _Run, library: str) -> str:
    deps = ", ".join(f"{name} (={version})" for name, version in board.libraries)
    run_name = _run_name(run)
    lines = [
        f"name={library}",
        f"version={__version__}",
        "author=facemask-edge",
        "maintainer=facemask-edge",
        f"sentence=Face-mask classifier {run_name} (sha256 {run.sha256[:12]}) for {board.title}.",
        "paragraph=Generated by facemask-edge export: int8 model array, model settings, op resolver, "
        "camera preprocessing, serial validation protocol and an example sketch.",
        "category=Data Processing",
        "url=https://www.tensorflow.org/lite/microcontrollers",
        f"architectures={board.arduino_arch}",
        f"includes={UMBRELLA}",
    ]
    if deps:
        lines.append(f"depends={deps}")
    return "\n".join(lines) + "\n"


def _zip_bytes(entries: dict[str, bytes]) -> bytes:
    """A zip whose bytes depend only on the entries: fixed dates, modes and order."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in sorted(entries):
            zi = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = 0o644 << 16
            zi.create_system = 3
            zf.writestr(zi, entries[name], compresslevel=9)
    return buf.getvalue()


def export_run(run_dir: str | Path, board: str, out: str | Path | None = None,
               fmt: str = "sketch") -> ExportResult:
    """Generate the firmware sources of a converted run for one board.

    Args:
        run_dir: run folder with ``model_int8.tflite`` and ``model_card.json``.
        board: a registered board name (:mod:`facemask_edge.boards`), e.g. ``nano33ble``.
        out: the folder that receives a complete ``<board>/`` sketch, or the zip (default for
            both: ``RUN_DIR/export``).
        fmt: ``sketch`` or ``arduino-library``.

    Returns:
        What was written. Exporting the same run twice writes identical bytes.

    Raises:
        BudgetError: the profile says the model does not fit the board.
    """
    if fmt not in FORMATS:
        raise FacemaskError(f"unknown export format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    b = get_board(board)
    run = _shipped_for_firmware(run_dir)
    missing = {op: why for op, why in b.unsupported_ops.items() if op in run.info.op_names}
    if missing:
        raise ConversionError(f"the model uses {', '.join(sorted(missing))}, which {b.title} cannot run: "
                              + "; ".join(missing.values()),
                              "rebuild the model without that layer (e.g. a matmul between activations), "
                              "or export for a board whose library has it (esp32cam)")
    budget = check_budget(run, b)
    if not budget.fits:
        raise BudgetError(f"the model does not fit {b.title}: {budget.reason}",
                          "train a smaller model (lower --alpha or --size, or --color grayscale) "
                          f"and check it with `facemask-edge profile RUN --board {b.name}`")
    sources = render_sources(run, b, budget)
    template = sketch_template(b)
    out_dir = Path(out) if out is not None else default_export_dir(run.path)
    result = ExportResult(board=b.name, format=fmt, path=out_dir, ops=run.info.op_names,
                          model_bytes=len(run.model), budget=budget, sha256=run.sha256)
    if fmt == "sketch":
        target = out_dir / b.name
        result.path = target
        result.files = _write_sketch(target, template, sources)
        return result

    library = f"FacemaskEdge_{b.name}"
    entries = {f"{library}/src/{name}": data for name, data in sources.items()}
    entries[f"{library}/library.properties"] = _library_properties(b, run, library).encode()
    for name, data in _sketch_files(template).items():
        if name.endswith(".ino"):
            text = data.decode()
            if _SKETCH_INCLUDE not in text:
                raise FacemaskError(f"{name} does not include {_SKETCH_INCLUDE!r}",
                                    "keep that include line in the sketch")
            data = text.replace(_SKETCH_INCLUDE, f"#include <{UMBRELLA}>").encode()
        entries[f"{library}/examples/{b.name}/{name}"] = data
    zip_path = out_dir / f"{library}.zip"
    _write_if_changed(zip_path, _zip_bytes(entries))
    result.path = zip_path
    result.files = [Path(name) for name in sorted(entries)]
    return result


def _run_name(run) -> str:
    """The run's folder name (the card may hold the path it was trained to): a device prints it,
    and a path would say where the user keeps their files and outgrow the firmware's line."""
    return Path(str(run.card.get("run") or run.path.name)).name or run.path.name
