"""Studies section: charts over swept variant keys (rows carrying ``sweep``).

* accuracy vs ``calib_samples``, one line per calibration method (and per other swept value);
* a heat map of accuracy by ``weight_bits`` × ``weight_rounding`` (or × the one other key swept next to
  ``weight_bits``, e.g. ``per_channel``).

One chart per model, device, runtime and batch. Values come from the row's ``sweep`` (what the table
swept), else from its ``variant_settings`` (what ran). Every label is escaped with ``charts.esc``.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from quantbench.common.row_format import fmt, is_number
from quantbench.common.row_keys import current_rows

from .charts import accuracy_field, apply_layout, error_bars, esc, to_div
from .model import device_key, runtime_label
from .verdict import interval

CURVE_X, CURVE_SERIES = "calib_samples", "calibration"
GRID_Y, GRID_X = "weight_bits", "weight_rounding"


def _sweep(row: dict[str, Any]) -> dict[str, Any]:
    sweep = row.get("sweep")
    return sweep if isinstance(sweep, dict) else {}


def _setting(row: dict[str, Any], key: str) -> Any:
    """The value of a variant key: the swept one if the row's table swept it, else what ran."""
    sweep = _sweep(row)
    if key in sweep:
        return sweep[key]
    settings = row.get("variant_settings")
    return settings.get(key) if isinstance(settings, dict) else None


