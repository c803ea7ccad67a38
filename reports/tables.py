"""The comparison table, as plain data that HTML, Markdown and CSV all render."""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from quantbench.common.row_format import MISSING, fmt, is_number
from quantbench.common.row_keys import fp32_references, reference_of
from quantbench.reports.console import (
    Footnotes,
    against_reference,
    ran_as_text,
    speedup_of,
    speedup_text,
    transfer_ms,
)

from .model import Report, device_key, runtime_label, settings_summary
from .verdict import (
    ci_half_pts,
    delta_pts,
    delta_text,
    delta_title,
    interval,
    separated_best,
    signed,
    timing_problem,
)

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
    ("io_p50", "I/O p50 ms", "{:.3f}", None),
    ("h2d_p50", "h2d p50 ms", "{:.3f}", None),
    ("d2h_p50", "d2h p50 ms", "{:.3f}", None),
    ("p50_pct", "p50 % of FP32", "{:.0f}", "min"),
    ("speedup", "speedup vs FP32 (interleaved)", "{:.2f}×", "max"),
    ("throughput", "images/s", "{:,.0f}", "max"),
    ("size_mb", "size MB", "{:.3f}", "min"),
    ("size_pct", "size % of FP32", "{:.0f}", "min"),
    ("eval_wall", "test set s", "{:.3f}", None),
    ("eval_wall_pct", "test set time % of FP32", "{:.0f}", None),
    ("params", "params", "{:,.0f}", None),
    ("trainable", "trainable", "{:,.0f}", None),
    ("non_trainable", "non-trainable", "{:,.0f}", None),
    ("quant_time", "calib s", "{:.1f}", None),
    # calibration time over its floor (the FP32 forward time of its passes, measured in the same process)
    ("calib_ratio", "calib × floor", "{:.2f}×", None),
    ("quant_mem", "calib peak MiB", "{:.0f}", None),  # memory: quant_peak_mem_mb is MiB (the worker's VmHWM)
    ("ran_as", "ran as", "{}", None),
]
RELATIVE = {"delta", "p50_pct", "speedup", "size_pct", "eval_wall_pct"}
NOTED = {"top1", "speedup", "p50"}  # columns whose cell can carry a footnote (why missing, why not valid)


