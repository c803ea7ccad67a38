"""The comparison table, as plain data that HTML, Markdown and CSV all render."""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from .model import Report, device_key, fp32_reference, runtime_label, settings_summary

# (key, header, format, better): better is "max", "min" or None (not ranked).
COLUMNS = [
    ("variant", "variant", "{}", None),
    ("settings", "settings", "{}", None),
    ("runtime", "runtime", "{}", None),
    ("batch", "batch", "{}", None),
    ("top1", "top-1 %", "{:.2f}", "max"),
    ("delta", "Δ vs FP32 (pts)", "{:+.2f}", "max"),
    ("agreement", "agree w/ FP32 %", "{:.1f}", "max"),
    ("p50", "p50 ms", "{:.3f}", "min"),
    ("p99", "p99 ms", "{:.3f}", "min"),
    ("p50_pct", "p50 % of FP32", "{:.0f}", "min"),
    ("speedup", "speedup vs FP32 (interleaved)", "{:.2f}×", "max"),
    ("throughput", "images/s", "{:,.0f}", "max"),
    ("size_mb", "size MB", "{:.3f}", "min"),
    ("size_pct", "size % of FP32", "{:.0f}", "min"),
    ("quant_time", "calib s", "{:.1f}", None),
    ("quant_mem", "calib peak MB", "{:.0f}", None),
    ("ran_as", "ran as", "{}", None),
]


def comparison_groups(report: Report) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Table rows grouped by (model, device), each with values for every column in COLUMNS."""
    ref = fp32_reference(report.ok)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in report.ok:
        base = ref.get((r.get("model"), device_key(r), runtime_label(r), r.get("batch")))
        p50 = r.get("compute_p50_ms")
        top1 = r.get("top1")
        share = r.get("int8_op_share")
        ran = r.get("exec_precision") or "?"
        if share is not None and ran in ("int8", "mixed"):
            ran += f" ({share:.0%} int8)"
        groups[(str(r.get("model")), device_key(r))].append({
            "variant": r.get("variant"), "settings": settings_summary(r), "runtime": runtime_label(r),
            "batch": r.get("batch"),
            "top1": top1 * 100 if top1 is not None else None,
            "delta": (top1 - base["top1"]) * 100 if base and top1 is not None and base.get("top1") is not None else None,
            "agreement": r["agreement_top1"] * 100 if r.get("agreement_top1") is not None else None,
            "p50": p50, "p99": r.get("compute_p99_ms"),
            "p50_pct": 100 * p50 / base["compute_p50_ms"] if base and p50 and base.get("compute_p50_ms") else None,
            "speedup": r.get("speedup_interleaved") if r.get("speedup_interleaved") is not None
            else (100 / (100 * p50 / base["compute_p50_ms"]) if base and p50 and base.get("compute_p50_ms") else None),
            "throughput": r.get("throughput_ips"),
            "size_mb": r["size_bytes"] / 1e6 if r.get("size_bytes") else None,
            "size_pct": 100 * r["size_bytes"] / base["size_bytes"] if base and r.get("size_bytes") and base.get("size_bytes") else None,
            "quant_time": r.get("quant_time_s"), "quant_mem": r.get("quant_peak_mem_mb"),
            "ran_as": ran, "warning": r.get("audit_warning") or "", "identical_to": r.get("identical_to") or "",
            "weights": r.get("weights") or "", "row": r,
        })
    for rows in groups.values():
        rows.sort(key=lambda x: (str(x["runtime"]), x["batch"] or 0, {"fp32": 0, "fp16": 1}.get(str(x["row"].get("precision")), 2), str(x["variant"])))
    return dict(groups)


def best_values(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Best value of each ranked column within one table (per batch size for latency columns)."""
    best: dict[str, Any] = {}
    for key, _, _, better in COLUMNS:
        if not better:
            continue
        vals = [r[key] for r in rows if r.get(key) is not None]
        if vals:
            best[key] = max(vals) if better == "max" else min(vals)
    return best


def fmt(value: Any, spec: str) -> str:
    if value is None or value == "":
        return "—"
    try:
        return spec.format(value)
    except (ValueError, TypeError):
        return str(value)
