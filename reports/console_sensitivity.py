"""Console tables for ``quantbench sensitivity``: the ranked nodes and the budget search path."""
from __future__ import annotations

from typing import Any

from quantbench.common.row_format import MISSING as DASH
from quantbench.common.row_format import fmt as _fmt
from quantbench.common.row_format import is_number


def _num(value: Any, fmt: str) -> str:
    """A number (the one missing-value rule of every table: :func:`quantbench.common.row_format.fmt`)."""
    return _fmt(value if is_number(value) else None, "{:" + fmt + "}")


def _pct(value: Any) -> str:
    return _fmt(value if is_number(value) else None, "{:.2f}", "%", scale=100)


def _pts(value: Any) -> str:
    return _fmt(-value + 0.0 if is_number(value) else None, "{:+.2f}")


def top1_change_text(row: dict[str, Any], prefix: str) -> str:
    """``−0.51 ±0.92``: the top-1 change vs FP32 with half its 95% paired interval; ``≈`` when not significant."""
    text = _pts(row.get(f"{prefix}_pts"))
    ci, p = row.get(f"{prefix}_ci95_pts"), row.get(f"{prefix}_p")
    if text == DASH or not (isinstance(ci, list) and len(ci) == 2):
        return text
    text = f"{text} ±{(ci[1] - ci[0]) / 2:.2f}"
    return f"≈{text}" if isinstance(p, (int, float)) and p >= 0.05 else text


def _sqnr(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None and row.get("status") == "ok":
        return "∞ (identical)"
    return _num(value, ".2f")


def node_lines(rows: list[dict[str, Any]], limit: int | None = None) -> list[list[str]]:
    """One list of cell texts per ranked node (plain text; the caller escapes or renders)."""
    out = []
    for r in rows[:limit] if limit else rows:
        if r.get("error"):
            out.append([DASH, str(r.get("node")), str(r.get("op_type")), f"failed: {r['error']}", "", "", "", "", ""])
            continue
        if r.get("scan_mode") == "local":  # one figure per node: its own output's error
            out.append([str(r.get("rank")), str(r.get("node")), str(r.get("op_type")), _sqnr(r, "sqnr_local_db"),
                        "", _pct(r.get("top1_quant_only")), top1_change_text(r, "top1_drop_quant_only"),
                        _pct(r.get("top1_float_only")), top1_change_text(r, "top1_drop_float_only")])
            continue
        out.append([str(r.get("rank")), str(r.get("node")), str(r.get("op_type")),
                    _sqnr(r, "sqnr_quant_only_db"), _sqnr(r, "sqnr_float_only_db"),
                    _pct(r.get("top1_quant_only")), top1_change_text(r, "top1_drop_quant_only"),
                    _pct(r.get("top1_float_only")), top1_change_text(r, "top1_drop_float_only")])
    return out


RANK_TEXT = {"float-only": "ranked by SQNR with only the node in float, highest first",
             "quantized-only": "ranked by SQNR with only the node quantized, lowest first",
             "local": "local scan: ranked by the SQNR of each node's own output, lowest first"}
NODE_COLUMNS = ("rank", "node", "op", "SQNR only-quantized dB", "SQNR only-float dB", "top-1 only-quantized",
                "Δ pts", "top-1 only-float", "Δ pts")
STEP_COLUMNS = ("step", "float nodes", "added node", "top-1", "Δ pts (selection half)", "p50 ms", "speedup",
                "within budget")


def step_lines(steps: list[dict[str, Any]]) -> list[list[str]]:
    out = []
    for s in steps:
        mark = ("yes" if s.get("meets_budget") else "no") + (" ← chosen" if s.get("chosen") else "")
        if s.get("step") is None:
            mark = "reference"
        speed = s.get("speedup_interleaved")
        out.append([str(s.get("label")), str(len(s["nodes_float"])) if s.get("nodes_float") is not None else DASH,
                    str(s.get("added_node") or DASH),
                    _pct(s.get("top1")) if s.get("status") == "ok" else f"failed: {s.get('error')}",
                    _pts(s.get("drop_pts")) if s.get("step") is not None else DASH,
                    _num(s.get("compute_p50_ms"), ".3f"), f"{speed:.2f}×" if isinstance(speed, (int, float)) else DASH,
                    mark])
    return out


def ratio_interval(summary: dict[str, Any]) -> str:
    """`` [1.05–1.14]``: a scan's ``scan_time_ratio_ci95`` as the tables show it, or nothing without one."""
    ci = summary.get("scan_time_ratio_ci95")
    if not (isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci)):
        return ""
    return f" [{ci[0]:.2f}–{ci[1]:.2f}]"


