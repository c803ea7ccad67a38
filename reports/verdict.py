"""What the numbers allow one to say: which differences are real, which value is best, and the verdict.

Used by the console table (``quantbench run``) and by the report, so both say the same thing.

Rules (95% intervals; methods in quantbench/common/accuracy_stats.py and harness/measure/stats.py):

- A Δ top-1 vs FP32 is *significant* when the exact McNemar p < 0.05 (the interval is shown with it).
- One row is *faster beyond noise* than another when their intervals do not overlap: speed-up
  intervals (``speedup_interleaved_ci95``; the FP32 reference is exactly 1) for rows of one runtime,
  compute p50 intervals (``compute_p50_ci95``) across runtimes. A missing interval is never separable.
- A row *qualifies* for the verdict when its accuracy loss is not significantly larger than the budget
  (the upper end of its Δ interval is ≥ −budget) and its timing is valid and not noisy.
- The *verdict* is the fastest qualifying row (lowest compute p50) when it is faster beyond noise than
  every other qualifying row; when some cannot be separated from it they are named as a tie; when
  nothing can be decided (no paired accuracy, every row noisy, nothing separable) it says why.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from quantbench.common.row_keys import is_fp32_reference, runtime_label

DEFAULT_BUDGET_PTS = 1.0
ALPHA = 0.05
RESOLVE_PTS = 0.5  # the CLI says how many images would resolve differences of this size
MAX_NAMES = 4  # rows named per reason in a verdict; the rest are counted
MINUS = "\u2212"


def interval(row: dict[str, Any], key: str) -> tuple[float, float] | None:
    """``row[key]`` as (lo, hi) when it is a well-formed interval, else None (not measured, or edited by hand)."""
    value = row.get(key)
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    lo, hi = value
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (lo, hi)):
        return None
    return (float(lo), float(hi)) if lo <= hi else None


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


# ---- accuracy: Δ vs FP32 -------------------------------------------------------------------------------

def delta_pts(row: dict[str, Any]) -> tuple[float, float, float] | None:
    """(Δ, lo, hi) in top-1 points from the paired comparison with FP32, or None when not measured."""
    ci, delta = interval(row, "delta_top1_ci95"), _number(row.get("delta_top1"))
    if ci is None or delta is None:
        return None
    return delta * 100, ci[0] * 100, ci[1] * 100


def delta_significant(row: dict[str, Any]) -> bool | None:
    """True/False: whether Δ vs FP32 is significant at 95% (exact McNemar); None when not measured."""
    p = _number(row.get("delta_top1_p"))
    if p is not None:
        return p < ALPHA
    d = delta_pts(row)
    return None if d is None else (d[1] > 0 or d[2] < 0)


def points(value: float) -> str:
    """``1 point``, ``0.5 points``."""
    return f"{value:g} point" + ("" if value == 1 else "s")


def signed(value: float, decimals: int = 2) -> str:
    """``+0.40`` / ``−0.51`` (a true minus sign), ``0.00`` for zero."""
    text = f"{abs(value):.{decimals}f}"
    if float(text) == 0:
        return text
    return ("+" if value > 0 else MINUS) + text


def delta_text(row: dict[str, Any]) -> str | None:
    """``−0.51 ±0.92`` (half the interval's width), with ``≈`` in front when not significant; None if unmeasured."""
    d = delta_pts(row)
    if d is None:
        return None
    text = f"{signed(d[0])} ±{(d[2] - d[1]) / 2:.2f}"
    return f"≈{text}" if delta_significant(row) is False else text


def delta_title(row: dict[str, Any]) -> str:
    """Hover text for a Δ cell: the interval, the test and the discordant images."""
    d = delta_pts(row)
    if d is None:
        return ""
    p = _number(row.get("delta_top1_p"))
    b, c = row.get("fp32_only_correct"), row.get("variant_only_correct")
    sig = {True: "significant", False: "not significant", None: ""}[delta_significant(row)]
    return (f"95% interval {signed(d[1])} .. {signed(d[2])} points (paired with FP32 on the same images, Newcombe); "
            f"exact McNemar p = {p:.3g}; {b} image(s) only FP32 gets right, {c} only this variant: {sig} at 95%"
            if p is not None else f"95% interval {signed(d[1])} .. {signed(d[2])} points")


def ci_half_pts(row: dict[str, Any], key: str) -> float | None:
    """Half the width of a proportion's interval (``top1_ci95``, ``agreement_ci95``) in points."""
    ci = interval(row, key)
    return None if ci is None else (ci[1] - ci[0]) * 50


def resolve_note(rows: list[dict[str, Any]], target_pts: float = RESOLVE_PTS) -> str:
    """One sentence when some Δ interval is wider than ±``target_pts``: how many images would resolve it.

    Uses the widest row's disagreement with FP32: the half-width of a paired difference shrinks as
    1/√n at a fixed rate of discordant images.
    """
    from quantbench.common.accuracy_stats import images_to_resolve

    widest, half = None, target_pts
    for r in rows:
        d = delta_pts(r)
        if d is not None and (d[2] - d[1]) / 2 > half:
            widest, half = r, (d[2] - d[1]) / 2
    if widest is None:
        return ""
    n = _number(widest.get("eval_samples"))
    b, c = _number(widest.get("fp32_only_correct")), _number(widest.get("variant_only_correct"))
    if not n or b is None or c is None:
        return ""
    need = images_to_resolve((b + c) / n, (c - b) / n, target_pts / 100)
    if need is None:
        return ""
    return (f"Δ top-1 intervals reach ±{half:.2f} points on {int(n):,} evaluation images; about {need:,} images "
            f"would resolve {target_pts:g} points (at {widest.get('variant')}'s share of images that only one of it "
            f"and FP32 gets right)")


# ---- speed ---------------------------------------------------------------------------------------------

def timing_problem(row: dict[str, Any]) -> str:
    """Why a row's timing cannot back a decision ("" when it can): not valid, or noisy."""
    if row.get("timing_valid") is False:
        return "timing not valid"
    if row.get("timing_noisy") is True:
        return "timing noisy" + (f" ({row['timing_noisy_reason']})" if row.get("timing_noisy_reason") else "")
    return ""


def speedup_interval(row: dict[str, Any], is_reference: bool = False) -> tuple[float, float] | None:
    """The interleaved speed-up's interval; exactly (1, 1) for the FP32 reference itself."""
    return (1.0, 1.0) if is_reference else interval(row, "speedup_interleaved_ci95")


def is_reference(row: dict[str, Any]) -> bool:
    """The FP32 row a runtime's speed-ups are relative to (a prebuilt or builder FP32 is not):
    :func:`quantbench.common.row_keys.is_fp32_reference`, the rule every table uses."""
    return is_fp32_reference(row)


def faster_beyond_noise(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True when ``a`` is faster than ``b`` and their 95% intervals do not overlap."""
    if runtime_label(a) == runtime_label(b):
        ia, ib = speedup_interval(a, is_reference(a)), speedup_interval(b, is_reference(b))
        return ia is not None and ib is not None and ia[0] > ib[1]
    pa, pb = interval(a, "compute_p50_ci95"), interval(b, "compute_p50_ci95")
    return pa is not None and pb is not None and pa[1] < pb[0]


# ---- best value of a table column ----------------------------------------------------------------------

def separated_best(entries: list[tuple[float, tuple[float, float] | None]], better: str,
                   exact: bool = False) -> tuple[set[int], bool]:
    """Indices of the best entry and those tied with it; and whether the best stands alone.

    ``entries`` are (value, interval or None). The best (max or min) is separated from another entry when
    their intervals do not overlap; ``exact`` values (sizes) have no noise, only equal values tie. With
    every entry tied, or fewer than two, there is no best: the set is empty.
    """
    if len(entries) < 2:
        return set(), False
    sign = 1 if better == "max" else -1
    top = max(range(len(entries)), key=lambda i: sign * entries[i][0])
    value, ci = entries[top]

    def apart(i: int) -> bool:
        v, other = entries[i]
        if exact:
            return v != value
        if ci is None or other is None:
            return False
        return ci[0] > other[1] if better == "max" else ci[1] < other[0]

    tied = {i for i in range(len(entries)) if i == top or not apart(i)}
    if len(tied) == len(entries):
        return set(), False
    return tied, len(tied) == 1


# ---- the verdict ---------------------------------------------------------------------------------------

@dataclass
class Verdict:
    """The decision for one (model, device, batch)."""

    model: str
    device: str
    batch: Any
    budget_pts: float
    status: str  # "decided" | "tie" | "undecided"
    pick: dict[str, Any] | None = None
    tied: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""  # why undecided, or what limited the decision
    excluded: dict[str, list[str]] = field(default_factory=dict)  # why → names of rows that could not be considered
    rejected: list[str] = field(default_factory=list)  # names whose loss is significantly beyond the budget
    front: list[dict[str, Any]] = field(default_factory=list)  # accuracy-vs-latency Pareto front
    reference: dict[str, Any] | None = None  # an FP32 row of the group, for the size comparison
    candidates: int = 0  # rows within the budget with trustworthy timing


def row_name(row: dict[str, Any]) -> str:
    return f"{row.get('variant')} on {runtime_label(row)}"


def _accuracy(row: dict[str, Any]) -> float | None:
    return _number(row.get("top1")) if _number(row.get("top1")) is not None else _number(row.get("agreement_top1"))


def pareto_front(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows no other row beats on both lower compute p50 and higher accuracy (top-1, else agreement), by latency."""
    pts = [r for r in rows if _number(r.get("compute_p50_ms")) is not None and _accuracy(r) is not None]
    front, best = [], -math.inf
    for r in sorted(pts, key=lambda r: (r["compute_p50_ms"], -_accuracy(r))):  # type: ignore[operator]
        if _accuracy(r) > best:  # type: ignore[operator]
            front.append(r)
            best = _accuracy(r)  # type: ignore[assignment]
    return front


def decide(rows: list[dict[str, Any]], model: str, device: str, batch: Any,
           budget_pts: float = DEFAULT_BUDGET_PTS) -> Verdict:
    """The verdict for the ok rows of one (model, device, batch)."""
    v = Verdict(model, device, batch, budget_pts, "undecided", front=pareto_front(rows),
                reference=next((r for r in rows if is_reference(r)), None))
    timed = [r for r in rows if _number(r.get("compute_p50_ms")) is not None]
    if not timed:
        v.reason = "no row has a compute latency"
        return v
    candidates = []
    for r in timed:
        problem = timing_problem(r).split(" (")[0]  # the kind; each row's figures are in the table's notes
        if problem:
            v.excluded.setdefault(problem, []).append(row_name(r))
        elif delta_pts(r) is None:
            v.excluded.setdefault("no top-1 paired with FP32", []).append(row_name(r))
        elif delta_pts(r)[2] < -budget_pts:  # type: ignore[index]
            v.rejected.append(row_name(r))
        else:
            candidates.append(r)
    if not candidates:
        if all(timing_problem(r) for r in timed):
            v.reason = "every row's timing is noisy or not valid: re-run on a quiet machine"
        elif all(delta_pts(r) is None for r in timed):
            note = next((r.get("accuracy_note") for r in timed if r.get("accuracy_note")), "")
            v.reason = ("no row has a top-1 paired with FP32 on the same images"
                        + (f" ({note})" if note else " (rows written before schema 3, or no labels)"))
        elif len(v.rejected) == len(timed):
            v.reason = f"every variant loses significantly more than {points(budget_pts)} of top-1"
        else:
            v.reason = "no row qualifies: each is beyond the budget or left out (below)"
        return v
    pick = min(candidates, key=lambda r: r["compute_p50_ms"])
    v.pick, v.candidates = pick, len(candidates)
    v.tied = [r for r in candidates if r is not pick and not faster_beyond_noise(pick, r)]
    if not v.tied:
        v.status = "decided"
    elif len(v.tied) == len(candidates) - 1 and len(candidates) > 1:
        v.status = "undecided"
        missing = [r for r in candidates if speedup_interval(r, is_reference(r)) is None
                   and interval(r, "compute_p50_ci95") is None]
        v.reason = ("no qualifying row is faster than the others beyond noise"
                    + (f" ({len(missing)} of {len(candidates)} have no speed interval: rows written before "
                       f"intervals were measured, or without an interleave)" if missing
                       else " (all intervals overlap)"))
    else:
        v.status = "tie"
    return v


def verdicts(rows: list[dict[str, Any]], device_of: Callable[[dict[str, Any]], str],
             budget_pts: float = DEFAULT_BUDGET_PTS) -> list[Verdict]:
    """One verdict per (model, device, batch) among the ok rows, in a stable order."""
    groups: dict[tuple[str, str, Any], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r.get("status") == "ok":
            groups[(str(r.get("model")), device_of(r), r.get("batch"))].append(r)
    return [decide(rs, *key, budget_pts=budget_pts)
            for key, rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], _number(kv[0][2]) or 0))]


