"""Sensitivity and mixed-precision section: per-node SQNR bars, the budget search's accuracy-vs-latency path.

Reads ``sensitivity.jsonl`` rows (``quantbench sensitivity``): given directly, or found next to a
``results.jsonl`` the main report reads. Only each (model, variant)'s latest study is shown.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from quantbench.common.row_file import NOT_JSON, iter_json_lines
from quantbench.common.row_format import MISSING, fmt, is_number

from .charts import apply_layout, esc, plotly_js, to_div
from .console_sensitivity import ratio_interval, top1_change_text

FILE = "sensitivity.jsonl"
KINDS = ("sensitivity", "sensitivity_summary", "budget_step", "budget")


def load_rows(paths: list[Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of the sensitivity files (malformed lines are warnings, never fatal)."""
    rows, warnings = [], []
    for path in paths:
        try:
            for no, row, _ in iter_json_lines(Path(path)):
                if row is NOT_JSON:
                    warnings.append(f"{path}:{no}: unreadable line skipped")
                elif isinstance(row, dict) and row.get("kind") in KINDS:
                    rows.append(row)
        except OSError as exc:
            warnings.append(f"{path}: cannot read ({exc.strerror or exc})")
    return rows, warnings


def studies(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The latest study (run_id) of each (model, variant): its ranked nodes, summary, steps and budget row."""
    latest: dict[tuple[str, str], str] = {}
    for r in rows:
        key = (str(r.get("model")), str(r.get("variant")))
        if str(r.get("run_id", "")) >= latest.get(key, ""):
            latest[key] = str(r.get("run_id", ""))
    grouped: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"nodes": [], "summary": None, "steps": [], "budget": None})
    for r in rows:
        key = (str(r.get("model")), str(r.get("variant")))
        if str(r.get("run_id", "")) != latest[key]:
            continue
        g = grouped[key]
        kind = r["kind"]
        if kind == "sensitivity":
            g["nodes"].append(r)
        elif kind == "sensitivity_summary":
            g["summary"] = r
        elif kind == "budget_step":
            g["steps"].append(r)
        else:
            g["budget"] = r
    out = []
    for (model, variant), g in sorted(grouped.items()):
        g["nodes"].sort(key=lambda r: (r.get("rank") is None, r.get("rank") or 0))
        out.append({"model": model, "variant": variant, **g})
    return out


def sqnr_bars(study: dict[str, Any], limit: int = 40) -> Any | None:
    """Horizontal bars: SQNR with only the node quantized (low = sensitive) and with only it in float."""
    import plotly.graph_objects as go

    nodes = [n for n in study["nodes"] if n.get("rank")][:limit]
    if not nodes:
        return None
    labels = [esc(f"{n['rank']}. {n.get('node')} ({n.get('op_type')})") for n in nodes]
    fig = go.Figure()
    local = (study.get("summary") or {}).get("scan_mode") == "local"
    series = ((("sqnr_local_db", "the node's own output (local scan)", "#e15759"),) if local else
              (("sqnr_quant_only_db", "only this node quantized", "#e15759"),
               ("sqnr_float_only_db", "only this node in float", "#4e79a7")))
    for key, name, colour in series:
        xs = [n.get(key) if is_number(n.get(key)) else None for n in nodes]
        fig.add_bar(y=labels, x=xs, name=esc(name), orientation="h", marker_color=colour,
                    hovertemplate="%{y}<br>" + esc(name) + ": %{x:.2f} dB<extra></extra>")
    summary = study.get("summary") or {}
    if is_number(summary.get("sqnr_whole_int8_db")):
        fig.add_vline(x=summary["sqnr_whole_int8_db"], line_dash="dot", line_color="#555")
    fig.update_layout(barmode="group", xaxis_title="SQNR of the output vs FP32, dB (dotted: whole model INT8)",
                      yaxis={"autorange": "reversed"})
    more = f" (first {limit} of {len(study['nodes'])})" if len(study["nodes"]) > limit else ""
    order = {"float-only": "ranked by SQNR with only the node in float", "quantized-only":
             "ranked by SQNR with only the node quantized"}.get(summary.get("rank_by"), "most sensitive first")
    if local:
        order = "local scan, ranked by the SQNR of each node's own output"
    apply_layout(fig, f"{study['model']} / {study['variant']}: per-node sensitivity, {order}{more}",
                 max(300, 34 * len(nodes) + 140))
    return fig


def budget_path(study: dict[str, Any]) -> Any | None:
    """Top-1 vs compute p50 of each search step (a line in step order), FP32, the budget line and the chosen point."""
    import plotly.graph_objects as go

    steps = [s for s in study["steps"] if s.get("step") is not None and is_number(s.get("top1"))
             and is_number(s.get("compute_p50_ms"))]
    ref = next((s for s in study["steps"] if s.get("step") is None), None)
    if not steps:
        return None
    fig = go.Figure()
    hover = [esc(f"step {s['step']}: {len(s.get('nodes_float') or [])} node(s) float"
                 + (f", + {s['added_node']}" if s.get("added_node") else "")) for s in steps]
    fig.add_scatter(x=[s["compute_p50_ms"] for s in steps], y=[s["top1"] * 100 for s in steps],
                    mode="lines+markers+text", text=[str(s["step"]) for s in steps], textposition="top center",
                    name="search steps (nodes in float)",
                    hovertext=hover, hovertemplate="%{hovertext}<br>%{x:.3f} ms, %{y:.2f}%<extra></extra>",
                    marker={"size": 9, "color": "#4e79a7"})
    chosen = [s for s in steps if s.get("chosen")]
    budget = study.get("budget") or {}
    if chosen:
        c = chosen[0]
        name = "chosen" if budget.get("met") else "best found (budget not met)"
        fig.add_scatter(x=[c["compute_p50_ms"]], y=[c["top1"] * 100], mode="markers", name=esc(name),
                        marker={"size": 18, "symbol": "star", "color": "#59a14f" if budget.get("met") else "#f28e2b"},
                        hovertemplate=esc(name) + ": %{x:.3f} ms, %{y:.2f}%<extra></extra>")
    if ref and is_number(ref.get("top1")):
        if is_number(ref.get("compute_p50_ms")):
            fig.add_scatter(x=[ref["compute_p50_ms"]], y=[ref["top1"] * 100], mode="markers", name="FP32",
                            marker={"size": 11, "symbol": "diamond", "color": "#222"},
                            hovertemplate="FP32: %{x:.3f} ms, %{y:.2f}%<extra></extra>")
        if is_number(budget.get("budget_pts")):
            fig.add_hline(y=ref["top1"] * 100 - budget["budget_pts"], line_dash="dash", line_color="#b42318",
                          annotation_text=esc(f"FP32 − {budget['budget_pts']:g} pts"))
    fig.update_layout(xaxis_title="compute p50, ms per batch", yaxis_title="top-1, %")
    apply_layout(fig, f"{study['model']} / {study['variant']}: accuracy vs latency while keeping nodes in float "
                 f"({budget.get('runtime', '?')}, batch {budget.get('batch', '?')})", 440)
    return fig


def _fmt(value: Any, spec: str, scale: float = 1.0) -> str:
    """A number with the one missing-value rule (:func:`quantbench.common.row_format.fmt`); text here is not a value."""
    return fmt(value if is_number(value) else None, "{:" + spec + "}", scale=scale)


def _top1(node: dict[str, Any], which: str) -> str:
    """``89.50 (Δ −0.51 ±0.92)``: a per-node top-1 % with its change vs FP32 on the same images and half that
    change's 95% paired interval (``≈`` when not significant), as the console shows it."""
    top1 = _fmt(node.get(f"top1_{which}"), ".2f", 100)
    change = top1_change_text(node, f"top1_drop_{which}")
    return top1 if change == MISSING else f"{top1} <span class='muted'>(Δ {esc(change)})</span>"


def _table(study: dict[str, Any], limit: int = 15) -> str:
    local = (study.get("summary") or {}).get("scan_mode") == "local"
    head = ("<tr><th>rank</th><th class='l'>node</th><th class='l'>op</th>"
            + ("<th>local SQNR dB (own output)</th><th></th>" if local else
               "<th>SQNR only-quantized dB</th><th>SQNR only-float dB</th>")
            + "<th>top-1 only-quantized</th><th>top-1 only-float</th></tr>")
    body = []
    for n in study["nodes"][:limit]:
        if n.get("error"):
            body.append(f"<tr><td>—</td><td class='l'>{esc(str(n.get('node')))}</td>"
                        f"<td class='l'>{esc(str(n.get('op_type')))}</td>"
                        f"<td class='l bad' colspan='4'>failed: {esc(str(n['error']))}</td></tr>")
            continue
        body.append(f"<tr><td>{n.get('rank')}</td><td class='l'>{esc(str(n.get('node')))}</td>"
                    f"<td class='l'>{esc(str(n.get('op_type')))}</td>"
                    f"<td>{_fmt(n.get('sqnr_local_db' if local else 'sqnr_quant_only_db'), '.2f')}</td>"
                    f"<td>{'' if local else _fmt(n.get('sqnr_float_only_db'), '.2f')}</td>"
                    f"<td>{_top1(n, 'quant_only')}</td><td>{_top1(n, 'float_only')}</td></tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _steps_table(study: dict[str, Any]) -> str:
    if not study["steps"]:
        return ""
    head = ("<tr><th class='l'>step</th><th>nodes float</th><th class='l'>added node</th><th>top-1</th>"
            "<th>Δ pts (selection half)</th>"
            "<th>p50 ms</th><th>speedup vs FP32</th><th class='l'>within budget</th></tr>")
    body = []
    for s in study["steps"]:
        within = "reference" if s.get("step") is None else ("yes" if s.get("meets_budget") else "no")
        if s.get("chosen"):
            within += " ← chosen"
        top1 = _fmt(s.get("top1"), ".2f", 100) if s.get("status") == "ok" else "failed: " + str(s.get("error"))
        drop = _fmt(-s["drop_pts"] + 0.0, "+.2f") if is_number(s.get("drop_pts")) and s.get("step") is not None \
            else MISSING
        body.append(f"<tr class='{'flag' if s.get('chosen') else ''}'><td class='l'>{esc(str(s.get('label')))}</td>"
                    f"<td>{len(s['nodes_float']) if s.get('nodes_float') is not None else '—'}</td>"
                    f"<td class='l'>{esc(str(s.get('added_node') or '—'))}</td><td>{esc(top1)}</td>"
                    f"<td>{drop}</td>"
                    f"<td>{_fmt(s.get('compute_p50_ms'), '.3f')}</td>"
                    f"<td>{_fmt(s.get('speedup_interleaved'), '.2f')}</td>"
                    f"<td class='l'>{esc(within)}</td></tr>")
    return f"<table>{head}{''.join(body)}</table>"


def section_html(rows: list[dict[str, Any]]) -> str:
    """The whole section (HTML; every text from rows escaped), or "" when there are no sensitivity rows."""
    parts = []
    for st in studies(rows):
        s = st.get("summary") or {}
        parts.append(f"<h3>{esc(st['model'])} / {esc(st['variant'])}</h3>")
        if s.get("status") == "failed":
            parts.append(f"<p class='bad'>failed: {esc(str(s.get('error')))}</p>")
            continue
        parts.append(
            f"<p class='muted'>{esc(str(s.get('nodes')))} quantizable nodes, each scored on "
            f"{esc(str(s.get('sqnr_samples')))} evaluation images with one calibration reused; whole-model INT8 SQNR "
            f"{_fmt(s.get('sqnr_whole_int8_db'), '.2f')} dB, "
            f"top-1 FP32 {_fmt(s.get('top1_fp32'), '.2f', 100)}% / INT8 {_fmt(s.get('top1_int8'), '.2f', 100)}%; "
            f"{_fmt(s.get('elapsed_s'), '.0f')} s in all"
            + (f"; {esc(str(s.get('scan_mode') or 'full'))} scan {_fmt(s.get('scan_time_ratio'), '.2f')}"
               f"{esc(ratio_interval(s))} × its floor "
               f"(FP32 forward passes, {_fmt(s.get('scan_floor_s'), '.1f')} s)"
               if s.get("scan_time_ratio") is not None else "")
            + ".</p>")
        if s.get("accuracy_note"):
            parts.append(f"<p class='warn'>{esc(str(s['accuracy_note']))}</p>")
        parts.append(_table(st))
        parts.append(f"<div class='chart'>{to_div(sqnr_bars(st))}</div>")
        b = st.get("budget")
        if b:
            parts.append(f"<h3>{esc(st['model'])} / {esc(st['variant'])}: mixed precision under a "
                         f"{b.get('budget_pts', 0):g}-point budget</h3>")
            parts.append(f"<p class='{'muted' if b.get('met') else 'warn'}'>{esc(str(b.get('message')))}</p>")
            if b.get("exclude_nodes"):
                parts.append(f"<p><code>exclude_nodes = {esc(json.dumps(b['exclude_nodes']))}</code></p>")
            parts.append(_steps_table(st))
            parts.append(f"<div class='chart'>{to_div(budget_path(st))}</div>")
    if not parts:
        return ""
    return ("<h2>Quantization sensitivity and mixed precision</h2>"
            "<p class='muted'>SQNR = 10·log10(Σ FP32² / Σ (FP32 − model)²) over the logits: low with only a node "
            "quantized, or high with only it in float, marks a sensitive node.</p>" + "".join(parts))


def section_for_sources(sources: list[str]) -> str:
    """The section for the main report: ``sensitivity.jsonl`` files next to its results files."""
    paths = []
    for src in sources:
        p = Path(src).parent / FILE
        if p.is_file() and p not in paths:
            paths.append(p)
    if not paths:
        return ""
    rows, _ = load_rows(paths)
    return section_html(rows)


PAGE = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>quantbench sensitivity</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1500px}}
h2{{border-bottom:2px solid #4e79a7}} .muted{{color:#666}} .warn{{color:#9a6700}} .bad{{color:#b42318}}
table{{border-collapse:collapse;font-size:13px;margin:8px 0 16px}} th,td{{border:1px solid #ddd;padding:4px 7px;text-align:right}}
th{{background:#f3f5f9}} td.l,th.l{{text-align:left}} tr.flag td{{background:#e7f5ea}} code{{background:#f5f5f5}}</style>
<script>{js}</script></head><body><h1>quantbench sensitivity</h1><p class="muted">from {sources}</p>{warnings}{body}</body></html>
"""  # noqa: E501 - the page template's lines are the page's


def write_sensitivity_report(paths: list[Path], out: Path) -> Path:
    """A standalone HTML page of the sensitivity section (plotly embedded, opens offline)."""
    from .atomic import write_atomic

    rows, warnings = load_rows([Path(p) for p in paths])
    body = section_html(rows) or "<p class='muted'>No sensitivity rows.</p>"
    warn = "".join(f"<p class='warn'>{esc(w)}</p>" for w in warnings)
    text = PAGE.format(js=plotly_js(), body=body, warnings=warn,
                       sources=", ".join(esc(str(p)) for p in paths))
    return write_atomic(Path(out), text)
