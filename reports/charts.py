"""Plotly figures for the report (bar, box and scatter only: the cartesian bundle we embed)."""
from __future__ import annotations

import html
from collections import defaultdict
from importlib import resources
from typing import Any

from quantbench.common.row_format import is_number
from quantbench.reports.console import timing_flag, transfer_ms

from .model import runtime_label
from .verdict import interval

PHASES = [("io", "I/O (read + preprocess)", "#9e9e9e"), ("h2d", "host→device", "#f28e2b"),
          ("compute", "compute", "#4e79a7"), ("d2h", "device→host", "#e15759")]
MAX_RAW = 400  # raw samples per box: enough for the shape, small enough for the file


def esc(text: Any) -> str:
    """Text for a Plotly label or HTML element content (never an attribute value): Plotly reads <a href>,
    <span style>, <b> … in names, titles, tick and hover labels as markup, and decodes entities, so
    escaping "&", "<" and ">" shows any string literally, as it does in the report's own HTML."""
    return html.escape(str(text), quote=False)


def to_div(fig: Any | None) -> str:
    """A figure as an HTML <div> for a page that embeds plotly.js once ("" for no figure).

    Plotly's own JSON encoder escapes "<", ">" and "/" inside strings, so text from results cannot
    close the <script> block it lives in.
    """
    if fig is None:
        return ""
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False, "responsive": True})


def _label(r: dict[str, Any], with_device: bool = False) -> str:
    """Escaped row label for an axis; ⚠ marks a row whose timing is not valid."""
    text = f"{r.get('variant')} · {runtime_label(r)} · b{r.get('batch')}"
    text = f"{text} · {r.get('device')}" if with_device else text
    return esc(text + (" ⚠" if timing_flag(r) else ""))


def apply_layout(fig: Any, title: str, height: int) -> None:
    """``title`` is raw text (escaped here); axis titles set by callers are fixed text."""
    fig.update_layout(title=esc(title), height=height, margin={"l": 10, "r": 10, "t": 50, "b": 40},
                      template="plotly_white", legend={"orientation": "h", "y": -0.25})


def latency_breakdown(rows: list[dict[str, Any]], title: str) -> Any:
    """Stacked horizontal bars of the median of each phase per row.

    A phase that does not exist on the row's device (h2d/d2h on a CPU) or was not measured has no bar
    segment (not a zero one); a phase missing from every row has no legend entry either.
    """
    import plotly.graph_objects as go

    labels = [_label(r) for r in rows]
    fig = go.Figure()
    for key, name, colour in PHASES:
        xs = [transfer_ms(r, key) if key in ("h2d", "d2h") else r.get(f"{key}_p50_ms") for r in rows]
        xs = [x if is_number(x) else None for x in xs]
        if all(x is None for x in xs):
            continue
        fig.add_bar(y=labels, x=xs, name=esc(name), orientation="h", marker_color=colour,
                    hovertemplate="%{y}<br>" + esc(name) + ": %{x:.4f} ms<extra></extra>")
    fig.update_layout(barmode="stack", xaxis_title="median ms per batch", yaxis={"autorange": "reversed"},
                      legend_traceorder="normal")
    apply_layout(fig, title, max(260, 26 * len(rows) + 120))
    return fig


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten on both lower latency and higher accuracy, sorted by latency."""
    front, best_acc = [], float("-inf")
    for lat, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best_acc:
            front.append((lat, acc))
            best_acc = acc
    return front


def accuracy_field(rows: list[dict[str, Any]]) -> tuple[str, str]:
    """(field, axis title): top-1 when any row has it, else top-1 agreement with FP32 (random weights, no labels)."""
    if any(is_number(r.get("top1")) for r in rows):
        return "top1", "top-1 accuracy %"
    return "agreement_top1", "top-1 agreement with FP32 %"


def error_bars(values: list[float], cis: list[tuple[float, float] | None], scale: float = 1.0) -> dict[str, Any] | None:
    """Asymmetric Plotly error bars from 95% intervals (None when no point has one)."""
    if all(ci is None for ci in cis):
        return None
    return {"type": "data", "symmetric": False, "thickness": 1, "width": 3,
            "array": [ci[1] * scale - v if ci else 0 for v, ci in zip(values, cis, strict=True)],
            "arrayminus": [v - ci[0] * scale if ci else 0 for v, ci in zip(values, cis, strict=True)]}


def accuracy_vs_latency(rows: list[dict[str, Any]], title: str, by_device: bool = False,
                        picks: set[int] | None = None) -> Any:
    """One point per variant × runtime (× device) with 95% error bars; the Pareto front per batch as a step line.

    Accuracy is top-1 when any row has it, else the top-1 agreement with FP32 (random weights, no labels).
    Only the points on a front and the verdict's picks (``id`` of their rows, drawn as stars) are labelled;
    every point names itself on hover, so many variants at one accuracy stay readable.
    """
    import plotly.graph_objects as go

    metric, axis = accuracy_field(rows)
    ci_key = "top1_ci95" if metric == "top1" else "agreement_ci95"
    pts = [r for r in rows if is_number(r.get(metric)) and is_number(r.get("compute_p50_ms"))]
    picks = picks or set()
    fig = go.Figure()
    fronts: dict[Any, list[tuple[float, float]]] = {}
    on_front: set[int] = set()
    by_batch: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for r in pts:
        by_batch[(_host(r), r.get("batch")) if by_device else r.get("batch")].append(r)
    for key, rs in by_batch.items():
        front = pareto_front([(r["compute_p50_ms"], r[metric] * 100) for r in rs])
        fronts[key] = front
        on_front |= {id(r) for r in rs if (r["compute_p50_ms"], r[metric] * 100) in front}
    by_rt: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in pts:
        name = f"{runtime_label(r)} · b{r.get('batch')}"
        by_rt[f"{_host(r)} · {name}" if by_device else name].append(r)
    for name, rs in by_rt.items():
        xs, ys = [r["compute_p50_ms"] for r in rs], [r[metric] * 100 for r in rs]
        # No result text in the hovertemplate itself: "%{…}" in a name would be read as a placeholder.
        fig.add_scatter(x=xs, y=ys, mode="markers+text", name=esc(name),
                        text=[esc(r.get("variant")) if id(r) in on_front or id(r) in picks else "" for r in rs],
                        customdata=[esc(r.get("variant")) for r in rs], textposition="top center",
                        marker={"size": 9}, hovertemplate="%{customdata}<br>p50 %{x:.4f} ms<br>%{y:.2f}%",
                        error_y=error_bars(ys, [interval(r, ci_key) for r in rs], 100),
                        error_x=error_bars(xs, [interval(r, "compute_p50_ci95") for r in rs]))
    for key, front in fronts.items():
        if len(front) > 1:
            label = f"Pareto front · {key[0]} · b{key[1]}" if by_device else f"Pareto front · b{key}"
            fig.add_scatter(x=[p[0] for p in front], y=[p[1] for p in front], mode="lines", name=esc(label),
                            line={"dash": "dash", "color": "#555", "shape": "hv"}, hoverinfo="skip")
    chosen = [r for r in pts if id(r) in picks]
    if chosen:
        fig.add_scatter(x=[r["compute_p50_ms"] for r in chosen], y=[r[metric] * 100 for r in chosen], mode="markers",
                        name="verdict", marker={"symbol": "star", "size": 18, "color": "#2e7d32",
                                                "line": {"width": 1, "color": "#fff"}},
                        customdata=[esc(r.get("variant")) for r in chosen],
                        hovertemplate="verdict: %{customdata}<br>p50 %{x:.4f} ms<br>%{y:.2f}%")
    fig.update_layout(xaxis_title="compute p50 ms (log)", xaxis_type="log",
                      yaxis_title=axis + " (95% intervals)")
    apply_layout(fig, title, 460)
    return fig


def latency_distribution(rows: list[dict[str, Any]], title: str) -> Any:
    """Box plot of raw compute latencies per row (downsampled evenly when long)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for r in rows:
        raw = r.get("compute_raw_ms") or []
        if len(raw) > MAX_RAW:
            step = len(raw) / MAX_RAW
            raw = [raw[int(i * step)] for i in range(MAX_RAW)]
        fig.add_box(x=raw, name=_label(r), boxpoints="outliers", orientation="h", showlegend=False,
                    marker={"size": 3})
    fig.update_layout(xaxis_title="compute ms per batch (log)", xaxis_type="log", yaxis={"autorange": "reversed"})
    apply_layout(fig, title, max(260, 26 * len(rows) + 120))
    return fig