def comparison_groups(report: Report) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Table rows grouped by (model, device), each with values for every column in COLUMNS."""
    ref = fp32_references(report.ok)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in report.ok:
        base = reference_of(r, ref)
        vs = against_reference(r, base)
        is_ref = vs["ref"]
        rel = base if base is not None and not is_ref else None  # relative columns stay empty on the reference
        p50 = r.get("compute_p50_ms")
        top1 = r.get("top1")
        paired = delta_pts(r)  # vs FP32 on the same images, with its interval (schema 3)
        groups[(str(r.get("model")), device_key(r))].append({
            "variant": f"{r.get('variant')} (older generation)" if r.get("_superseded") else r.get("variant"),
            "settings": settings_summary(r), "runtime": runtime_label(r),
            "batch": r.get("batch"),
            "top1": top1 * 100 if top1 is not None else None,
            "delta": paired[0] if paired else None if is_ref else vs["delta_pts"],
            "delta_text": delta_text(r), "delta_title": delta_title(r),
            "agreement": r["agreement_top1"] * 100 if r.get("agreement_top1") is not None else None,
            "p50": p50, "p99": r.get("compute_p99_ms"), "io_p50": r.get("io_p50_ms"),
            "h2d_p50": transfer_ms(r, "h2d"), "d2h_p50": transfer_ms(r, "d2h"),
            "p50_pct": _p50_pct(r, rel),
            "speedup": None if is_ref else vs["speedup"],  # the reference reads "ref", like the other relative columns
            "throughput": r.get("throughput_ips"),
            "size_mb": r["size_bytes"] / 1e6 if r.get("size_bytes") else None,
            "size_pct": 100 * r["size_bytes"] / rel["size_bytes"] if rel and r.get("size_bytes")
            and rel.get("size_bytes") else None,
            "eval_wall": r.get("eval_wall_s"),
            "eval_wall_pct": 100 * r["eval_wall_s"] / rel["eval_wall_s"] if rel and r.get("eval_wall_s")
            and rel.get("eval_wall_s") else None,
            "params": r.get("param_count"), "trainable": r.get("trainable_params"),
            "non_trainable": r.get("non_trainable_params"),
            "quant_time": r.get("quant_time_s"), "quant_mem": r.get("quant_peak_mem_mb"),
            "calib_ratio": r.get("calib_time_ratio"),
            "ran_as": ran_as_text(r), "warning": r.get("audit_warning") or "",
            "identical_to": r.get("identical_to") or "",
            "weights": r.get("weights") or "", "ref": is_ref, "row": r, "timing": vs["timing"],
            "notes": {**vs["notes"], "p50": vs["timing"]},
        })
    for rows in groups.values():
        rows.sort(key=lambda x: (str(x["runtime"]), x["batch"] or 0,
                                 {"fp32": 0, "fp16": 1}.get(str(x["row"].get("precision")), 2), str(x["variant"])))
    return dict(groups)


def _p50_pct(row: dict[str, Any], rel: dict[str, Any] | None) -> float | None:
    """Time as % of FP32: 100 / the interleaved speedup (the two timed turn by turn), so it cannot contradict
    the speedup column; from the two rows' separately timed p50s only where no speedup was measured."""
    if rel is None:
        return None
    sp = speedup_of(row)
    if sp:
        return 100.0 / sp
    p50, base = row.get("compute_p50_ms"), rel.get("compute_p50_ms")
    return 100 * p50 / base if p50 and base else None


# Each ranked column's 95% interval, in the column's unit (None: the column has none, so no value stands
# out from noise); EXACT columns are free of noise (sizes): only equal values tie.
def _pts(row: dict[str, Any], key: str) -> tuple[float, float] | None:
    ci = interval(row, key)
    return (ci[0] * 100, ci[1] * 100) if ci else None


INTERVALS = {
    "top1": lambda r: _pts(r, "top1_ci95"), "delta": lambda r: delta_pts(r)[1:] if delta_pts(r) else None,
    "agreement": lambda r: _pts(r, "agreement_ci95"), "p50": lambda r: interval(r, "compute_p50_ci95"),
    "speedup": lambda r: interval(r, "speedup_interleaved_ci95"),
}
EXACT = {"size_mb", "size_pct"}
SPEED = {"p50", "p99", "p50_pct", "speedup", "throughput"}


def best_cells(rows: list[dict[str, Any]]) -> dict[str, tuple[set[int], bool]]:
    """Per ranked column: the indices (into ``rows``) of the best value and of those tied with it within the
    95% intervals, and whether the best stands alone (:func:`.verdict.separated_best`). A column with
    no interval, or where every value ties, has no entry."""
    out: dict[str, tuple[set[int], bool]] = {}
    for key, _, _, better in COLUMNS:
        if not better:
            continue
        idx = [i for i, r in enumerate(rows) if is_number(r.get(key)) and not (r.get("ref") and key in RELATIVE)
               and not (key in SPEED and timing_problem(r["row"]))]  # a noisy time is no candidate
        if key not in EXACT and key not in INTERVALS:
            continue
        entries = [(rows[i][key], None if key in EXACT else INTERVALS[key](rows[i]["row"])) for i in idx]
        best, alone = separated_best(entries, better, exact=key in EXACT)
        if best:
            out[key] = ({idx[j] for j in best}, alone)
    return out


