"""Pipeline options: the dataclass, board defaults, the demo preset, TOML files, and their merge."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from facemask_edge.errors import FacemaskError

STAGES = ("data", "train", "qat", "convert", "profile", "evaluate", "export", "validate")
DEMO_PER_CLASS = 100
_PATH_KEYS = ("data", "out", "reference", "weights", "teacher")


@dataclass
class PipelineConfig:
    """Every pipeline option. ``train`` holds :class:`~facemask_edge.train.trainer.TrainConfig`
    fields (``data`` and ``out`` are filled in from here)."""

    out: str = ""
    data: str | list[str] | None = None  # DIR, ZIP, http(s) URL of a zip, a list of them (merged
    # by class folder name), or None: the default data set
    board: str = "nano33ble"
    port: str | None = None  # a real board; None: the simulator
    train: dict = field(default_factory=dict)
    qat_epochs: int = 3  # 0: no QAT, post-training quantization only
    qat_lr: float = 5e-5
    representative: int = 300
    quantization: str = "best"  # "best": QAT or PTQ, whichever is more faithful to the float model
    # on the validation split (convert.select_best); "qat" or "ptq": that one
    compare_ptq: bool = True  # also convert post-training-quantized, for the evaluation
    reference: str | None = None  # a reference .tflite profiled alongside (e.g. vww_96_int8)
    validate_limit: int | None = None
    validate_timeout: float = 8.0
    baud: int = 921600  # --port's UART speed (USB CDC ignores it)
    sim: str = "subprocess"  # "subprocess": `facemask-edge board-sim` process; "inprocess"
    sim_baud: int = 0  # 0: unpaced (USB-CDC-like)
    export_format: str = "sketch"
    until: str | None = None  # stop after this stage (the sweep stops after "profile")
    demo: bool = False

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


def _check_keys(layer: dict, where: str) -> None:
    from facemask_edge.train.trainer import TrainConfig

    top = {f.name: f for f in dataclasses.fields(PipelineConfig)}
    train_fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for key, value in layer.items():
        if key not in top:
            hint = f"did you mean [train] {key}?" if key in train_fields else \
                f"valid keys: {', '.join(sorted(top))}"
            raise FacemaskError(f"unknown option {key!r} in {where}", hint)
    for key in (layer.get("train") or {}):
        if key in ("data", "out"):
            raise FacemaskError(f"[train] {key} in {where}: set it at the top level", None)
        if key not in train_fields:
            valid = sorted(k for k in train_fields if k not in ("data", "out"))
            raise FacemaskError(f"unknown training option {key!r} in {where}",
                                f"valid [train] keys: {', '.join(valid)}")


def _merge(base: dict, layer: dict) -> dict:
    out = dict(base)
    for k, v in layer.items():
        if k == "train":
            out["train"] = {**out.get("train", {}), **(v or {})}
        else:
            out[k] = v
    return out


def build_config(cli: dict | None = None, toml: str | Path | None = None) -> PipelineConfig:
    """Resolve the options: defaults < board defaults (or demo preset) < TOML < ``cli``.

    Args:
        cli: explicitly given options (``None`` values are ignored), ``train`` a dict of
            TrainConfig fields.
        toml: path of a TOML file (top-level pipeline keys, a ``[train]`` table).
    """
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    cli["train"] = {k: v for k, v in (cli.get("train") or {}).items() if v is not None}
    _check_keys(cli, "the options")
    file_layer = load_toml(toml) if toml else {}
    _check_keys(file_layer, str(toml))
    demo = bool(cli.get("demo", file_layer.get("demo", False)))
    board = cli.get("board") or file_layer.get("board") or PipelineConfig.board
    from facemask_edge.boards import get_board

    get_board(board)
    out = cli.get("out") or file_layer.get("out") or ("facemask-edge-demo" if demo else "")
    if not out:
        raise FacemaskError("no run folder given", "pass --out RUN_DIR (or out = ... in --config)")
    preset = demo_preset(Path(out).expanduser().resolve()) if demo else board_defaults(board)
    merged: dict = {"train": {}}
    for layer in (preset, file_layer, cli):
        merged = _merge(merged, layer)
    merged["out"], merged["board"] = str(Path(out).expanduser()), board
    if demo:  # the demo's data and backbone are its own, whatever a config file says
        merged["data"], merged["train"]["weights"] = preset["data"], preset["train"]["weights"]
    cfg = PipelineConfig(**merged)
    if cfg.until is not None and cfg.until not in STAGES:
        raise FacemaskError(f"unknown stage {cfg.until!r}", f"use one of {', '.join(STAGES)}")
    if cfg.quantization not in ("best", "qat", "ptq"):
        raise FacemaskError(f"unknown quantization {cfg.quantization!r}", "use best, qat or ptq")
    if cfg.sim not in ("subprocess", "inprocess"):
        raise FacemaskError(f"unknown sim {cfg.sim!r}", "use subprocess or inprocess")
    _coerce_train(cfg.train)
    return cfg


def _coerce_train(train: dict) -> None:
    from facemask_edge.train.trainer import TrainConfig

    defaults = TrainConfig()
    for k, v in list(train.items()):
        d = getattr(defaults, k)
        if isinstance(d, bool) and not isinstance(v, bool):
            raise FacemaskError(f"training option {k} must be true or false, not {v!r}")
        if isinstance(d, float) and isinstance(v, int) and not isinstance(v, bool):
            train[k] = float(v)
        elif isinstance(d, (int, float)) and not isinstance(d, bool) and not isinstance(v, (int, float)):
            raise FacemaskError(f"training option {k} must be a number, not {v!r}")