def _host(r: dict[str, Any]) -> str:
    return f"{(r.get('env') or {}).get('host', '?')}/{r.get('device')}"


def cross_device_speedups(model: str, devices: list[str], lines: list[dict[str, Any]]) -> Any | None:
    """Horizontal grouped bars: each non-FP32 variant's speedup over its own device's FP32, one colour per device."""
    import plotly.graph_objects as go

    lines = [ln for ln in lines if any(not v["ref"] and v["speedup"] for v in ln["devices"].values())]
    if not lines:
        return None
    labels = [esc(f"{ln['variant']} · {ln['runtime']} · b{ln['batch']}") for ln in lines]
    fig = go.Figure()
    for dev in devices:
        cells = [ln["devices"].get(dev) or {} for ln in lines]
        xs = [c.get("speedup") for c in cells]
        cis = [c.get("speedup_ci95") if c.get("speedup") is not None else None for c in cells]
        # each bar's 95% interval (the interleaved speedup's), none where it was not measured
        error = {"type": "data", "symmetric": False, "color": "#333", "thickness": 1.2,
                 "array": [ci[1] - x if ci else 0 for x, ci in zip(xs, cis, strict=True)],
                 "arrayminus": [x - ci[0] if ci else 0 for x, ci in zip(xs, cis, strict=True)]}
        fig.add_bar(y=labels, x=xs, name=esc(dev), orientation="h", error_x=error if any(cis) else None,
                    hovertemplate="%{y}<br>%{x:.2f}× vs FP32")
    fig.add_vline(x=1, line_dash="dot", line_color="#555")
    fig.update_layout(barmode="group", xaxis_title="speedup vs the same device's FP32, same runtime and batch (×)",
                      yaxis={"autorange": "reversed"}, legend_traceorder="normal")
    apply_layout(fig, f"{model}: speedup over FP32 on each device", max(280, 22 * len(lines) * len(devices) + 140))
    return fig


def plotly_js() -> str:
    """plotly.js (the vendored cartesian bundle, else plotly's own), safe to put inside a <script> block."""
    vendored = resources.files("quantbench.reports").joinpath("vendor/plotly-cartesian.min.js")
    if vendored.is_file():
        js = vendored.read_text(encoding="utf-8")
    else:
        from plotly.offline import get_plotlyjs

        js = get_plotlyjs()
    return js.replace("</script", "<\\/script")