def cell_text(row: dict[str, Any], key: str, spec: str, notes: Footnotes | None = None) -> str:
    """A formatted table cell, as HTML and Markdown show it (before their own escaping).

    The FP32 reference row reads "ref" in the columns relative to it; ⚠ marks a p50 whose timing is not
    valid and a "ran as" whose execution did not match the label; with ``notes``, a cell of a NOTED
    column gets the number of its footnote (why the value is missing or not valid).
    """
    if row.get("ref") and key in RELATIVE:
        return "ref"
    if key == "delta" and row.get("delta_text"):
        text = row["delta_text"]
    elif key == "top1" and row.get("top1") is not None and ci_half_pts(row["row"], "top1_ci95") is not None:
        text = f"{fmt(row['top1'], spec)} ±{ci_half_pts(row['row'], 'top1_ci95'):.1f}"
    elif key == "delta" and is_number(row.get("delta")):
        text = signed(row["delta"])  # rows without the paired comparison: the plain difference, no interval
    elif key == "speedup" and is_number(row.get("speedup")):
        text = speedup_text(row["row"], row["speedup"])  # with its 95% interval
    elif key == "calib_ratio" and is_number(row.get("calib_ratio")) and interval(row["row"], "calib_time_ratio_ci95"):
        lo, hi = interval(row["row"], "calib_time_ratio_ci95")  # type: ignore[misc]
        text = f"{fmt(row['calib_ratio'], spec)} [{lo:.2f}–{hi:.2f}]"  # the floor's 95% interval, as speedups show it
    else:
        text = fmt(row.get(key), spec)
    # images/s comes from the same separately timed loop as p50: the same doubt applies to it
    if (key in ("p50", "throughput") and row.get("timing")) or (key == "ran_as" and row.get("warning")):
        text += " ⚠"
    if notes is not None and key in NOTED:
        text += notes.mark(row["notes"].get(key, ""))
    return text


def cross_device_table(report: Report) -> dict[str, tuple[list[str], list[dict[str, Any]]]]:
    """Per model: the devices, and one line per (variant, runtime, batch) with each device's p50 and speedup.

    Speedups are relative to each device's own FP32 on the same runtime and batch; only models measured on
    two or more devices are listed.
    """
    ref = fp32_references(report.ok)
    out: dict[str, tuple[list[str], list[dict[str, Any]]]] = {}
    by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in report.ok:
        by_model[str(r.get("model"))].append(r)
    for model, rows in sorted(by_model.items()):
        devices = sorted({device_key(r) for r in rows})
        if len(devices) < 2:
            continue
        lines: dict[tuple, dict[str, Any]] = {}
        for r in rows:
            key = (runtime_label(r), r.get("batch") or 0, str(r.get("precision")), str(r.get("variant")))
            line = lines.setdefault(key, {"variant": r.get("variant"), "runtime": runtime_label(r),
                                          "batch": r.get("batch"), "devices": {}})
            vs = against_reference(r, reference_of(r, ref))
            line["devices"][device_key(r)] = {"p50": r.get("compute_p50_ms"), "speedup": vs["speedup"],
                                              "speedup_ci95": None if vs["ref"] or vs["speedup"] is None else
                                              interval(r, "speedup_interleaved_ci95"),
                                              "ref": vs["ref"], "note": vs["notes"]["speedup"], "timing": vs["timing"]}
        order = sorted(lines, key=lambda k: (k[0], k[1], {"fp32": 0, "fp16": 1}.get(k[2], 2), k[3]))
        out[model] = (devices, [lines[k] for k in order])
    return out


def cross_cell(v: dict[str, Any] | None) -> str:
    """The "p50 (speedup× [95% interval])" text for one device in the cross-device table."""
    if v is None:
        return MISSING
    ci = v.get("speedup_ci95")
    ratio = "ref" if v["ref"] else speedup_text({"speedup_interleaved_ci95": list(ci) if ci else None}, v["speedup"])
    return f"{fmt(v['p50'], '{:.3f}')}{' ⚠' if v.get('timing') else ''} ({ratio})"