def _speed_text(row: dict[str, Any]) -> str:
    if is_reference(row):
        return "the FP32 reference"
    s, ci = _number(row.get("speedup_interleaved")), interval(row, "speedup_interleaved_ci95")
    if s is None:
        return "speed-up not measured"
    return f"speed-up {s:.2f}×" + (f" [{ci[0]:.2f}–{ci[1]:.2f}]" if ci else " (no interval)")


def describe_row(row: dict[str, Any], reference: dict[str, Any] | None = None) -> str:
    """``int8-minmax on ort-cpu: Δ −0.51 ±0.92 pts (≈ FP32), speed-up 1.38× [1.26–1.63], p50 0.754 ms,
    0.21 MB (26% of FP32)``."""
    parts = []
    d = delta_text(row)
    if d is not None:
        parts.append(f"Δ top-1 {d.lstrip('≈')} pts" + (" (not significant)" if d.startswith("≈") else ""))
    parts.append(_speed_text(row))
    p50, pci = _number(row.get("compute_p50_ms")), interval(row, "compute_p50_ci95")
    if p50 is not None:
        parts.append(f"p50 {p50:.3f} ms" + (f" [{pci[0]:.3f}–{pci[1]:.3f}]" if pci else ""))
    size = _number(row.get("size_bytes"))
    if size is not None:
        ref = _number((reference or {}).get("size_bytes"))
        parts.append(f"{size / 1e6:.3g} MB" + (f" ({100 * size / ref:.0f}% of FP32)" if ref and reference is not row
                                                 else ""))
    return f"{row_name(row)}: " + ", ".join(parts)


