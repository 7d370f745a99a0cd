"""The validation report: on-device metrics, board/host agreement, latency and link figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["build_report", "write_report", "classification_metrics", "closing_note"]


def classification_metrics(true: np.ndarray, pred: np.ndarray, classes: list[str]) -> dict:
    """The study's metrics (:func:`facemask_edge.metrics.classification_metrics`, the one
    implementation) under the report's names: accuracy, macro F1, per class, confusion (rows:
    true). A label outside the classes (a confused board) counts as wrong and is counted."""
    from facemask_edge.metrics import classification_metrics as metrics

    true, pred = np.asarray(true, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    valid = (pred >= 0) & (pred < len(classes))
    m = metrics(true[valid], pred[valid], classes)
    return {"accuracy": float((pred == true).mean()) if len(true) else 0.0, "macro_f1": m["f1"],
            "per_class": m["per_class"], "confusion": m["confusion_matrix"],
            "invalid_labels": int((~valid).sum())}


def _pct(values, q):
    return float(np.percentile(values, q)) if len(values) else None


def build_report(vset, records: dict[int, dict], segments: list[dict], card: dict, sha: str,
                 reference: str, failure: dict | None = None) -> dict:
    """Everything the report says, from the per-image records and the link segments.

    ``failure`` (from the runner) marks a validation that did not finish: the report's
    ``status`` is then ``failed`` or ``interrupted`` and says why and how far it got; with no
    image validated there are no accuracy figures at all (None), never a 0 % that reads like a
    measurement.
    """
    idx = sorted(records)
    recs = [records[i] for i in idx]
    true = np.array([r["label"] for r in recs], dtype=np.int64)
    board = np.array([r["board"]["label"] for r in recs], dtype=np.int64)
    host = np.array([r["host"]["label"] for r in recs], dtype=np.int64)
    exact = [r["board"]["scores"] == r["host"]["scores"] for r in recs]
    diffs = [max((abs(a - b) for a, b in zip(r["board"]["scores"], r["host"]["scores"])), default=0)
             if len(r["board"]["scores"]) == len(r["host"]["scores"]) else 255 for r in recs]
    disagree = [r for r, e in zip(recs, exact) if not e]
    us = np.array([r["board"]["us"] for r in recs], dtype=np.float64)
    classes = vset.classes

    def sample(r):
        return {"i": r["i"], "key": r["key"], "label": classes[r["label"]],
                "board": {"label": classes[r["board"]["label"]] if r["board"]["label"] < len(classes) else r["board"]["label"],
                          "scores": r["board"]["scores"]},
                "host": {"label": classes[r["host"]["label"]], "scores": r["host"]["scores"]}}

    link = _link(segments)
    n = len(recs)
    status = failure["status"] if failure else ("complete" if n == len(vset) else "incomplete")
    counts = _counts(recs)
    # An emulated board's timer is virtual time (1 instruction = 1 ns): not a board's latency.
    timer = ("emulator virtual time (1 instruction = 1 ns), not the board's: see counts"
             if counts and counts.get("counter") == "instructions" else "board timer")
    report = {
        "schema": 1,
        "status": status,
        "failure": failure,
        "model_sha256": sha,
        "source": vset.source,
        "data_root": vset.data_root,
        "images": len(vset),
        "validated": n,
        "complete": n == len(vset),
        "classes": classes,
        "reference": reference,
        "board": classification_metrics(true, board, classes),
        "host": classification_metrics(true, host, classes),
        "agreement": {
            "bit_exact": float(np.mean(exact)) if n else 0.0,
            "label": float(np.mean(board == host)) if n else 0.0,
            "disagreeing_images": len(disagree),
            "max_score_diff": int(max(diffs)) if diffs else 0,
            "first_disagreements": [sample(r) for r in disagree[:10]],
        },
        "latency_ms": {"p50": _pct(us, 50) / 1e3 if n else None, "p95": _pct(us, 95) / 1e3 if n else None,
                       "max": float(us.max()) / 1e3 if n else None, "source": timer},
        "counts": counts,
        "link": link,
        "ports": sorted({r.get("port", "?") for r in recs}),
        "per_port_images": {p: sum(1 for r in recs if r.get("port") == p)
                            for p in sorted({r.get("port", "?") for r in recs})},
        **per_source_report(vset, idx, true, board),
    }
    if not n:  # nothing measured: no figures that look like measurements
        report["board"] = report["host"] = report["agreement"] = None
    return report


def _counts(recs: list[dict]) -> dict | None:
    """Per-inference instruction/cycle counts (protocol FEATURE_COUNTS) and their time at the
    board's clock, or None when the board did not report counts."""
    counted = [r["board"] for r in recs if "count" in r["board"]]
    if not counted:
        return None
    from facemask_edge.emulate.measure import latency_figures

    return latency_figures([b["count"] for b in counted], counted[-1].get("counter", "?"),
                           counted[-1].get("name", ""))


