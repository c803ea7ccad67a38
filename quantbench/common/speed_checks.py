"""Separately timed speed ratios, and when they contradict the interleaved speedup: the measurement writes
them into a row (``speedup_separate``, ``timing_noisy``), the tables check a row against its FP32 reference
with them."""
from __future__ import annotations

from typing import Any


def _pair(value: Any) -> tuple[float, float] | None:
    ok = (isinstance(value, (list, tuple)) and len(value) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value))
    return (float(value[0]), float(value[1])) if ok and value[0] <= value[1] else None


def separate_ratio(fp32_p50_ms: Any, variant_p50_ms: Any) -> float | None:
    """FP32 p50 / variant p50 from two separately timed medians (None when either is missing or zero)."""
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in (fp32_p50_ms, variant_p50_ms))
    return round(fp32_p50_ms / variant_p50_ms, 4) if ok else None


def separate_ratio_ci(fp32_ci: Any, variant_ci: Any) -> list[float] | None:
    """The range of FP32 / variant over the two medians' 95% intervals: [fp32 lo / variant hi, fp32 hi / variant lo]."""
    f, v = _pair(fp32_ci), _pair(variant_ci)
    return [round(f[0] / v[1], 4), round(f[1] / v[0], 4)] if f and v else None


def contradiction(ratio: float | None, ci95: Any, ratio_ci: Any = None) -> str:
    """One line when a separately timed ``ratio`` disagrees with the interleaved interval ``ci95``, else "".

    With ``ratio_ci`` (the separately timed ratio's own range) they disagree only when the two ranges do
    not overlap: a difference beyond the noise of both measurements, as a difference between variants is judged.
    """
    interval = _pair(ci95)
    if ratio is None or interval is None:
        return ""
    lo, hi = interval
    own = _pair(ratio_ci)
    low, high = own if own else (ratio, ratio)
    if high >= lo and low <= hi:
        return ""
    shown = f"{ratio:.2f}×" + (f" [{low:.2f}–{high:.2f}]" if own else "")
    return f"separately timed p50s give {shown}, outside the interleaved speedup's 95% interval {lo:.2f}–{hi:.2f}×"
