"""One self-contained HTML file: tables, charts (plotly, embedded once), failures. No CDN, no server."""
from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import quantbench.reports.charts as charts
from quantbench.common.row_format import fmt
from quantbench.reports.console import Footnotes

from .atomic import write_atomic
from .method import timing_method
from .model import Report, dataset_text, device_key
from .sensitivity import section_for_sources
from .studies import section_html as studies_section
from .tables import (
    COLUMNS,
    NOTED,
    best_cells,
    cell_text,
    comparison_groups,
    cross_cell,
    cross_device_table,
)
from .verdict import DEFAULT_BUDGET_PTS, points, verdict_lines, verdicts

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>quantbench report</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1500px}
h1{margin-bottom:4px} h2{margin-top:36px;border-bottom:2px solid #4e79a7;padding-bottom:4px}
h3{margin-top:24px} .muted{color:#666} .warn{color:#9a6700} .bad{color:#b42318}
table{border-collapse:collapse;font-size:13px;margin:8px 0 16px} th,td{border:1px solid #ddd;padding:4px 7px;text-align:right}
th{background:#f3f5f9;position:sticky;top:0} td.l,th.l{text-align:left} tr.flag td{background:#fff4e0}
td.best{font-weight:700;background:#e7f5ea} td.tie{background:#f1f8f2} td.ns{color:#888} td.nw{white-space:nowrap}
.verdict{border-left:4px solid #999;padding:4px 10px;margin:8px 0;background:#fafafa} .v-decided{border-color:#2e7d32}
.v-tie{border-color:#9a6700} .verdict p{margin:2px 0} .pill{display:inline-block;padding:1px 6px;border-radius:8px;background:#eef;margin-right:4px} .pill-bad{background:#fde2e1;color:#b42318}
.chart{margin:8px 0 24px} code{background:#f5f5f5;padding:0 3px} ol.notes{font-size:13px}
</style>
<script>{{ plotly_js | safe }}</script>
</head><body>
<h1>quantbench report</h1>
<p class="muted">generated {{ generated }} from {{ sources|length }} results file(s): {% for s in sources %}<code>{{ s }}</code> {% endfor %}</p>
<p><span class="pill">{{ counts.ok }} ok</span><span class="pill {{ 'pill-bad' if counts.failed else '' }}">{{ counts.failed }} failed</span><span class="pill">{{ counts.skipped }} skipped</span></p>
{% if reasons %}<ul class="muted">{% for (status, why), n in reasons %}<li>{{ n }} {{ status }}: {{ why }}</li>{% endfor %}</ul>{% endif %}
<details class="muted" open><summary>How timing was measured</summary>{% for m in method %}<p>{{ m }}</p>{% endfor %}</details>
{% if warnings %}<div class="warn"><b>While loading:</b><ul>{% for w in warnings %}<li>{{ w }}</li>{% endfor %}</ul></div>{% endif %}

<h2 id="verdict">Verdict</h2>
<p class="muted">Per model, device and batch: the fastest variant × runtime whose top-1 loss is not significantly larger than the budget of {{ budget }} (its 95% interval for Δ vs FP32, paired on the same images, reaches above minus the budget), whose timing is valid and not noisy. "Faster" counts only beyond the 95% intervals (speed-up intervals within a runtime, compute p50 intervals across runtimes); rows that cannot be separated are named as ties.</p>
{% for v in verdicts %}<div class="verdict v-{{ v.status }}"><p><b>{{ v.lines[0] }}</b></p>{% for ln in v.lines[1:] %}<p>{{ ln }}</p>{% endfor %}</div>
{% else %}<p class="muted">No measured rows to decide on.</p>{% endfor %}

<h2>Devices and software</h2>
<table><tr><th class="l">device</th><th class="l">cores, memory</th><th class="l">CPU flags</th><th class="l">GPU</th><th class="l">OS · Python</th><th class="l">versions</th><th class="l">git</th></tr>
{% for d in devices %}<tr><td class="l">{{ d.key }}</td><td class="l">{{ d.hw }}</td><td class="l">{{ d.flags }}</td><td class="l">{{ d.gpu }}</td><td class="l">{{ d.os }}</td><td class="l">{{ d.versions }}</td><td class="l">{{ d.git }}</td></tr>{% endfor %}
</table>

{% for g in groups %}
<h2>{{ g.model }} <span class="muted">on {{ g.device }}</span></h2>
{% if g.random %}<p class="warn">Weights are randomly initialised: accuracy is meaningless here; read the agreement with FP32.</p>{% endif %}
<p class="muted">Dataset: {{ g.dataset }}. Latencies are per batch; p50/p99 are compute time. Best value per column and batch size in <b>bold green</b> only where it is separated from the runner-up beyond the 95% intervals (light green: tied for best within them; columns without intervals are not ranked); Δ is paired with FP32 on the same images, ± half its 95% interval, greyed with ≈ when not significant (exact McNemar p ≥ 0.05); rows whose execution did not match their label, or whose timing is not valid, noisy (other processes busy while it was timed) or at odds with its interleaved speed-up (⚠), are shaded. The speed-up is FP32 time / this time, timed turn by turn in one process, with its 95% interval in brackets; "p50 % of FP32" is 100 / that speed-up.</p>
<table><tr>{% for c in columns %}<th class="{{ 'l' if loop.index <= 3 or c[0]=='ran_as' else '' }}">{{ c[1] }}</th>{% endfor %}</tr>
{% for r in g.rows %}<tr class="{{ 'flag' if r.warning or r.timing else '' }}">{% for c in r.cells %}<td class="{{ c.cls }}" title="{{ c.title }}">{{ c.text }}</td>{% endfor %}</tr>{% endfor %}
</table>
{% for r in g.rows if r.warning %}<div class="warn">⚠ {{ r.name }}: {{ r.warning }}</div>{% endfor %}
{% if g.notes %}<ol class="muted notes">{% for n in g.notes %}<li>{{ n }}</li>{% endfor %}</ol>{% endif %}
{% for r in g.rows if r.identical_to %}<div class="warn">≡ {{ r.name }} is byte-identical to {{ r.identical_to }}</div>{% endfor %}
<h3>Latency breakdown</h3><div class="chart">{{ g.breakdown | safe }}</div>
<h3>Accuracy vs latency</h3><div class="chart">{{ g.scatter | safe }}</div>
<h3>Latency distributions</h3><div class="chart">{{ g.boxes | safe }}</div>
{% endfor %}

<h2>Cross-device view</h2>
{% for c in cross %}
<h3>{{ c.model }}</h3>
<p class="muted">Compute p50 ms and, in brackets, the interleaved speedup over the same device's FP32 on the same runtime and batch ("—" where it was not measured; hover for why).</p>
<table><tr><th class="l">variant</th><th class="l">runtime</th><th>batch</th>{% for d in c.devices %}<th>{{ d }}</th>{% endfor %}</tr>
{% for ln in c.lines %}<tr><td class="l">{{ ln.variant }}</td><td class="l">{{ ln.runtime }}</td><td>{{ ln.batch }}</td>{% for t in ln.cells %}<td title="{{ t.title }}">{{ t.text }}</td>{% endfor %}</tr>{% endfor %}
</table>
<div class="chart">{{ c.bars | safe }}</div>
<div class="chart">{{ c.scatter | safe }}</div>
{% else %}<p class="muted">No model was measured on more than one device: add results files from other devices to compare.</p>{% endfor %}

{{ studies | safe }}

{{ sensitivity | safe }}

<h2>Failed and skipped cells</h2>
{% if problems %}<table><tr><th class="l">status</th><th class="l">model</th><th class="l">variant</th><th class="l">runtime</th><th class="l">device</th><th>batch</th><th class="l">reason</th></tr>
{% for r in problems %}<tr><td class="l {{ 'bad' if r.status == 'failed' else 'muted' }}">{{ r.status }}</td><td class="l">{{ r.model }}</td><td class="l">{{ r.variant }}</td><td class="l">{{ r.runtime }}</td><td class="l">{{ r.device }}</td><td>{{ r.batch }}</td><td class="l">{{ r.error }}</td></tr>{% endfor %}
</table>{% else %}<p class="muted">None.</p>{% endif %}
</body></html>
"""  # noqa: E501 - the template's lines are the page's


def _devices(report: Report) -> list[dict[str, str]]:
    seen: dict[str, dict[str, str]] = {}
    for r in report.rows:
        env = r.get("env") or {}
        if not env:
            continue
        key = device_key(r)
        if key in seen:
            continue
        seen[key] = {
            "key": key, "flags": fmt(", ".join(env.get("cpu_flags") or [])),
            "gpu": fmt("; ".join(f"{g.get('name')} (driver {g.get('driver')})" for g in env.get("gpu") or [])),
            "os": f"{env.get('os', '?')} · Python {env.get('python', '?')}",
            "hw": fmt(", ".join(filter(None, [
                f"{env['cores_physical']} cores" if env.get("cores_physical") else "",
                f"{env['memory_gb']} GB" if env.get("memory_gb") else ""]))),
            "versions": ", ".join(f"{k} {v}" for k, v in sorted((env.get("versions") or {}).items())),
            "git": fmt(env.get("git_rev")),
        }
    return list(seen.values())


SETTINGS_SHOWN = 2  # parts of the settings summary shown in the cell; all of them on hover


def _cells(row: dict[str, Any], marks: dict[str, str], notes: Footnotes) -> list[dict[str, str]]:
    """One table row's cells: text (with footnote marks), CSS class and tooltip.

    ``marks`` maps a column to "best" (separated from the runner-up beyond the 95% intervals) or "tie"
    (tied for best within them).
    """
    cells = []
    for key, _, spec, _ in COLUMNS:
        text, title = cell_text(row, key, spec, notes), ""
        if key == "variant" and row.get("identical_to"):
            text += f" (≡ {row['identical_to']})"
        if key == "ran_as" and row["warning"]:
            title = row["warning"]
        if key in NOTED and row["notes"].get(key):
            title = row["notes"][key]
            if key == "p50" and row["row"].get("timing_noisy_reason"):
                title += f" ({row['row']['timing_noisy_reason']})"  # this row's figures on hover
        if key == "delta" and row.get("delta_title") and not row.get("ref"):
            title = row["delta_title"]
        if key == "settings" and text.count(", ") >= SETTINGS_SHOWN:  # one line; the rest on hover
            title = text
            text = ", ".join(text.split(", ")[:SETTINGS_SHOWN]) + " …"
        mark = marks.get(key, "")
        if mark == "tie":
            title = (title + "; " if title else "") + "tied for best within the 95% intervals"
        cls = ("l " if key in ("variant", "settings", "runtime", "ran_as") else "") + mark
        if key in ("settings", "top1", "delta"):
            cls += " nw"  # one line each
        if key == "delta" and (row.get("delta_text") or "").startswith("≈"):
            cls += " ns"
        cells.append({"text": text, "cls": cls.strip(), "title": title})
    return cells


def _cross_title(v: dict[str, Any] | None) -> str:
    if not v:
        return ""
    return "; ".join(t for t in (v.get("timing"), f"speedup missing: {v['note']}" if v.get("note") else "") if t)


def _cross(report: Report) -> list[dict[str, Any]]:
    sections = []
    for model, (devices, lines) in cross_device_table(report).items():
        rows = [r for r in report.ok if str(r.get("model")) == model]
        sections.append({
            "model": model, "devices": devices,
            "lines": [dict(ln, cells=[{"text": cross_cell(ln["devices"].get(d)),
                                       "title": _cross_title(ln["devices"].get(d))} for d in devices])
                      for ln in lines],
            "bars": charts.to_div(charts.cross_device_speedups(model, devices, lines)),
            "scatter": charts.to_div(charts.accuracy_vs_latency(
                rows, f"{model}: accuracy vs compute latency, all devices", by_device=True)),
        })
    return sections


def render_html(report: Report, out: Path, budget_pts: float = DEFAULT_BUDGET_PTS) -> Path:
    """Write the report to ``out`` (one file, opens offline) and return its path.

    ``budget_pts``: the verdict's accuracy budget in top-1 points (``[run] accuracy_budget_pts``).
    """
    import jinja2

    found = verdicts(report.current_ok, device_key, budget_pts)
    picks = {id(v.pick) for v in found if v.pick is not None and v.status != "undecided"}
    groups = []
    for (model, device), rows in sorted(comparison_groups(report).items()):
        marks: list[dict[str, str]] = [{} for _ in rows]
        by_batch: dict[Any, list[int]] = defaultdict(list)
        for i, r in enumerate(rows):
            by_batch[r["batch"]].append(i)
        for idx in by_batch.values():
            for key, (chosen, alone) in best_cells([rows[i] for i in idx]).items():
                for j in chosen:
                    marks[idx[j]][key] = "best" if alone else "tie"
        raw_rows = [r["row"] for r in rows]
        notes = Footnotes()
        table_rows = [{"cells": _cells(r, marks[i], notes), "warning": r["warning"], "identical_to": r["identical_to"],
                       "timing": r["timing"], "name": f"{r['variant']} on {r['runtime']} (batch {r['batch']})"}
                      for i, r in enumerate(rows)]
        first = raw_rows[0]
        groups.append({
            "model": model, "device": device,
            "random": any(r.get("weights") == "random-init" for r in raw_rows),
            "dataset": dataset_text(first),
            "rows": table_rows, "notes": notes.texts,
            "breakdown": charts.to_div(charts.latency_breakdown(
                raw_rows, f"{model}: where the time goes (median per phase)")),
            "scatter": charts.to_div(charts.accuracy_vs_latency(raw_rows, f"{model}: accuracy vs compute latency",
                                                                 picks=picks)),
            "boxes": charts.to_div(charts.latency_distribution(raw_rows, f"{model}: compute latency distribution")),
        })
    counts = Counter(r.get("status") for r in report.rows)
    problems = [{"status": r.get("status"), "model": r.get("model"), "variant": r.get("variant"),
                 "runtime": r.get("runtime_label") or r.get("runtime"), "device": r.get("device"),
                 "batch": r.get("batch"), "error": r.get("error")} for r in report.not_ok]
    env = jinja2.Environment(autoescape=True)
    chunks = env.from_string(TEMPLATE).generate(
        plotly_js=charts.plotly_js(),
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), sources=report.sources,
        counts={"ok": counts.get("ok", 0), "failed": counts.get("failed", 0), "skipped": counts.get("skipped", 0)},
        warnings=report.warnings, method=timing_method(report.rows), devices=_devices(report), groups=groups,
        columns=COLUMNS, cross=_cross(report), problems=problems, budget=points(budget_pts),
        verdicts=[{"status": v.status, "lines": [ln.strip() for ln in verdict_lines(v)]} for v in found],
        studies=studies_section(report.rows),  # charts over swept variant keys
        sensitivity=section_for_sources(report.sources),  # sensitivity.jsonl next to the results files
        reasons=Counter((p["status"], p["error"]) for p in problems).most_common())
    return write_atomic(out, chunks)
