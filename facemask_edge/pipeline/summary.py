"""``summary.md``, ``summary.json`` and ``summary_*.png``: every stage's figures and wall time."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

from facemask_edge.pipeline.config import STAGES, PipelineConfig

def _write_summary(r, wall: float, failure: BaseException | None) -> dict:
    from facemask_edge.artifacts.files import write_json

    cfg = r.cfg
    stages = {}
    for name in STAGES:
        if name in r.statuses:
            stages[name] = r.statuses[name]
        else:
            e = r.state.entry(name)
            stages[name] = {"status": "not run" if not e else e.get("status", "not run"),
                            "seconds": e.get("seconds"), "figures": e.get("figures", {})}
    if failure is not None:
        current = next((s for s in STAGES if r.state.entry(s).get("status") == "running"), None) or \
            next((s for s in STAGES if s not in r.statuses), None)
        if current:
            why = "interrupted" if isinstance(failure, KeyboardInterrupt) else f"failed: {failure}"
            stages[current] = {**stages.get(current, {}), "status": why}
    summary = {
        "schema": 1,
        "run": str(r.run_dir),
        "board": cfg.board,
        "demo": cfg.demo,
        "complete": failure is None,
        "data": r.data_path,
        "data_info": r.data_info,
        "options": {**{k: v for k, v in asdict(cfg).items() if k != "train"}, "train": cfg.train},
        "stages": stages,
        "pipeline_seconds": round(sum((s.get("seconds") or 0) for s in stages.values()), 1),
        "this_invocation_seconds": round(wall, 1),
        "headline": _headline(stages, cfg),
        "licence_notes": _licence_notes(r.run_dir),
        "versions": _versions(),
    }
    summary["headline"].update(_class_headline(stages))
    try:
        summary["plots"] = _plots(r.run_dir, summary)
    except Exception as exc:  # a plot must never hide the results
        summary["plots"] = {"error": f"{type(exc).__name__}: {exc}"}
    write_json(r.run_dir / "summary.json", summary)
    (r.run_dir / "summary.md").write_text(summary_markdown(summary))
    return summary


def _headline(stages: dict, cfg: PipelineConfig) -> dict:
    """The figures people ask for first, from the stages' figures."""
    h: dict = {}
    tr = stages.get("train", {}).get("figures", {})
    ev = stages.get("evaluate", {}).get("figures", {})
    cv = stages.get("convert", {}).get("figures", {})
    pr = stages.get("profile", {}).get("figures", {})
    va = stages.get("validate", {}).get("figures", {})
    if ev.get("float"):
        h["float_test_accuracy"] = ev["float"]["accuracy"]
        h["float_test_f1"] = ev["float"]["f1"]
    elif tr.get("test"):
        h["float_test_accuracy"] = tr["test"]["accuracy"]
        h["float_test_f1"] = tr["test"]["f1"]
    kind = cv.get("quantization")
    if kind and ev.get("int8", {}).get(kind):
        h["int8_host_test_accuracy"] = ev["int8"][kind]["tflm"]["accuracy"]
        h["int8_host_test_f1"] = ev["int8"][kind]["tflm"]["f1"]
    if va:
        h["int8_device_test_accuracy"] = va.get("board_accuracy")
        h["int8_device_test_f1"] = va.get("board_macro_f1")
        h["device_host_bit_exact"] = va.get("bit_exact")
        h["validation_images_per_s"] = va.get("images_per_s")
    if cv:
        h.update({"quantization": kind, "flatbuffer_bytes": cv.get("flatbuffer_bytes"),
                  "arena_bytes": cv.get("arena_bytes"), "macs": cv.get("macs")})
    b = pr.get("boards", {}).get(cfg.board)
    if b:
        h["fits_" + cfg.board] = b["fits"]
        for name, p in pr["boards"].items():
            h[f"latency_ms_{name}"] = p["latency_ms"]
            if p.get("measured_latency_ms"):
                h[f"measured_latency_ms_{name}"] = p["measured_latency_ms"]
                h[f"measured_frame_ms_{name}"] = p["measured_frame_ms"]
    if pr.get("reference"):
        h["arena_vs_reference"] = pr["reference"]["arena_ratio"]
        h["flash_vs_reference"] = pr["reference"]["flash_ratio"]
    return h


