"""The stages and the driver: each stage is one call into the library, recorded in the state."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from facemask_edge.errors import FacemaskError
from facemask_edge.pipeline.config import DEMO_PER_CLASS, STAGES, PipelineConfig
from facemask_edge.pipeline.state import _KEY_NEUTRAL_DEFAULTS, _State, _files_under, _fingerprint_tree, _key
from facemask_edge.pipeline.summary import _write_summary
from facemask_edge.progress import log
from facemask_edge.artifacts.files import sha256_file

# ---- stages --------------------------------------------------------------------------------------

@dataclass
class _Stage:
    name: str
    title: str
    inputs: list[str]  # run-folder files whose content the stage depends on
    options: dict
    run: object  # callable(resume: bool) -> (outputs: list[str], figures: dict)
    enabled: bool = True
    why_disabled: str = ""


class _Runner:
    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg
        self.run_dir = Path(cfg.out).expanduser()
        self.state = _State(self.run_dir)
        self.data_path: str | None = None
        self.data_info: dict = {}
        self.statuses: dict[str, dict] = {}

    # -- helpers --
    def rel(self, p: Path) -> str:
        return Path(p).relative_to(self.run_dir).as_posix()

    # -- stage bodies --
    def do_data(self) -> dict:
        from facemask_edge.data.download import resolve_data

        if self.cfg.demo:
            self._make_demo_inputs()
        path, info = resolve_data(self.cfg.data)
        self.data_path = [str(Path(p).expanduser().resolve()) for p in path] \
            if isinstance(path, list) else str(Path(path).expanduser().resolve())
        self.data_info = info
        return info

    def data_fingerprint(self) -> str | list[str]:
        """The data set's cheap identity; one per root when several are merged."""
        if isinstance(self.data_path, list):
            return [_fingerprint_tree(Path(p)) for p in self.data_path]
        return _fingerprint_tree(Path(self.data_path))

    def _make_demo_inputs(self) -> None:
        from facemask_edge.testing import make_synthetic_dataset, make_tiny_backbone

        data = Path(self.cfg.data)
        marker = data / ".complete"
        if not marker.exists():
            log(f"demo: drawing {DEMO_PER_CLASS} synthetic faces per class (with and without a mask)")
            make_synthetic_dataset(data, per_class=DEMO_PER_CLASS, size=64, seed=3)
            marker.write_text("ok\n")
        weights = Path(self.cfg.train["weights"])
        if not weights.exists():
            log("demo: saving a tiny randomly-initialised MobileNet-style backbone")
            make_tiny_backbone(weights, size=32)

    def stage_train(self, resume: bool):
        from facemask_edge.artifacts.files import read_json
        from facemask_edge.train.trainer import train

        _fresh_keras_session()
        metrics = train(self.cfg.train_config(self.data_path))
        del metrics
        m = read_json(self.run_dir / "metrics.json")
        outs = ["config.json", "labels.txt", "split.json", "manifest.json", "metrics.json", "model.keras"]
        return outs, _train_figures(m)

    def stage_qat(self, resume: bool):
        from facemask_edge.train.qat import qat

        _fresh_keras_session()
        r = qat(self.run_dir, epochs=self.cfg.qat_epochs, lr=self.cfg.qat_lr,
                batch_size=int(self.cfg.train.get("batch_size", 32)))
        return ["model_qat.h5", "qat.json"], r

    def stage_convert(self, resume: bool):
        from facemask_edge.artifacts.run import CARD, SHIPPED, Run, variant_card, variant_model
        from facemask_edge.convert.converter import convert_run

        kinds = self.cfg.variants()
        # Only the variants asked for stay: evaluate compares every variant present.
        sel = convert_run(self.run_dir, quantization=self.cfg.quantization, variants=kinds,
                          representative=self.cfg.representative, keep_other_variants=False)
        run = Run(self.run_dir)
        card = run.shipped().card
        val = {k: v["accuracy"] for k, v in sel["validation"].items()}
        figures = {"quantization": card["quantization"], "val_accuracy_int8": val.get(card["quantization"]),
                   "flatbuffer_bytes": card["flatbuffer_bytes"],
                   "arena_bytes": card["arena_bytes"], "macs": card["macs"], "params": card["params"],
                   "ops": [o["name"] for o in card["ops"]], "sha256": card["sha256"],
                   "rule": self.cfg.quantization, "selected_by": sel["by"], "variants": {}}
        for kind in kinds:
            c = run.variant(kind).card
            figures["variants"][kind] = {"flatbuffer_bytes": c["flatbuffer_bytes"],
                                         "arena_bytes": c["arena_bytes"],
                                         "val_accuracy_int8": val.get(kind),
                                         "validation": sel["validation"].get(kind),
                                         "seconds": c.get("convert_seconds")}
        outs = [SHIPPED, CARD] + [n for k in kinds for n in (variant_model(k), variant_card(k))]
        return outs, figures

    def stage_profile(self, resume: bool):
        from facemask_edge.artifacts.files import write_json
        from facemask_edge.artifacts.run import Run
        from facemask_edge.boards import BOARDS
        from facemask_edge.profile import profile_model, profile_table

        shipped = Run(self.run_dir).shipped()
        card, model = shipped.card, shipped.path
        figures: dict = {"boards": {}, "target": self.cfg.board}
        rows = []
        for b in BOARDS:
            p = profile_model(model, b, arena=card.get("arena_bytes"))
            write_json(self.run_dir / f"profile_{b}.json", p)
            rows.append((self.run_dir.name, p))
            figures["boards"][b] = _profile_figures(p)
        outs = [f"profile_{b}.json" for b in BOARDS]
        outs += self._measure(shipped.sha256, figures["boards"])
        if self.cfg.reference:
            ref = Path(self.cfg.reference)
            if not ref.is_file():
                raise FacemaskError(f"reference model {ref} not found", "check --reference")
            refp, arena = {}, None
            for b in BOARDS:
                p = profile_model(ref, b, arena=arena)
                arena = p["arena_bytes"]
                refp[b] = p
                rows.append((ref.name + " (reference)", p))
            write_json(self.run_dir / "profile_reference.json",
                       {"model": str(ref), "sha256": sha256_file(ref), "boards": refp})
            outs.append("profile_reference.json")
            r0 = next(iter(refp.values()))
            figures["reference"] = {
                "model": ref.name, "arena_bytes": r0["arena_bytes"], "flash_bytes": r0["flash_bytes"],
                "macs": r0["macs"], "latency_ms": {b: p["latency_ms"] for b, p in refp.items()},
                "arena_ratio": card["arena_bytes"] / r0["arena_bytes"],
                "flash_ratio": card["flatbuffer_bytes"] / r0["flash_bytes"],
                "macs_ratio": card["macs"] / r0["macs"] if r0["macs"] else None,
            }
        (self.run_dir / "profile.md").write_text(profile_table(rows) + "\n")
        outs.append("profile.md")
        return outs, figures

    def _measure(self, sha256: str, boards: dict) -> list[str]:
        """With ``measure``, the target board's latency on the emulated Cortex-M4, next to the
        estimate in the profile figures (a measurement recorded earlier for this model counts too)."""
        from facemask_edge.emulate import EMULATED_BOARDS, attach_measurement, measure_run, read_measurement
        from facemask_edge.progress import log

        board = self.cfg.board
        if board not in EMULATED_BOARDS:
            if self.cfg.measure:
                log(f"measure: no emulator for {board} (only {', '.join(EMULATED_BOARDS)}); "
                    "its latency stays an estimate")
            return []
        m = read_measurement(self.run_dir, sha256)
        if m is None and self.cfg.measure:
            m = measure_run(self.run_dir, board, tflm=self.cfg.tflm, log=log)
        if m is None:
            return []
        boards[board] = _profile_figures(attach_measurement({**boards[board], "board": board,
                                                              "model_sha256": sha256}, m))
        return ["emulate/measure.json"]

    def stage_evaluate(self, resume: bool):
        from facemask_edge.convert.evaluate import evaluate_run

        rep = evaluate_run(self.run_dir)
        shipped = rep["shipped"]
        # Per kind; the shipped one is the same file as its variant (same sha256).
        fig = {"images": rep["images"], "set": rep["set"], "classes": rep["classes"],
               "float": {**_metric_figures(rep["float"]), **_class_figures(rep["float"])},
               "shipped": shipped["quantization"], "int8": {}}
        for kind, e in [(shipped["quantization"], shipped)] + [
                (k, v) for k, v in rep["variants"].items() if not v["shipped"]]:
            fig["int8"][kind] = {"shipped": e is shipped,
                                 "tflm": {**_metric_figures(e["tflm"]), **_class_figures(e["tflm"])},
                                 "tflite_ref": _metric_figures(e["tflite_ref"]),
                                 "drop_vs_float_points": e["tflm"]["drop_vs_float_points"],
                                 "label_agreement_with_float": e["tflm"]["label_agreement_with_float"],
                                 "runtimes_bit_exact_rate": e["runtimes_bit_exact_rate"]}
        return ["evaluation/evaluation.json", "evaluation/evaluation.md"], fig

    def stage_export(self, resume: bool):
        from facemask_edge.export import export_run

        res = export_run(self.run_dir, self.cfg.board, fmt=self.cfg.export_format)  # RUN/export/
        root = res.path if res.path.is_dir() else res.path.parent
        files = [self.rel(p) for p in (_files_under(root) if res.path.is_dir() else [res.path])]
        b = res.budget
        return files, {"path": self.rel(res.path), "format": res.format, "files": len(files),
                       "ops": list(res.ops), "model_bytes": res.model_bytes,
                       "arena_allocated_bytes": b.arena_with_margin_bytes if b else None}

    def stage_validate(self, resume: bool):
        out = self.run_dir / ("validate-board" if self.cfg.port else "validate-sim")
        report = self._validate(out, fresh=not resume)
        link = report.get("link", {})
        a = report["agreement"]
        fig = {"target": self.cfg.port or f"board-sim {self.cfg.board} ({self.cfg.sim})",
               "images": report["validated"], "complete": report["complete"],
               "board_accuracy": report["board"]["accuracy"], "board_macro_f1": report["board"]["macro_f1"],
               "host_accuracy": report["host"]["accuracy"], "bit_exact": a["bit_exact"],
               "label_agreement": a["label"], "max_score_diff": a["max_score_diff"],
               "latency_ms": report["latency_ms"], "images_per_s": link.get("images_per_s"),
               "wire_bytes_per_image": link.get("wire_bytes_per_image"),
               "payload_efficiency": link.get("payload_efficiency"), "retries": link.get("retries"),
               "report": self.rel(out / "report.md")}
        return [self.rel(out / n) for n in ("report.json", "report.md", "results.jsonl")], fig

    def _validate(self, out: Path, fresh: bool) -> dict:
        from facemask_edge.validate.runner import validate_run

        sim = proc = None
        try:
            if self.cfg.port:
                url = self.cfg.port
            elif self.cfg.sim == "inprocess":
                from facemask_edge.artifacts.run import Run
                from facemask_edge.device.sim import BoardSimulator

                m = Run(self.run_dir).shipped()
                sim = BoardSimulator(m.data, m.card, board=self.cfg.board, baud=self.cfg.sim_baud)
                url = sim.start()
            else:
                proc, url = _start_sim_process(self.run_dir, self.cfg.board, self.cfg.sim_baud)
            log(f"  validating on {url}" + ("" if self.cfg.port else f" (simulated {self.cfg.board})"))
            report, _ = validate_run(self.run_dir, [url], out_dir=out, fresh=fresh,
                                     baud=self.cfg.baud if self.cfg.port else 921600,
                                     timeout=self.cfg.validate_timeout, limit=self.cfg.validate_limit)
            return report
        finally:
            if sim is not None:
                sim.stop()
            if proc is not None:
                _stop_process(proc)

    # -- driver --
    def stages(self) -> list[_Stage]:
        cfg = self.cfg
        tc = asdict(cfg.train_config(self.data_path or ""))
        tc.pop("out")
        for k, v in _KEY_NEUTRAL_DEFAULTS.items():
            if tc.get(k) == v:
                tc.pop(k)
        weights = tc.get("weights")
        if weights and weights not in ("imagenet", "none") and Path(weights).expanduser().is_file():
            tc["weights_sha256"] = sha256_file(Path(weights).expanduser())
        tc["data_fingerprint"] = self.data_fingerprint() if self.data_path else None
        use_qat = "qat" in cfg.variants()
        train_outs = ["config.json", "labels.txt", "split.json", "model.keras"]
        from facemask_edge.artifacts.run import CARD, SHIPPED

        model_files = [SHIPPED, CARD]
        ref = {"path": str(Path(cfg.reference).resolve()),
               "sha256": sha256_file(Path(cfg.reference)) if Path(cfg.reference).is_file() else None} \
            if cfg.reference else None
        from facemask_edge.boards import BOARDS

        return [
            _Stage("train", "train (feature extractor, then fine-tuning)", [], tc, self.stage_train),
            _Stage("qat", "quantization-aware training", train_outs,
                   {"epochs": cfg.qat_epochs, "lr": cfg.qat_lr, "batch_size": cfg.train.get("batch_size", 32)},
                   self.stage_qat, enabled=use_qat,
                   why_disabled="qat_epochs = 0" if cfg.qat_epochs <= 0 else "quantization = ptq"),
            _Stage("convert", "full-int8 conversion", train_outs + (["model_qat.h5"] if use_qat else []),
                   {"variants": cfg.variants(), "quantization": cfg.quantization,
                    "representative": cfg.representative},
                   self.stage_convert),
            _Stage("profile", "arena, flash and latency per board"
                   + (" (measured on the emulated Cortex-M4)" if cfg.measure else ""), model_files,
                   {"boards": list(BOARDS), "reference": ref, "measure": cfg.measure}, self.stage_profile),
            _Stage("evaluate", "float vs int8 (TFLM, TFLite-ref) on the test split",
                   train_outs + model_files + self._variant_files(), {}, self.stage_evaluate),
            _Stage("export", f"firmware sources for {cfg.board}", model_files,
                   {"board": cfg.board, "format": cfg.export_format, "firmware": _firmware_hash(cfg.board)},
                   self.stage_export),
            _Stage("validate", "on-device validation ("
                   + (f"board at {cfg.port})" if cfg.port else f"simulated {cfg.board})"),
                   ["config.json", "split.json"] + model_files,
                   {"target": cfg.port or f"sim:{cfg.board}:{cfg.sim_baud}", "limit": cfg.validate_limit},
                   self.stage_validate),
        ]

    def _variant_files(self) -> list[str]:
        return [f"model_int8_{k}.tflite" for k in self.cfg.variants()]

    def input_key(self, st: _Stage) -> str:
        files = {}
        for rel in st.inputs:
            p = self.run_dir / rel
            files[rel] = sha256_file(p) if p.is_file() else None
        return _key({"stage": st.name, "options": st.options, "inputs": files})


