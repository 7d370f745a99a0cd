"""The run folder as one object: what each stage reads back, and where every artifact came from.

A run folder is a chain of artifacts: training writes ``config.json``, ``labels.txt``,
``split.json`` and ``model.keras``; QAT makes ``model_qat.h5`` from ``model.keras``; conversion
makes ``model_int8_ptq.tflite`` (from ``model.keras``) and ``model_int8_qat.tflite`` (from
``model_qat.h5``), each with its card, and installs one of them as the shipped
``model_int8.tflite`` with ``model_card.json``. Every later stage (profile, evaluate, export,
board-sim, validate, Edge Impulse) reads the shipped model through :meth:`Run.shipped`.

Why an object and not file names: the folder can hold files of different ages. Training into an
existing folder, a QAT model left from an earlier float model, a card edited or a model replaced
by hand: each stage used to read what it found. Here every derived artifact is recorded in
``provenance.json`` with its own sha256 and the sha256 of the inputs it was made from; a stage
that finds an artifact whose inputs have changed since (directly or further up the chain) gets a
one-line :class:`~facemask_edge.errors.ModelError` saying what to re-run, so nothing stale is
ever used. A folder without ``provenance.json`` (made by hand, by older versions, or a copied
model with its card) is accepted as it is: nothing in it contradicts itself.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facemask_edge.artifacts.files import read_json, sha256_bytes, sha256_file, write_json
from facemask_edge.errors import DataError, FacemaskError, ModelError

__all__ = ["Run", "ModelFile", "RunData", "KINDS", "CONFIG", "LABELS", "SPLIT", "FLOAT_MODEL",
           "QAT_MODEL", "QAT_RECORD", "SHIPPED", "CARD", "PROVENANCE", "EVALUATION",
           "variant_model", "variant_card"]

CONFIG = "config.json"
LABELS = "labels.txt"
SPLIT = "split.json"
FLOAT_MODEL = "model.keras"
QAT_MODEL = "model_qat.h5"
QAT_RECORD = "qat.json"
SHIPPED = "model_int8.tflite"
CARD = "model_card.json"
PROVENANCE = "provenance.json"
EVALUATION = "evaluation"
KINDS = ("ptq", "qat")  # the int8 variants: post-training and quantization-aware


def variant_model(kind: str) -> str:
    """File name of an int8 variant (``model_int8_ptq.tflite``)."""
    return f"model_int8_{kind}.tflite"


def variant_card(kind: str) -> str:
    """File name of an int8 variant's card (``model_card_ptq.json``)."""
    return f"model_card_{kind}.json"


#: Everything made from the trained float model: removed when a new training replaces it.
DERIVED = (QAT_MODEL, QAT_RECORD, SHIPPED, CARD, PROVENANCE, "profile.md", EVALUATION,
           *(n for k in KINDS for n in (variant_model(k), variant_card(k))))


@dataclass(frozen=True)
class ModelFile:
    """An int8 model of the run with its card; ``sha256`` is the sha256 of ``data``."""

    name: str
    path: Path
    data: bytes
    sha256: str
    card: dict

    @property
    def kind(self) -> str:
        """``ptq`` or ``qat`` (what the card says)."""
        return str(self.card.get("quantization") or "int8")

    @property
    def labels(self) -> list[str]:
        return [str(x) for x in self.card.get("labels") or []]


@dataclass
class RunData:
    """The run's data set at the model's input size, and its saved split."""

    config: dict
    classes: list[str]
    images: np.ndarray  # uint8 (N, S, S, C), device-preprocessed
    labels: np.ndarray
    paths: list[str]
    split: dict[str, np.ndarray]  # item indices per split

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        idx = self.split[name]
        return self.images[idx], self.labels[idx]


#: Models every stage records when it writes them; in a run with provenance, one without an
#: entry came from elsewhere.
_RECORDED = (QAT_MODEL, SHIPPED, *(variant_model(k) for k in KINDS))

