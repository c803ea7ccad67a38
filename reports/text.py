"""Markdown (terminals, pull requests) and CSV (spreadsheets) renderings of a report."""
from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

from quantbench.common.row_format import fmt
from quantbench.reports.console import Footnotes

from .atomic import write_atomic
from .method import timing_method
from .model import Report, device_key
from .tables import (
    COLUMNS,
    cell_text,
    comparison_groups,
    cross_cell,
    cross_device_table,
)
from .verdict import DEFAULT_BUDGET_PTS, points, verdict_lines, verdicts

TEXT_COLUMNS = {"variant", "settings", "runtime", "ran_as"}
SCALAR_SKIP = {"env", "variant_settings", "runtime_settings", "dataset", "op_precisions", "runtime_versions",
               "artifact_notes"}


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def render_markdown(report: Report, budget_pts: float = DEFAULT_BUDGET_PTS) -> str:
    """The verdict, GitHub-flavoured tables per model and device, then failures and warnings."""
    counts = Counter(str(r.get("status")) for r in report.rows)
    out = ["# quantbench report", "",
           (f"{counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped cells from "
            f"{len(report.sources)} results file(s)."), ""]
    out += ["**How timing was measured.** " + " ".join(_md_escape(m) for m in timing_method(report.rows)), ""]
    for w in report.warnings:
        out.append(f"> warning: {_md_escape(w)}")
    out += ["", "## Verdict", "", _md_escape(
        f"Per model, device and batch: the fastest variant × runtime whose top-1 loss is not significantly larger "
        f"than {points(budget_pts)} (95% intervals; Δ paired with FP32 on the same images; ≈: not significant)."), ""]
    for v in verdicts(report.current_ok, device_key, budget_pts):
        lines = verdict_lines(v)
        out += [f"**{_md_escape(lines[0])}**", ""] + [f"- {_md_escape(ln.strip())}" for ln in lines[1:]] + [""]
    for (model, device), rows in sorted(comparison_groups(report).items()):
        out += ["", f"## {_md_escape(model)} on {_md_escape(device)}", ""]
        out.append("| " + " | ".join(c[1] for c in COLUMNS) + " |")
        out.append("|" + "|".join("---" if c[0] in TEXT_COLUMNS else "---:" for c in COLUMNS) + "|")
        notes = Footnotes()
        for r in rows:
            out.append("| " + " | ".join(_md_escape(cell_text(r, k, spec, notes)) for k, _, spec, _ in COLUMNS) + " |")
        if notes.texts:
            out.append("")
            out += [f"{i}. {_md_escape(t)}" for i, t in enumerate(notes.texts, 1)]
        for r in rows:  # invalid timing is a numbered note on the p50 cell above
            if r["warning"]:
                out.append(f"\n⚠ {_md_escape(r['variant'])} on {_md_escape(r['runtime'])} "
                           f"(batch {_md_escape(fmt(r['batch'], '{}'))}): {_md_escape(r['warning'])}")
    for model, (devices, lines) in cross_device_table(report).items():
        out += ["", f"## {_md_escape(model)} across devices", "",
                "Compute p50 ms (speedup vs the same device's FP32 on the same runtime and batch).", "",
                "| variant | runtime | batch | " + " | ".join(_md_escape(d) for d in devices) + " |",
                "|---|---|---:|" + "---:|" * len(devices)]
        for line in lines:
            cells = [_md_escape(fmt(line["variant"], "{}")), _md_escape(line["runtime"]), fmt(line["batch"], "{}")]
            for d in devices:
                v = line["devices"].get(d)
                cells.append(cross_cell(v))
            out.append("| " + " | ".join(cells) + " |")
    bad = report.not_ok
    if bad:
        out += ["", "## Failed and skipped cells", "", "| status | model | variant | runtime | device | reason |",
                "|---|---|---|---|---|---|"]
        for r in bad:
            keys = ("status", "model", "variant", "runtime", "device", "error")
            cells = (_md_escape(fmt(r.get(k), "{}")) for k in keys)
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def render_csv(report: Report, out: Path | None = None) -> str:
    """One line per row with every scalar column (raw latency lists and nested dicts left out)."""
    keys: list[str] = []
    nested: set[str] = set()
    for r in report.rows:
        for k, v in r.items():
            if isinstance(v, (list, dict)) or k.endswith("_raw_ms"):
                nested.add(k)
            elif k not in keys and k not in SCALAR_SKIP and not k.startswith("_"):
                keys.append(k)
    keys = [k for k in keys if k not in nested]  # null in one row, a list or dict in another: still left out
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    for r in report.rows:
        writer.writerow({k: r.get(k) for k in keys})
    text = buf.getvalue()
    if out is not None:
        write_atomic(Path(out), text)
    return text