def _fresh_keras_session() -> None:
    """Drop graphs of earlier runs in this process (a sweep runs many): memory, and layer names,
    which restart from their defaults (QAT finds its input quantizer by variable name)."""
    from facemask_edge._tf import keras

    keras().backend.clear_session()


def _train_figures(m: dict) -> dict:
    out = {k: m.get(k) for k in ("train_images", "val_images", "test_images", "skipped_files",
                                 "params", "epochs", "stage_seconds", "wall_seconds")}
    for split in ("val", "test"):
        if split in m:
            out[split] = _metric_figures(m[split])
    return out


def _metric_figures(m: dict) -> dict:
    return {k: m.get(k) for k in ("accuracy", "f1", "precision", "recall", "images") if k in m}


def _class_figures(m: dict) -> dict:
    """Per-class and per-source figures of one model for the summary (``metrics`` dicts)."""
    out = {"per_class": {c: {k: v[k] for k in ("precision", "recall", "f1", "support")}
                         for c, v in m.get("per_class", {}).items()},
           "confusion_matrix": m.get("confusion_matrix")}
    if m.get("per_source"):
        out["per_source"] = {s: {"images": v["images"], "accuracy": v["accuracy"], "macro_f1": v["macro_f1"],
                                 "recall": {c: (p["recall"] if p["support"] else None)
                                            for c, p in v["per_class"].items()},
                                 "support": {c: p["support"] for c, p in v["per_class"].items()}}
                             for s, v in m["per_source"].items()}
    return out