def _count_text(c: dict) -> str:
    unit = c["counter"]
    text = (f"{unit} per inference p50 {c['p50'] / 1e6:.3f} M, p95 {c['p95'] / 1e6:.3f} M, "
            f"max {c['max'] / 1e6:.3f} M")
    if c.get("ms"):
        lo, hi = c["ms"]["p50"]
        cpi = f" at {c['cpi_range'][0]}-{c['cpi_range'][1]} cycles/instruction" if c.get("cpi_range") else ""
        text += f" = {lo:.1f}-{hi:.1f} ms on {c['board']} ({c['clock_hz'] / 1e6:.0f} MHz{cpi})"
    return text


def per_source_report(vset, idx: list[int], true: np.ndarray, board: np.ndarray) -> dict:
    """``{"per_source": ...}``: the board's figures per source (``amvd``, ``mfn``, a root's name),
    when the set has more than one source or more than two classes; else ``{}``."""
    from facemask_edge.metrics import per_source_metrics

    sources = list(getattr(vset, "sources", None) or [])
    if not sources or not idx:
        return {}
    src = [sources[i] for i in idx]
    if len(set(src)) < 2 and len(vset.classes) <= 2:
        return {}
    k = len(vset.classes)
    ok = (board >= 0) & (board < k)  # a label the model does not have counts as wrong: class 0 swap
    pred = np.where(ok, board, np.where(true == 0, 1 % k, 0))
    return {"per_source": per_source_metrics(true, pred, vset.classes, src)}


def _per_source_markdown(r: dict) -> list[str]:
    from facemask_edge.metrics import per_source_markdown

    if not r.get("per_source"):
        return []
    return ["## Per source (board)", "", *per_source_markdown(r["per_source"], r["classes"]), ""]


def _link(segments: list[dict]) -> dict:
    """Link figures of the last invocation that streamed images, and totals over all of them."""
    streamed = [s for s in segments if s.get("images")]
    totals = {"invocations": len(segments), "images": sum(s.get("images", 0) for s in segments)}
    for key in ("retries", "naks", "timeouts", "result_requests", "resends", "resets", "chunks_resent"):
        totals[key] = sum(p.get(key, 0) for s in segments for p in s.get("ports", {}).values())
    if not streamed:
        return {"totals": totals}
    seg = streamed[-1]
    ports = seg["ports"]
    out_b = sum(p.get("bytes_out", 0) for p in ports.values())
    in_b = sum(p.get("bytes_in", 0) for p in ports.values())
    payload = sum(p.get("payload_bytes", 0) for p in ports.values())
    images = seg["images"]
    wall = seg.get("wall_s") or 0.0
    per_port = {}
    for name, p in ports.items():
        el = p.get("elapsed_s") or 0.0
        wire = p.get("bytes_out", 0) + p.get("bytes_in", 0)
        entry = {k: p.get(k) for k in ("board", "firmware", "baud", "images", "bytes_out", "bytes_in",
                                       "payload_bytes", "retries", "naks", "timeouts", "result_requests",
                                       "resends", "resets", "chunks_resent", "elapsed_s", "window_full_s")}
        entry["payload_efficiency"] = p.get("payload_bytes", 0) / wire if wire else None
        entry["images_per_s"] = p.get("images", 0) / el if el else None
        baud = p.get("baud") or 0
        # Share of the streaming time the host-to-board line carried bytes (8N1: 10 bits a byte).
        entry["line_busy"] = (p.get("stream_bytes_out", 0) * 10 / baud / el) if baud and el else None
        # The same, not counting the time the board's computing held the line still.
        host_el = el - (p.get("board_stall_s") or 0.0)
        entry["line_busy_host"] = (min(1.0, p.get("stream_bytes_out", 0) * 10 / baud / host_el)
                                   if baud and host_el > 0 else None)
        entry["board_stall_s"] = p.get("board_stall_s")
        # What the line carried while the board had bytes to read (the session's timeouts use it).
        busy = p.get("busy_s") or 0.0
        entry["measured_bytes_per_s"] = p.get("drained_bytes", 0) / busy if busy else None
        per_port[name] = entry
    return {
        "images": images,
        "wall_s": wall,
        "images_per_s": images / wall if wall else None,
        "wire_bytes": out_b + in_b,
        "wire_bytes_per_image": (out_b + in_b) / images if images else None,
        "bytes_per_s": (out_b + in_b) / wall if wall else None,
        "payload_bytes": payload,
        "payload_efficiency": payload / (out_b + in_b) if out_b + in_b else None,
        "retries": sum(p.get("retries", 0) for p in ports.values()),
        "resets": sum(p.get("resets", 0) for p in ports.values()),
        "errors": seg.get("errors", {}),
        "ports": per_port,
        "totals": totals,
    }