def _latency_cell(p: dict) -> str:
    """The estimate, and the emulated Cortex-M4's measurement beside it when there is one."""
    est = _fmt(p["latency_ms"])
    m = p.get("measured_latency_ms")
    if not m:
        return f"{est} (estimate)"
    cpi = (p.get("measured") or {}).get("cpi_range") or ["?", "?"]
    f = p["measured_frame_ms"]
    return (f"measured {m[0]:.0f}-{m[1]:.0f} ({f[0]:.0f}-{f[1]:.0f} per camera frame), at {cpi[0]}-{cpi[1]} "
            f"cycles/instruction; estimate {est}")


def _licence_notes(run_dir: Path) -> list[str]:
    from facemask_edge.data.sources import run_licence_notes

    return run_licence_notes(run_dir)


def _class_headline(stages: dict) -> dict:
    """With more than two classes the headline is macro-F1, with every class's recall beside it
    (the shipped int8 model in tflite-micro on the host, else the float model)."""
    ev = stages.get("evaluate", {}).get("figures", {})
    classes = ev.get("classes") or []
    if len(classes) <= 2:
        return {}
    kind = stages.get("convert", {}).get("figures", {}).get("quantization")
    m, what = (ev["int8"][kind]["tflm"], "int8_host") if ev.get("int8", {}).get(kind) else (ev.get("float"), "float")
    if not m or not m.get("per_class"):
        return {}
    h = {"headline_metric": "macro-F1", f"{what}_test_macro_f1": m["f1"]}
    h.update({f"{what}_test_recall_{c}": m["per_class"][c]["recall"] for c in classes})
    return h


def _versions() -> dict:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for pkg in ("facemask-edge", "tensorflow", "tf_keras", "tensorflow-model-optimization", "tflite-micro"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.{digits if abs(v) < 10 else 1}f}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
        return f"{v[0]:.0f}-{v[1]:.0f}" if v[0] != v[1] else f"{v[0]:.0f}"
    return str(v)