def _profile_figures(p: dict) -> dict:
    out = {k: p[k] for k in ("fits", "reason", "arena_bytes", "arena_with_margin_bytes", "ram_left_bytes",
                             "flash_bytes", "flash_used_bytes", "flash_left_bytes", "macs", "latency_ms",
                             "clock_hz", "arena_placement")}
    # Measured on the emulated Cortex-M4 (attach_measurement), when it was.
    out.update({k: p[k] for k in ("measured_latency_ms", "measured_frame_ms", "measured", "latency_source")
                if k in p})
    return out


def _firmware_hash(board: str) -> str | None:
    """Hash of the firmware sources export copies (a changed sketch means a new export)."""
    from facemask_edge.export.exporter import sketch_template
    from facemask_edge.paths import firmware_dir

    try:
        dirs = (firmware_dir() / "common", sketch_template(board))
    except FacemaskError:
        return None
    h = hashlib.sha256()
    for d in dirs:
        if d.is_dir():
            for p in sorted(d.iterdir()):
                if p.is_file():
                    h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def _start_sim_process(run_dir: Path, board: str, baud: int):
    """``facemask-edge board-sim`` as its own process (its own core, like a real board)."""
    import select

    cmd = [sys.executable, "-m", "facemask_edge", "board-sim", str(run_dir), "--board", board,
           "--baud", str(baud), "--camera-every", "0"]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    line = proc.stdout.readline().strip() if ready else ""
    if not line:
        _stop_process(proc)
        err = (proc.stderr.read() or "").strip().splitlines()
        raise FacemaskError(f"board-sim did not start: {err[-1] if err else 'no output'}",
                            f"try it alone: facemask-edge board-sim {run_dir} --board {board}")
    return proc, line