def _failure_line(report: dict) -> str | None:
    f = report.get("failure")
    if not f:
        return None
    return (f"Validation {f['status']} while {f['stage']}: {f['error']}. {f['validated']} of "
            f"{f['images']} images validated" + (" (figures below are for those only)" if f["validated"] else
                                                  "; no figures") + ".")


def closing_note(report: dict) -> str:
    """One paragraph for the terminal."""
    if not report["validated"]:
        return _failure_line(report) or f"0/{report['images']} images validated"
    b, a, link = report["board"], report["agreement"], report["link"]
    parts = [f"{report['validated']}/{report['images']} images ({report['source']}): "
             f"board accuracy {b['accuracy']:.2%} (host {report['host']['accuracy']:.2%}), "
             f"bit-exact agreement {a['bit_exact']:.2%}"]
    if a["disagreeing_images"]:
        parts.append(f"{a['disagreeing_images']} disagree (max score diff {a['max_score_diff']})")
    lat = report["latency_ms"]
    if lat["p50"] is not None and lat.get("source", "board timer") == "board timer":
        parts.append(f"latency p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms, max {lat['max']:.1f} ms")
    if report.get("counts"):
        parts.append(_count_text(report["counts"]))
    if link.get("images_per_s"):
        busy = [p["line_busy"] for p in link.get("ports", {}).values() if p.get("line_busy")]
        line = f", line busy {min(busy):.1%}" if busy else ""
        parts.append(f"{link['images_per_s']:.2f} images/s, {link['wire_bytes_per_image']:.0f} wire bytes/image, "
                     f"{link['payload_efficiency']:.1%} payload{line}, {link['retries']} retries, "
                     f"{link['resets']} resets")
    return "; ".join(parts)