def summary_markdown(s: dict) -> str:
    """The summary as Markdown: headline, per-stage status and time, per-stage figures."""
    lines = [f"# Pipeline summary: {Path(s['run']).name}", ""]
    if s.get("demo"):
        lines += ["**Demo run**: synthetic drawn faces and a tiny randomly-initialised backbone. It shows "
                  "every stage working; its accuracy says nothing about real photos.", ""]
    lines += [f"- board: `{s['board']}`; data: `{s['data']}`"
              + (f" (downloaded from {s['data_info'].get('url')}, sha256 {s['data_info'].get('sha256', '')[:16]}...)"
                 if s.get("data_info", {}).get("source") == "download" else ""),
              f"- complete: {'yes' if s['complete'] else 'NO'}; stage time {s['pipeline_seconds']:.1f} s "
              f"(this invocation {s['this_invocation_seconds']:.1f} s)", ""]
    for note in s.get("licence_notes") or []:
        lines += [f"**Licence: {note}.**", ""]
    h = s.get("headline", {})
    if h:
        lines += ["| figure | value |", "|---|---|"]
        for k, v in h.items():
            lines.append(f"| {k.replace('_', ' ')} | {_fmt(v)} |")
        lines.append("")
    lines += ["## Stages", "", "| stage | status | wall time s |", "|---|---|---|"]
    for name, st in s["stages"].items():
        lines.append(f"| {name} | {st.get('status')} | {_fmt(st.get('seconds'), 1)} |")
    lines.append("")
    st = s["stages"]
    ev = st.get("evaluate", {}).get("figures", {})
    va = st.get("validate", {}).get("figures", {})
    if ev.get("float"):
        lines += [f"## Accuracy ({ev.get('images')} images, {ev.get('set')})", "",
                  "| model | runtime | accuracy | F1 |", "|---|---|---|---|",
                  f"| float | tf_keras | {_fmt(ev['float']['accuracy'])} | {_fmt(ev['float']['f1'])} |"]
        for kind, e in ev.get("int8", {}).items():
            what = "shipped" if e.get("shipped", kind == ev.get("shipped")) else "variant"
            for rt in ("tflm", "tflite_ref"):
                lines.append(f"| {kind} int8 ({what}) | {rt} (host) | {_fmt(e[rt]['accuracy'])} | "
                             f"{_fmt(e[rt]['f1'])} |")
        if va:
            lines.append(f"| {st.get('convert', {}).get('figures', {}).get('quantization', '')} int8 | "
                         f"{va.get('target')} | {_fmt(va.get('board_accuracy'))} | {_fmt(va.get('board_macro_f1'))} |")
        lines.append("")
    lines += _per_class_section(ev)
    if va:
        lines += ["## On-device validation", "",
                  f"{va.get('images')} images on {va.get('target')}: bit-exact with the host int8 model "
                  f"{_fmt(100 * (va.get('bit_exact') or 0), 2)} %, label agreement "
                  f"{_fmt(100 * (va.get('label_agreement') or 0), 2)} %, "
                  f"{_fmt(va.get('images_per_s'), 1)} images/s, report `{va.get('report')}`.", ""]
    pr = st.get("profile", {}).get("figures", {})
    if pr.get("boards"):
        lines += ["## Budget per board", "",
                  "| board | fits | arena B | arena+margin B | RAM left B | model flash B | flash left B | MACs "
                  "| latency ms |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for b, p in pr["boards"].items():
            lines.append(f"| {b} | {_fmt(p['fits'])} | {_fmt(p['arena_bytes'])} | "
                         f"{_fmt(p['arena_with_margin_bytes'])} | "
                         f"{_fmt(p['ram_left_bytes'])} | {_fmt(p['flash_bytes'])} | {_fmt(p['flash_left_bytes'])} | "
                         f"{_fmt(p['macs'])} | {_latency_cell(p)} |")
        ref = pr.get("reference")
        if ref:
            lines += ["", f"Reference `{ref['model']}`: arena {_fmt(ref['arena_bytes'])} B, flatbuffer "
                      f"{_fmt(ref['flash_bytes'])} B, {_fmt(ref['macs'])} MACs. This model: arena "
                      f"{100 * ref['arena_ratio']:.1f} %, flash {100 * ref['flash_ratio']:.1f} %"
                      + (f", MACs {100 * ref['macs_ratio']:.1f} %" if ref.get("macs_ratio") else "")
                      + " of the reference."]
        lines.append("")
    ex = st.get("export", {}).get("figures", {})
    if ex:
        lines += ["## Export", "", f"`{ex.get('path')}` ({ex.get('files')} files, ops {', '.join(ex.get('ops', []))}, "
                  f"arena allocated {_fmt(ex.get('arena_allocated_bytes'))} B). Next: "
                  f"`facemask-edge flash --board {s['board']} --sketch {Path(s['run']) / str(ex.get('path'))}`.", ""]
    plots = s.get("plots") or {}
    if plots and "error" not in plots:
        lines += ["## Plots", ""] + [f"- {k}: `{v}`" for k, v in plots.items()] + [""]
    return "\n".join(lines)


def _per_class_section(ev: dict) -> list[str]:
    """Per class and per source on the test split (float and each int8 model in tflite-micro)."""
    from facemask_edge.metrics import per_class_markdown, per_source_markdown

    classes = ev.get("classes") or []
    models = [("float", ev.get("float") or {})] + [
        (f"{k} int8 ({'shipped' if e.get('shipped', k == ev.get('shipped')) else 'variant'}, tflm)",
         e.get("tflm") or {}) for k, e in (ev.get("int8") or {}).items()]
    models = [(n, m) for n, m in models if m.get("per_class")]
    if not classes or not models:
        return []
    lines = ["## Per class and per source (test split)", ""]
    for name, m in models:
        full = {**m, "images": m.get("images", sum(v["support"] for v in m["per_class"].values()))}
        lines += per_class_markdown(full, classes, name) + [""]
        if m.get("per_source"):
            ps = {s: {**v, "per_class": {c: {"recall": v["recall"][c] or 0.0, "support": v["support"][c]}
                                         for c in classes}} for s, v in m["per_source"].items()}
            lines += per_source_markdown(ps, classes) + [""]
    return lines


def _plots(run_dir: Path, s: dict) -> dict:
    from facemask_edge.plots import _plt

    plt = _plt()
    out = {}
    st = s["stages"]
    secs = [(n, v.get("seconds") or 0.0) for n, v in st.items() if v.get("seconds")]
    if secs:
        fig, ax = plt.subplots(figsize=(7, 3.2), dpi=110)
        ax.barh([n for n, _ in secs][::-1], [v for _, v in secs][::-1], color="tab:blue")
        for i, (_, v) in enumerate(secs[::-1]):
            ax.text(v, i, f" {v:.1f} s", va="center", fontsize=8)
        ax.set_xlabel("wall time (s)")
        ax.set_title(f"pipeline stages: {sum(v for _, v in secs):.0f} s in all", fontsize=10)
        fig.tight_layout()
        fig.savefig(run_dir / "summary_stages.png")
        plt.close(fig)
        out["stage times"] = "summary_stages.png"
    h = s.get("headline", {})
    bars = [(lbl, h.get(k)) for lbl, k in (("float", "float_test_accuracy"),
                                           ("int8 host", "int8_host_test_accuracy"),
                                           ("int8 device", "int8_device_test_accuracy")) if h.get(k) is not None]
    if bars:
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
        ax.bar([b for b, _ in bars], [v for _, v in bars], color=["tab:gray", "tab:blue", "tab:green"][:len(bars)])
        lo = min(v for _, v in bars)
        ax.set_ylim(max(0.0, lo - 0.05), 1.0)
        for i, (_, v) in enumerate(bars):
            ax.text(i, v, f"{v:.4f}", ha="center", va="bottom", fontsize=8)
        ax.set_ylabel("test accuracy")
        ax.set_title("accuracy: float, int8 on the host, int8 on the (simulated) board", fontsize=9)
        fig.tight_layout()
        fig.savefig(run_dir / "summary_accuracy.png")
        plt.close(fig)
        out["accuracy"] = "summary_accuracy.png"
    pr = st.get("profile", {}).get("figures", {})
    if pr.get("boards"):
        from facemask_edge.boards import get_board

        names = list(pr["boards"])
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), dpi=110)
        for ax, (what, key, cap) in zip(axes, (("arena + margin", "arena_with_margin_bytes", "ram"),
                                                ("model flash", "flash_bytes", "flash"))):
            vals = [pr["boards"][b][key] / 1024 for b in names]
            avail = []
            for b in names:
                bd = get_board(b)
                avail.append((bd.arena_ram_bytes if cap == "ram" else bd.model_flash_bytes) / 1024)
            x = range(len(names))
            ax.bar([i - 0.2 for i in x], avail, width=0.4, color="lightgray", label="available")
            ax.bar([i + 0.2 for i in x], vals, width=0.4, color="tab:blue", label="this model")
            ref = pr.get("reference")
            if ref:
                rv = ref["arena_bytes"] if key != "flash_bytes" else ref["flash_bytes"]
                ax.axhline(rv / 1024, ls="--", c="tab:red",
                           label=f"{ref['model']} ({'arena without margin' if cap == 'ram' else 'flatbuffer'})")
            ax.set_xticks(list(x), names)
            ax.set_ylabel("KiB")
            ax.set_title(what, fontsize=10)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(run_dir / "summary_budget.png")
        plt.close(fig)
        out["budget"] = "summary_budget.png"
    return out