def verdict_lines(v: Verdict) -> list[str]:
    """The verdict as plain sentences (console and report render them alike)."""
    head = f"{v.model} on {v.device}, batch {v.batch} (accuracy budget {points(v.budget_pts)}):"
    lines = [head]
    if v.pick is None or v.status == "undecided":
        lines.append(f"  cannot decide: {v.reason}.")
        if v.pick is not None:
            lines.append(f"  fastest by its median only: {describe_row(v.pick, v.reference)}")
    elif v.status == "decided":
        lines.append(f"  use {describe_row(v.pick, v.reference)}")
        lines.append("  it is faster beyond noise than every other variant within the budget." if v.candidates > 1
                     else "  it is the only row within the budget whose timing can be trusted.")
    else:
        lines.append(f"  fastest: {describe_row(v.pick, v.reference)}")
        lines.append("  tied with (intervals overlap, pick any): " + "; ".join(row_name(r) for r in v.tied) + ".")
    if v.rejected:
        lines.append(f"  beyond the budget (loss significantly > {v.budget_pts:g} pts): " + ", ".join(v.rejected) + ".")
    for why, names in v.excluded.items():
        shown = ", ".join(names) if len(names) <= MAX_NAMES else \
            f"{', '.join(names[:MAX_NAMES])} and {len(names) - MAX_NAMES} more"
        lines.append(f"  not considered ({why}): {shown}.")
    return lines