def render_console(results: list[Any], console: Any, limit: int | None = None, errors_shown: bool = False) -> None:
    """Print each study's ranked table, summary and budget path with rich (all text escaped). ``errors_shown``:
    a failed study's error was printed already (the CLI's log line as it failed): name the study only."""
    from rich.markup import escape
    from rich.table import Table

    for st in results:
        title = f"{st.model} / {st.variant}"
        if st.error:
            console.print(f"[red]failed:[/red] {escape(title)} (error above)" if errors_shown else
                          f"[red]error:[/red] {escape(title)}: {escape(st.error)}")
            continue
        s = st.summary
        local = s.get("scan_mode") == "local"
        order = RANK_TEXT["local" if local else s.get("rank_by")] if local or s.get("rank_by") in RANK_TEXT \
            else "most sensitive first"
        table = Table(title=escape(f"{title}: per-node sensitivity ({order})"))
        columns = ("rank", "node", "op", "local SQNR dB (own output)", "", *NODE_COLUMNS[5:]) if local else NODE_COLUMNS
        for i, col in enumerate(columns):
            table.add_column(col, justify="left" if i in (1, 2) else "right")
        for line in node_lines(st.rows, limit):
            table.add_row(*[escape(c) for c in line])
        console.print(table)
        if limit and len(st.rows) > limit:
            console.print(f"… {len(st.rows) - limit} more node(s) in sensitivity.jsonl", markup=False)
        if any(r.get("top1_drop_quant_only_ci95_pts") for r in st.rows):
            console.print("Δ pts: top-1 minus FP32's on the same images ± half its 95% paired interval (Newcombe); "
                          "≈: not significant (exact McNemar p ≥ 0.05). Nodes are ranked by SQNR; top-1 is shown, "
                          "not used to rank.", markup=False, style="dim")
        console.print(
            f"{s.get('nodes')} quantizable node(s); whole-model INT8 SQNR "
            f"{_num(s.get('sqnr_whole_int8_db'), '.2f')} dB "
            f"on {s.get('sqnr_samples')} images; top-1 FP32 {_pct(s.get('top1_fp32'))}, INT8 {_pct(s.get('top1_int8'))}"
            f" (Δ {top1_change_text(s, 'top1_drop_int8')} pts) on {s.get('eval_samples') or DASH} images; "
            f"calibration {_num(s.get('calibration_s'), '.1f')} s, "
            f"all nodes {_num(s.get('sqnr_s'), '.0f')} s, total {_num(s.get('elapsed_s'), '.0f')} s", markup=False)
        if s.get("scan_time_ratio") is not None:
            console.print(f"{s.get('scan_mode') or 'full'} scan {_num(s.get('scan_time_s'), '.1f')} s = "
                          f"{_num(s.get('scan_time_ratio'), '.2f')}{ratio_interval(s)} × its floor "
                          f"({_num(s.get('scan_floor_s'), '.1f')} s of "
                          f"FP32 forward passes on these images)", markup=False, style="dim")
        if s.get("not_quantized_alone"):
            console.print(f"not quantized on their own (ORT quantizes them only next to quantized neighbours): "
                          f"{', '.join(s['not_quantized_alone'])}", markup=False, style="dim")
        if s.get("accuracy_note"):
            console.print(f"note: {s['accuracy_note']}", markup=False, style="yellow")
        if st.budget_steps:
            b = st.budget or {}
            steps = Table(title=escape(f"{title}: keeping nodes in float, budget {b.get('budget_pts', 0):g} points, "
                                       f"{b.get('runtime')} batch {b.get('batch')}"))
            for i, col in enumerate(STEP_COLUMNS):
                steps.add_column(col, justify="left" if i in (2, 7) else "right")
            for line in step_lines(st.budget_steps):
                steps.add_row(*[escape(c) for c in line])
            console.print(steps)
        if st.budget:
            style = "green" if st.budget.get("met") else "yellow"
            console.print(st.budget.get("message", ""), style=style, markup=False)
            if st.budget.get("exclude_nodes"):
                console.print("exclude_nodes = " + str(list(st.budget["exclude_nodes"])).replace("'", '"'),
                              markup=False)