def _label(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "+".join(_label(v) for v in value) or "none"
    return str(value)


def _latest(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ok rows of the current generation (:func:`quantbench.common.row_keys.current_rows`): one per cell, never a
    curve or an FP32 line mixing an older configuration's rows in, even in an ``--all-generations`` report."""
    return [r for r in current_rows(rows)[0] if r.get("status") == "ok"]


def _groups(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str, Any], list[dict[str, Any]]]:
    groups: dict[tuple[str, str, str, Any], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(str(r.get("model")), device_key(r), runtime_label(r), r.get("batch"))].append(r)
    return groups


def _fp32(rows: list[dict[str, Any]], metric: str) -> float | None:
    for r in rows:
        if r.get("precision") == "fp32" and not _sweep(r) and is_number(r.get(metric)):
            return float(r[metric])
    return None


def _title(key: tuple[str, str, str, Any], what: str) -> str:
    model, device, runtime, batch = key
    return f"{model}: {what} ({runtime}, batch {batch}, {device})"


def calibration_curves(rows: list[dict[str, Any]], key: tuple[str, str, str, Any]) -> Any | None:
    """Accuracy vs calib_samples (log x), one line per calibration method × other swept values; FP32 dotted."""
    import plotly.graph_objects as go

    metric, axis = accuracy_field(rows)
    swept = [r for r in rows if CURVE_X in _sweep(r) and is_number(_setting(r, CURVE_X)) and is_number(r.get(metric))]
    if not swept:
        return None
    lines: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in swept:
        others = [f"{k}={_label(v)}" for k, v in _sweep(r).items() if k not in (CURVE_X, CURVE_SERIES)]
        name = ", ".join([_label(_setting(r, CURVE_SERIES)), *others])
        lines[name].append(r)
    fig = go.Figure()
    for name, rs in sorted(lines.items()):
        rs.sort(key=lambda r: _setting(r, CURVE_X))
        ys = [r[metric] * 100 for r in rs]
        ci_key = "top1_ci95" if metric == "top1" else "agreement_ci95"
        fig.add_scatter(x=[_setting(r, CURVE_X) for r in rs], y=ys, mode="lines+markers",
                        name=esc(name), text=[esc(r.get("variant")) for r in rs],
                        error_y=error_bars(ys, [interval(r, ci_key) for r in rs], 100),
                        hovertemplate="%{text}<br>%{x} calibration images: %{y:.2f}%<extra></extra>")
    ref = _fp32(rows, metric)
    if ref is not None:
        fig.add_hline(y=ref * 100, line_dash="dot", line_color="#555", annotation_text="FP32")
    sizes = sorted({_setting(r, CURVE_X) for r in swept})
    fig.update_layout(xaxis_title="calibration images (calib_samples, log)", yaxis_title=axis,
                      xaxis={"type": "log", "tickvals": sizes, "ticktext": [str(s) for s in sizes]})
    apply_layout(fig, _title(key, "accuracy vs calibration-set size"), 440)
    return fig


def _order(values: list[Any]) -> list[Any]:
    """Distinct values, numbers high to low (8, 4, 3 bits), anything else in first-seen order."""
    seen = list(dict.fromkeys(values))
    if all(is_number(v) for v in seen):
        return sorted(seen, reverse=True)
    return seen


def bits_rounding_heatmap(rows: list[dict[str, Any]], key: tuple[str, str, str, Any], extra: str = "",
                          x_key: str = GRID_X) -> Any | None:
    """Heat map of accuracy: weight_bits (rows) × weight_rounding (columns; or ``x_key``, another swept key such
    as per_channel), the value written in each cell."""
    import plotly.graph_objects as go

    metric, axis = accuracy_field(rows)
    swept = [r for r in rows if (GRID_Y in _sweep(r) or x_key in _sweep(r)) and is_number(r.get(metric))]
    default_x = "nearest" if x_key == GRID_X else None
    cells = {(_setting(r, GRID_Y) if _setting(r, GRID_Y) is not None else 8,
              _label(_setting(r, x_key) if _setting(r, x_key) is not None else default_x)): r[metric] * 100
             for r in swept}
    if not cells:
        return None
    ys, xs = _order([k[0] for k in cells]), _order([k[1] for k in cells])
    z = [[cells.get((y, x)) for x in xs] for y in ys]
    text = [[fmt(v, "{:.2f}") for v in line] for line in z]
    fig = go.Figure(go.Heatmap(
        z=z, x=[esc(_label(x)) for x in xs], y=[esc(f"{_label(y)} bits") for y in ys], text=text,
        texttemplate="%{text}", colorscale="Viridis", colorbar={"title": {"text": esc(axis)}},
        hovertemplate="%{y}, %{x}: %{z:.2f}%<extra></extra>"))
    ref = _fp32(rows, metric)
    what = (f"accuracy by weight bits × {'rounding' if x_key == GRID_X else x_key}"
            + (f" (FP32 {ref * 100:.2f}%)" if ref is not None else ""))
    fig.update_layout(xaxis_title=esc(x_key), yaxis_title="weight_bits", xaxis={"type": "category"},
                      yaxis={"type": "category", "autorange": "reversed"})  # most bits on top
    apply_layout(fig, _title(key, what + (f", {extra}" if extra else "")), 120 + 70 * len(ys))
    return fig


def _x_key(rows: list[dict[str, Any]]) -> str:
    """weight_rounding when swept; else the one other key swept next to weight_bits (e.g. per_channel)."""
    swept = {k for r in rows for k in _sweep(r)}
    others = sorted(swept - {GRID_Y, GRID_X})
    return others[0] if GRID_X not in swept and GRID_Y in swept and len(others) == 1 else GRID_X


def heatmaps(rows: list[dict[str, Any]], key: tuple[str, str, str, Any]) -> list[Any]:
    """One heat map per combination of the other swept keys (e.g. per calibration method)."""
    x_key = _x_key([r for r in rows if GRID_Y in _sweep(r) or GRID_X in _sweep(r)])
    split: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        sweep = _sweep(r)
        if GRID_Y in sweep or GRID_X in sweep:
            split[", ".join(f"{k}={_label(v)}" for k, v in sweep.items() if k not in (GRID_Y, x_key))].append(r)
    fp32 = [r for r in rows if r.get("precision") == "fp32" and not _sweep(r)]
    return [fig for extra, rs in sorted(split.items())
            if (fig := bits_rounding_heatmap(rs + fp32, key, extra, x_key)) is not None]


def section_html(rows: list[dict[str, Any]]) -> str:
    """The Studies section (HTML with plotly divs), or "" when no row carries a sweep that charts apply to."""
    rows = _latest(rows)
    if not any(_sweep(r) for r in rows):
        return ""
    parts = []
    for key, rs in sorted(_groups(rows).items(), key=lambda kv: tuple(map(str, kv[0]))):
        figs = [f for f in [calibration_curves(rs, key), *heatmaps(rs, key)] if f is not None]
        if figs:
            model, device, runtime, batch = key
            parts.append(f"<h3>{esc(model)} <span class='muted'>{esc(runtime)}, batch "
                         f"{esc(str(batch))}, {esc(device)}</span></h3>")
            parts.extend(f"<div class='chart'>{to_div(f)}</div>" for f in figs)
    if not parts:
        return ""
    return ("<h2>Studies</h2><p class='muted'>Variants expanded from swept keys: accuracy against the calibration-set "
            "size, one line per calibration method (dotted: FP32), and accuracy by weight bit width × weight rounding "
            "(or × the other swept key).</p>"
            + "".join(parts))