def _md_table(rows: list[list], header: list[str]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _markdown(r: dict) -> str:
    classes = r["classes"]
    b, h, a = r["board"], r["host"], r["agreement"]
    head = ["# On-device validation" + (f": {r['status'].upper()}" if r.get("failure") else ""), ""]
    if r.get("failure"):
        f = r["failure"]
        head += [f"**{_failure_line(r)}**", ""]
        head += [f"- {name}: {why}" for name, why in f.get("boards", {}).items()] + ([""] if f.get("boards") else [])
        head += ["Run the same command again to resume: images already validated are kept "
                 "(results.jsonl).", ""]
    if not r["validated"]:
        return "\n".join(head + [f"Model `{r['model_sha256'][:16]}...`, {r['images']} images of the "
                                  f"{r['source']} ({r['data_root']}) to validate; none was.", ""])
    lines = head + [
             f"Model `{r['model_sha256'][:16]}...`, {r['validated']} of {r['images']} images of the "
             f"{r['source']} ({r['data_root']}), host reference: {r['reference']}.", "",
             _md_table([
                 ["accuracy", f"{b['accuracy']:.2%}", f"{h['accuracy']:.2%}"],
                 ["macro F1", f"{b['macro_f1']:.4f}", f"{h['macro_f1']:.4f}"],
             ], ["", "board", "host int8"]), "",
             f"**Bit-exact agreement: {a['bit_exact']:.2%}** (same label: {a['label']:.2%}; "
             f"{a['disagreeing_images']} image(s) differ, largest score difference {a['max_score_diff']}).", "",
             "## Per class (board)", "",
             _md_table([[c, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1']:.4f}", v["support"]]
                        for c, v in b["per_class"].items()], ["class", "precision", "recall", "F1", "images"]),
             "", "## Confusion matrix (board; rows: true, columns: predicted)", "",
             _md_table([[classes[i]] + row for i, row in enumerate(b["confusion"])], ["true \\ predicted"] + classes),
             ""]
    lines += _per_source_markdown(r)
    if a["first_disagreements"]:
        lines += ["## First disagreeing images", "",
                  _md_table([[d["i"], d["key"], d["label"], d["board"]["label"], d["board"]["scores"],
                              d["host"]["label"], d["host"]["scores"]] for d in a["first_disagreements"]],
                            ["#", "file", "true", "board", "board scores", "host", "host scores"]), ""]
    lat = r["latency_ms"]
    if lat["p50"] is not None:
        lines += [f"## Latency ({lat.get('source', 'board timer')})", "",
                  f"p50 {lat['p50']:.2f} ms, p95 {lat['p95']:.2f} ms, max {lat['max']:.2f} ms.", ""]
    if r.get("counts"):
        lines += ["## Measured counts (board)", "", _count_text(r["counts"]) + ".", ""]
    link = r["link"]
    if link.get("images"):
        lines += ["## Link", "",
                  f"Last run: {link['images']} images in {link['wall_s']:.1f} s: "
                  f"**{link['images_per_s']:.2f} images/s**, {link['wire_bytes_per_image']:.0f} wire bytes "
                  f"per image, {link['bytes_per_s']:.0f} bytes/s, "
                  f"**{link['payload_efficiency']:.1%} of wire bytes are image payload**.", "",
                  _md_table([[name, p.get("board"), p.get("baud") or "USB", p.get("images"),
                              f"{p['images_per_s']:.2f}" if p.get("images_per_s") else "-",
                              f"{p['payload_efficiency']:.1%}" if p.get("payload_efficiency") else "-",
                              f"{p['line_busy']:.1%}" if p.get("line_busy") else "-",
                              f"{p['line_busy_host']:.1%}" if p.get("line_busy_host") else "-",
                              p.get("retries"), p.get("naks"), p.get("timeouts"), p.get("resets")]
                             for name, p in link["ports"].items()],
                            ["port", "board", "baud", "images", "images/s", "payload", "line busy",
                             "line busy (host)", "retries", "NAKs", "timeouts", "resets"]), "",
                  "Line busy: share of the streaming time the host-to-board line carried bytes. "
                  "(host): the same without the time the board computed longer than its receive "
                  "window lasts (it reads nothing meanwhile, so the line must stand still).", ""]
        if link.get("errors"):
            lines += ["Boards that failed: " + "; ".join(f"{k}: {v}" for k, v in link["errors"].items()), ""]
    t = link.get("totals", {})
    if t:
        lines += [f"Over {t['invocations']} invocation(s): {t['images']} images streamed, {t['retries']} retries, "
                  f"{t['resets']} board resets handled, {t['result_requests']} results asked for again.", ""]
    lines += ["", closing_note(r), ""]
    return "\n".join(lines)


def _png(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = r["classes"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, name in zip(axes, ("board", "host")):
        cm = np.array(r[name]["confusion"])
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center",
                    color="white" if v > cm.max() / 2 else "black")
        ax.set_xticks(range(len(classes)), classes, rotation=20)
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        title = "board" if name == "board" else "host int8"
        ax.set_title(f"{title}: accuracy {r[name]['accuracy']:.2%}")
    fig.suptitle(f"bit-exact agreement {r['agreement']['bit_exact']:.2%} on {r['validated']} images")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out_dir: Path, report: dict) -> None:
    """``report.json``, ``report.md`` and ``confusion.png`` in ``out_dir``."""
    from facemask_edge.artifacts.files import write_atomic, write_json

    out_dir = Path(out_dir)
    write_json(out_dir / "report.json", report)
    write_atomic(out_dir / "report.md", _markdown(report))
    if report["validated"]:
        _png(report, out_dir / "confusion.png")
