"""Pipeline options: the dataclass, board defaults, the demo preset, TOML files, and their merge."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path

from facemask_edge.errors import ConfigError, FacemaskError
from facemask_edge.options import check_fields, option
from facemask_edge.train.qat import QAT_EPOCHS, QAT_LR

STAGES = ("data", "train", "qat", "convert", "profile", "evaluate", "export", "validate")
DEMO_PER_CLASS = 100
_PATH_KEYS = ("data", "out", "reference", "weights", "teacher")


def _boards() -> tuple[str, ...]:
    from facemask_edge.boards import BOARDS

    return tuple(BOARDS)


def _export_formats() -> tuple[str, ...]:
    from facemask_edge.export.exporter import FORMATS

    return FORMATS


def _file_check(value: str) -> str | None:
    return None if Path(value).expanduser().is_file() else "an existing .tflite file (it is not there)"


def _data_check(value) -> str | None:
    """Every local data root must exist (an http(s) URL is fetched later by the data stage)."""
    paths = [value] if isinstance(value, str) else list(value)
    missing = [p for p in paths if not p.startswith(("http://", "https://")) and not Path(p).expanduser().exists()]
    return f"existing data folders or .zip files (does not exist: {', '.join(missing)})" if missing else None


@dataclass
class PipelineConfig:
    """Every pipeline option. ``train`` holds :class:`~facemask_edge.train.trainer.TrainConfig`
    fields (``data`` and ``out`` are filled in from here).

    The fields' metadata (:func:`facemask_edge.options.option`) is the one description of each
    option: the ``pipeline`` command's options and the check of ``--config`` files come from it.
    """

    CLI_COMMAND: typing.ClassVar[str] = "pipeline"

    out: str = option("", help="Run folder (created; re-running continues it). Default with --demo: "
                               "./facemask-edge-demo.")
    data: str | list[str] | None = option(None, check=_data_check, help="Data set: a folder with one sub-folder per class, a .zip "
                                                    "of one, or an http(s) URL of a zip; repeat it (a list in "
                                                    "--config) to merge several by class folder name. Default: "
                                                    "download the public Face-Mask-Detection data set once into "
                                                    "the user cache.")
    board: str = option("nano33ble", choices=_boards,
                        help="Target board; its defaults (model, input size) come from the sweep's "
                             "recommendation in facemask_edge/defaults.json.")
    port: str | None = option(None, help="Validate on the board at this port/URL; default: a simulated board.")
    train: dict = option(default_factory=dict, help="TrainConfig fields (a [train] table in --config).")
    qat_epochs: int = option(QAT_EPOCHS, help="Quantization-aware training epochs at most (0: post-training "
                                              "quantization only).")
    qat_lr: float = option(QAT_LR, help="Quantization-aware training learning rate.")
    representative: int = option(300, help="Calibration images from the train split (post-training "
                                           "quantization).")
    quantization: str = option("best", choices=("best", "qat", "ptq"),
                               help="Which int8 model to ship: best = PTQ or QAT, whichever agrees more with "
                                    "the float model on the validation split.")
    compare_ptq: bool = option(True, help="With --quantization qat, still convert PTQ for the evaluation.")
    reference: str | None = option(None, check=_file_check,
                                   help="Profile this .tflite alongside as the reference (e.g. "
                                        "vww_96_int8.tflite).")
    measure: bool = option(False, help="Also measure the latency on the emulated Cortex-M4 (the Nano's "
                                       "firmware under qemu-system-arm; needs arm-none-eabi-gcc and a "
                                       "TFLM tree, whose first build takes 10-30 min, then is cached).")
    tflm: str | None = option(None, help="TensorFlow Lite Micro tree for --measure (default: "
                                         "Chirale_TensorFlowLite in the Arduino libraries folder, or "
                                         "$FACEMASK_EDGE_TFLM).")
    validate_limit: int | None = option(None, cli="--limit", help="Validate only the first N test images.")
    validate_timeout: float = option(8.0, cli="--timeout", help="Seconds to wait for a board that does not answer.")
    baud: int = option(921600, help="UART speed of --port (USB CDC ignores it).")
    sim: str = option("subprocess", choices=("subprocess", "inprocess"),
                      help="Run the simulated board as its own process or in this one.")
    sim_baud: int = option(0, help="Pace the simulated board's link like a UART (0: unpaced, USB-CDC-like).")
    export_format: str = option("sketch", choices=_export_formats, cli="--format",
                                help="Firmware export: an Arduino sketch or an Arduino library.")
    until: str | None = option(None, choices=(None, *STAGES), help="Stop after this stage.")
    demo: bool = option(False, help="Synthetic faces + a tiny backbone + the simulated board: every stage in "
                                    "about a minute, no data set, weights or network needed.")

    def variants(self) -> list[str]:
        """The int8 variants to convert; the last is the one asked for."""
        qat = self.qat_epochs > 0 and self.quantization != "ptq"
        ptq = self.compare_ptq or not qat or self.quantization in ("ptq", "best")
        return (["ptq"] if ptq else []) + (["qat"] if qat else [])

    def train_config(self, data_path: str):
        from facemask_edge.train.trainer import TrainConfig

        return TrainConfig(**{**self.train, "data": data_path, "out": self.out})



def board_defaults(board: str) -> dict:
    """The board's pipeline options from its registry entry's model defaults
    (:func:`facemask_edge.boards.model_defaults`, i.e. ``defaults.json``; ``{}`` if none).

    Only pipeline options are returned; the entry's record of where it came from
    (``from_sweep``) is not one.
    """
    from dataclasses import fields

    from facemask_edge.boards import model_defaults

    entry = model_defaults(board)
    return {k: v for k, v in entry.items() if k in {f.name for f in fields(PipelineConfig)}}


def demo_preset(out: Path) -> dict:
    """Options of ``--demo``: synthetic faces and the tiny backbone, trained for seconds."""
    return {
        "data": str(out / "demo-data"),
        "train": {"arch": "mobilenet_v1", "alpha": 0.25, "size": 48, "color": "rgb", "blocks": None,
                  "weights": str(out / "demo-backbone.h5"), "head_epochs": 2, "finetune_epochs": 16,
                  "head_lr": 1e-2, "finetune_lr": 1e-2, "patience": 16, "energy": False, "seed": 7},
        "qat_epochs": 1, "qat_lr": 1e-4, "representative": 50, "sim": "inprocess",
    }


def load_toml(path: str | Path) -> dict:
    """Read a pipeline TOML file; relative paths in it are relative to the file."""
    import tomllib

    path = Path(path)
    if not path.is_file():
        raise FacemaskError(f"config file {path} not found", "pass --config FILE.toml")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FacemaskError(f"{path} is not valid TOML: {exc}", "see README 'Pipeline config'") from None
    base = path.resolve().parent

    def fix(d: dict) -> None:
        for k in _PATH_KEYS:
            v = d.get(k)
            if isinstance(v, str) and v and not _is_special(k, v) and not Path(v).expanduser().is_absolute():
                d[k] = str(base / v)
            elif isinstance(v, list):  # several teachers or data roots
                d[k] = [str(base / x) if isinstance(x, str) and not _is_special(k, x)
                        and not Path(x).expanduser().is_absolute() else x for x in v]

    fix(data)
    if isinstance(data.get("train"), dict):
        fix(data["train"])
    return data


def _is_special(key: str, value: str) -> bool:
    from facemask_edge.data.download import is_url

    return is_url(value) or (key == "weights" and value in ("imagenet", "none"))


def _check_layer(layer: dict, where: str, files: bool = False) -> dict:
    """Check one layer of options (keys, then every value's type and allowed values) before any
    work starts; return it with coerced values (``5`` for a float option becomes ``5.0``)."""
    from facemask_edge.train.trainer import TrainConfig

    top = {f.name: f for f in dataclasses.fields(PipelineConfig)}
    train_fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for key, value in layer.items():
        if key not in top:
            hint = f"did you mean [train] {key}?" if key in train_fields else \
                f"valid keys: {', '.join(sorted(top))}"
            raise ConfigError(f"unknown option {key!r} in {where}", hint)
    layer = check_fields(PipelineConfig, layer, where, files=files)
    for key in (layer.get("train") or {}):
        if key in ("data", "out"):
            raise ConfigError(f"[train] {key} in {where}: set it at the top level", None)
        if key not in train_fields:
            valid = sorted(k for k in train_fields if k not in ("data", "out"))
            raise ConfigError(f"unknown training option {key!r} in {where}",
                              f"valid [train] keys: {', '.join(valid)}")
    if layer.get("train"):
        layer["train"] = check_fields(TrainConfig, layer["train"], where, prefix="[train] ", files=files)
    return layer


def _merge(base: dict, layer: dict) -> dict:
    out = dict(base)
    for k, v in layer.items():
        if k == "train":
            out["train"] = {**out.get("train", {}), **(v or {})}
        else:
            out[k] = v
    return out


def build_config(cli: dict | None = None, toml: str | Path | None = None,
                 check_files: bool = False) -> PipelineConfig:
    """Resolve the options: defaults < board defaults (or demo preset) < TOML < ``cli``.

    Args:
        cli: explicitly given options (``None`` values are ignored), ``train`` a dict of
            TrainConfig fields.
        toml: path of a TOML file (top-level pipeline keys, a ``[train]`` table).
        check_files: also check that the files and folders the options name exist (the
            command does, so that a wrong path fails before any work).

    Raises:
        ConfigError: an unknown key, or a value of the wrong type or not one of the allowed
            values: one line naming the key, the value, what was expected and where it was set.
    """
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    cli["train"] = {k: v for k, v in (cli.get("train") or {}).items() if v is not None}
    cli = _check_layer(cli, "the options", check_files)
    file_layer = _check_layer(load_toml(toml), str(toml), check_files) if toml else {}
    demo = bool(cli.get("demo", file_layer.get("demo", False)))
    board = cli.get("board") or file_layer.get("board") or PipelineConfig.board
    from facemask_edge.boards import get_board

    get_board(board)
    out = cli.get("out") or file_layer.get("out") or ("facemask-edge-demo" if demo else "")
    if not out:
        raise FacemaskError("no run folder given", "pass --out RUN_DIR (or out = ... in --config)")
    # The board's entry is checked too: a hand-edited defaults.json fails here, not mid-run.
    preset = demo_preset(Path(out).expanduser().resolve()) if demo else \
        _check_layer(board_defaults(board), f"facemask_edge/defaults.json (board {board})", check_files)
    merged: dict = {"train": {}}
    for layer in (preset, file_layer, cli):
        merged = _merge(merged, layer)
    merged["out"], merged["board"] = str(Path(out).expanduser()), board
    if demo:  # the demo's data and backbone are its own, whatever a config file says
        merged["data"], merged["train"]["weights"] = preset["data"], preset["train"]["weights"]
    return PipelineConfig(**merged)