# What to run again when an artifact is stale.
_REMAKE = {FLOAT_MODEL: "facemask-edge train --out {run} ...", QAT_MODEL: "facemask-edge qat {run}", SHIPPED: "facemask-edge convert {run}",
           **{variant_model(k): "facemask-edge convert {run}" for k in KINDS}}


class Run:
    """A run folder. Cheap to make; each accessor reads (and checks) what it returns.

    Args:
        path: the run folder (it need not exist yet: training creates it).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._config: dict | None = None
        self._sha: dict[str, tuple[tuple[int, int], str]] = {}

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def file(self, name: str) -> Path:
        """Path of an artifact (it may not exist)."""
        return self.path / name

    def exists(self, name: str) -> bool:
        return self.file(name).is_file()

    def sha256(self, name: str) -> str | None:
        """sha256 of an artifact, or None if absent (remembered while size and mtime hold)."""
        p = self.file(name)
        try:
            st = p.stat()
        except FileNotFoundError:
            return None
        stamp = (st.st_size, st.st_mtime_ns)
        hit = self._sha.get(name)
        if hit and hit[0] == stamp:
            return hit[1]
        sha = sha256_file(p)
        self._sha[name] = (stamp, sha)
        return sha

    # -- what training wrote ------------------------------------------------------------------

    def _need_trained(self) -> None:
        hint = "train first: facemask-edge train --data DIR --out RUN_DIR"
        if not self.path.is_dir():
            raise FacemaskError(f"run folder {self.path} does not exist", hint)
        if not self.exists(CONFIG):
            raise FacemaskError(f"{self.path} is not a trained run (no {CONFIG})", hint)

    @property
    def config(self) -> dict:
        """``config.json`` of a trained run, with a clear error when the folder is not one."""
        if self._config is None:
            self._need_trained()
            self._config = read_json(self.file(CONFIG))
        return self._config

    @property
    def labels(self) -> list[str]:
        """Class names in the model's output order (``labels.txt``)."""
        if not self.exists(LABELS):
            raise DataError(f"{self.file(LABELS)} not found", f"{self.path} needs labels.txt (one class per line)")
        return [ln.strip() for ln in self.file(LABELS).read_text().splitlines() if ln.strip()]

    def split(self) -> dict:
        """``split.json``: file names per split."""
        from facemask_edge.data.splits import load_split

        return load_split(self.path)

    def data(self, data: str | list[str] | None = None) -> RunData:
        """Scan the run's data set (decoded pixels come from the cache) and map its split.

        A run trained with ``exclude_noncommercial`` leaves those files out here too, so the
        split maps onto the same images.
        """
        from facemask_edge.data.ingest import scan_dataset
        from facemask_edge.data.splits import split_indices

        cfg = self.config
        ds = scan_dataset(data or cfg["data"], size=cfg["size"], color=cfg["color"],
                          exclude_noncommercial=bool(cfg.get("exclude_noncommercial")))
        classes = self.labels
        if ds.classes != classes:
            raise DataError(f"classes {ds.classes} of {ds.root} differ from the run's {classes}",
                            "pass the data set the run was trained on")
        return RunData(cfg, classes, ds.images, ds.labels, [it.path for it in ds.items],
                       split_indices(ds, self.split()))

    def float_model(self):
        """The trained float model (tf_keras)."""
        from facemask_edge._tf import keras

        self._need_file(FLOAT_MODEL, "train first: facemask-edge train --data DIR --out RUN_DIR")
        return keras().models.load_model(self.file(FLOAT_MODEL), compile=False)

    def _need_file(self, name: str, hint: str) -> Path:
        p = self.file(name)
        if not p.is_file():
            raise ModelError(f"{p} not found", hint)
        return p

    def clear_derived(self) -> list[str]:
        """Remove what was made from the current float model (a new training replaces it).

        Returns:
            The names removed (``profile_<board>.json`` files included).
        """
        gone = []
        for name in (*DERIVED, *(p.name for p in sorted(self.path.glob("profile_*.json")))):
            p = self.file(name)
            if p.is_dir():
                shutil.rmtree(p)
                gone.append(name + "/")
            elif p.exists():
                p.unlink()
                gone.append(name)
        self._sha.clear()
        return gone

    # -- provenance ---------------------------------------------------------------------------

    def provenance(self) -> dict[str, dict]:
        """``provenance.json``: per artifact its sha256 and the sha256 of its inputs."""
        p = self.file(PROVENANCE)
        if not p.is_file():
            return {}
        try:
            return dict(read_json(p).get("artifacts", {}))
        except (ValueError, AttributeError):
            raise ModelError(f"{p} is damaged", f"convert again: facemask-edge convert {self.path}") from None

    def record(self, name: str, inputs: list[str] | dict[str, str | None], **facts) -> dict:
        """Record that ``name`` (already written) was made from ``inputs`` as they are now.

        Args:
            name: the artifact.
            inputs: artifact names (hashed now), or a name -> sha256 mapping already known.
            facts: anything else worth keeping with it (e.g. ``variant="qat"``).

        Returns:
            The entry written.
        """
        shas = dict(inputs) if isinstance(inputs, dict) else {i: self.sha256(i) for i in inputs}
        entry = {"sha256": self.sha256(name), "inputs": shas, "made": time.strftime("%Y-%m-%dT%H:%M:%S"),
                 **facts}
        prov = self.provenance()
        prov[name] = entry
        write_json(self.file(PROVENANCE), {"schema": 1, "artifacts": prov})
        return entry

    def made_from(self, name: str) -> dict[str, str | None]:
        """The inputs ``name`` was recorded as made from (``{}`` if it was not recorded)."""
        return dict(self.provenance().get(name, {}).get("inputs", {}))

    def stale(self, name: str) -> str | None:
        """Why ``name`` must not be used, or None.

        Stale means: the file is not the one recorded, or an input it was made from exists now
        with other content, here or anywhere further up the chain. An input that is gone
        contradicts nothing (a copied model keeps working without the training files).
        """
        prov = self.provenance()
        return self._stale(name, prov, set())

    def _stale(self, name: str, prov: dict, seen: set) -> str | None:
        entry = prov.get(name)
        if entry is None and prov and name in _RECORDED:
            # This run keeps provenance, and this model is not in it: a file from elsewhere.
            return f"{name} is not recorded in {PROVENANCE} (it was not made by this run's stages)"
        if entry is None or name in seen:
            return None
        seen.add(name)
        if not self.exists(name):
            return f"{name} is missing"
        if entry.get("sha256") != self.sha256(name):
            return f"{name} is not the file that was made for this run (sha256 differs from {PROVENANCE})"
        for inp, sha in entry.get("inputs", {}).items():
            now = self.sha256(inp)
            if now is None:
                continue
            if now != sha:
                return f"{name} was made from an earlier {inp} (it changed since)"
            why = self._stale(inp, prov, seen)
            if why:
                return f"{name} was made from a stale {inp}: {why}"
        return None

    def check_fresh(self, name: str) -> None:
        """Raise :class:`ModelError` (one line, with what to re-run) if ``name`` is stale."""
        why = self.stale(name)
        if why:
            hint = _REMAKE.get(name, "facemask-edge convert {run}").format(run=self.path)
            raise ModelError(why, f"run `{hint}` again")

    # -- int8 models --------------------------------------------------------------------------

    def shipped(self) -> ModelFile:
        """The shipped model: ``model_int8.tflite`` with ``model_card.json``, checked.

        Raises:
            ModelError: not converted, a card that is not one or describes another file, a file
                that is not a TFLite model, or a model made from inputs that changed since.
        """
        return self._model(SHIPPED, CARD)

    def variant(self, kind: str) -> ModelFile:
        """An int8 variant (``ptq`` or ``qat``) with its card, checked like :meth:`shipped`."""
        if kind not in KINDS:
            raise ModelError(f"unknown int8 variant {kind!r}", f"use one of {', '.join(KINDS)}")
        return self._model(variant_model(kind), variant_card(kind))

    def variant_kinds(self) -> list[str]:
        """The variants present in the folder (fresh or not)."""
        return [k for k in KINDS if self.exists(variant_model(k))]

    def _model(self, name: str, card_name: str) -> ModelFile:
        hint = f"convert the run first: facemask-edge convert {self.path}"
        path = self._need_file(name, hint)
        card_path = self._need_file(card_name, hint)
        data = path.read_bytes()
        sha = sha256_bytes(data)
        try:
            card = read_json(card_path)
            if not isinstance(card, dict):
                raise TypeError("not an object")
            [str(x) for x in card["labels"]]
            int(card["input"]["size"]), str(card["input"]["color"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{card_path} is not a model card ({type(exc).__name__}: {exc})",
                             f"convert again: facemask-edge convert {self.path}") from None
        _check_tflite(data, path)  # a damaged file says so before anything else runs it
        if card.get("sha256") and card["sha256"] != sha:
            raise ModelError(f"{card_name} describes another {name} (sha256 differs): the model file "
                             "was replaced or damaged", f"convert again: facemask-edge convert {self.path}")
        self.check_fresh(name)
        if self.provenance().get(name, {}).get("sha256") != sha:
            _probe_in_child(data, path)  # not a file convert recorded: run it once where a crash is safe
        return ModelFile(name, path, data, sha, card)

    def write_variant(self, kind: str, data: bytes, card: dict, inputs: list[str]) -> ModelFile:
        """Write an int8 variant and its card, recorded as made from ``inputs``."""
        name = variant_model(kind)
        card = {**card, "model": name, "quantization": kind}
        (self.file(name)).write_bytes(data)
        write_json(self.file(variant_card(kind)), card)
        self.record(name, inputs, variant=kind)
        return ModelFile(name, self.file(name), data, sha256_bytes(data), card)

    def install(self, kind: str, selection: dict | None = None) -> ModelFile:
        """Ship a variant: copy it to ``model_int8.tflite`` with ``model_card.json``.

        The shipped model inherits the variant's provenance (the same inputs), so it stays
        usable even if the variant files are removed, and goes stale with them.
        """
        v = self.variant(kind)
        card = {**v.card, "model": SHIPPED}
        if selection is not None:
            card["selection"] = selection
        self.file(SHIPPED).write_bytes(v.data)
        write_json(self.file(CARD), card)
        self.record(SHIPPED, self.made_from(v.name), variant=kind)
        return ModelFile(SHIPPED, self.file(SHIPPED), v.data, v.sha256, card)

    def remove_variant(self, kind: str) -> None:
        for name in (variant_model(kind), variant_card(kind)):
            self.file(name).unlink(missing_ok=True)


def _probe_in_child(data: bytes, path: Path) -> None:
    """Run a model this toolkit did not record once in a child process before anything runs it
    in-process: tflite-micro trusts a model's option values, and a crafted file can crash it
    (a segfault would end the command with no message)."""
    from facemask_edge.convert.runtimes import measure_arena
    from facemask_edge.errors import ConversionError

    try:
        measure_arena(data)
    except ConversionError as exc:
        raise ModelError(f"{path} does not run in tflite-micro ({exc.message})",
                         f"convert again: facemask-edge convert {path.parent}") from None


def _check_tflite(data: bytes, path: Path) -> None:
    """One ``ModelError`` line when the bytes are not a usable TFLite model (the one reader's check)."""
    from facemask_edge.artifacts.tflite import read_tflite

    read_tflite(data, name=str(path), hint=f"convert again: facemask-edge convert {path.parent}")