def _stop_process(proc) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for f in (proc.stdout, proc.stderr):
        if f:
            f.close()


# ---- driver --------------------------------------------------------------------------------------

def run_pipeline(cfg: PipelineConfig, redo: str | None = None) -> dict:
    """Run every stage that is not up to date, then write the summary.

    Args:
        cfg: the resolved options (see :func:`build_config`).
        redo: a stage name: forget it and every later stage's record first.

    Returns:
        The summary (also ``RUN_DIR/summary.json``).

    Raises:
        FacemaskError: a stage failed (the summary is still written, with the failure).
    """
    r = _Runner(cfg)
    run_dir = r.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    if redo:
        if redo not in STAGES:
            raise FacemaskError(f"unknown stage {redo!r}", f"use one of {', '.join(STAGES)}")
        r.state.forget_from(redo)
    t_all = time.monotonic()
    n = len(STAGES)
    failure: BaseException | None = None
    try:
        t0 = time.monotonic()
        log(f"[1/{n}] data")
        info = r.do_data()
        secs = round(time.monotonic() - t0, 1)
        # The data stage always looks; when it finds what it found last time, the time it took
        # then stays on record (a no-op re-run must not report 0.0 s for the download).
        key = _key({"data": cfg.data, "path": r.data_path, "tree": r.data_fingerprint()})
        if r.state.entry("data").get("status") == "done" and r.state.entry("data").get("key") == key:
            r.statuses["data"] = {"status": "up to date", "seconds": r.state.entry("data").get("seconds"),
                                  "figures": info}
        else:
            r.state.mark("data", key=key, status="done", seconds=secs, finished=_now(), figures=info, outputs={})
            r.statuses["data"] = {"status": "done", "seconds": secs, "figures": info}
        log(f"  {r.data_path}")
        for i, st in enumerate(r.stages(), start=2):
            if cfg.until and STAGES.index(st.name) > STAGES.index(cfg.until):
                r.statuses[st.name] = {"status": f"not asked (until {cfg.until})"}
                continue
            if not st.enabled:
                log(f"[{i}/{n}] {st.name}: off ({st.why_disabled})")
                r.statuses[st.name] = {"status": "off", "why": st.why_disabled}
                r.state.data["stages"].pop(st.name, None)
                continue
            key = r.input_key(st)
            if r.state.up_to_date(st.name, key):
                e = r.state.entry(st.name)
                log(f"[{i}/{n}] {st.name}: up to date (took {e.get('seconds', 0):.1f} s on {e.get('finished', '?')})")
                r.statuses[st.name] = {"status": "up to date", "seconds": e.get("seconds"),
                                       "figures": e.get("figures", {})}
                continue
            resume = r.state.resumable(st.name, key)
            log(f"[{i}/{n}] {st.name}: {st.title}" + (" (resuming)" if resume else ""))
            r.state.mark(st.name, key=key, status="running", started=_now(), outputs={}, figures={})
            t = time.monotonic()
            outs, figures = st.run(resume)
            secs = round(time.monotonic() - t, 1)
            outs = [o for o in outs if (run_dir / o).is_file()]
            r.state.mark(st.name, status="done", seconds=secs, finished=_now(), figures=figures,
                         outputs={o: sha256_file(run_dir / o) for o in outs})
            r.statuses[st.name] = {"status": "done", "seconds": secs, "figures": figures}
            log(f"  {st.name} done in {secs:.1f} s")
    except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt too: the summary says where it stopped
        failure = exc
        raise
    finally:
        summary = _write_summary(r, time.monotonic() - t_all, failure)
    return summary


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")
