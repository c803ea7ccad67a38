"""Summary statistics over raw latency samples, and distribution-free intervals for a median."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from quantbench.harness.results.store import MIN_SAMPLES, STATS


def summarize(prefix: str, samples_ns: list[int] | np.ndarray | None) -> dict[str, float | list[float] | None]:
    """``{prefix}_{mean,std,min,p50,p90,p95,p99,max}_ms`` plus ``{prefix}_raw_ms`` from ns samples.

    A statistic that needs more samples than were taken (:data:`results.MIN_SAMPLES`, e.g. p99
    from fewer than 100) is None rather than a number that only looks like it. ``samples_ns=None``
    (a phase that was not timed) gives None everywhere, raw included.
    """
    if samples_ns is None:
        return {**{f"{prefix}_{s}_ms": None for s in STATS}, f"{prefix}_raw_ms": None}
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    out: dict[str, float | list[float] | None] = {}
    values = {
        "mean": ms.mean, "std": lambda: ms.std(ddof=1), "min": ms.min,
        "p50": lambda: np.percentile(ms, 50), "p90": lambda: np.percentile(ms, 90),
        "p95": lambda: np.percentile(ms, 95), "p99": lambda: np.percentile(ms, 99), "max": ms.max,
    }
    for s in STATS:
        enough = ms.size >= MIN_SAMPLES.get(s, 1)
        out[f"{prefix}_{s}_ms"] = round(float(values[s]()), 6) if enough else None
    out[f"{prefix}_raw_ms"] = [round(float(v), 6) for v in ms]
    return out


CI_LEVEL = 0.95
# Fewest values whose min..max already covers their median with >= 95%: 1 - 2 * 0.5**6 = 96.9%
# (5 values give 93.75%). Below this an interval is given with its own, lower, exact confidence.
MIN_CI_VALUES = 6


@dataclass(frozen=True)
class MedianCI:
    """An order-statistics interval for a median: ``lo``..``hi`` covers it with probability ``confidence``."""

    lo: float
    hi: float
    confidence: float  # exact, for any continuous distribution (>= the level asked for once n >= MIN_CI_VALUES)
    ranks: tuple[int, int]  # 1-based ranks of lo and hi among the sorted values

    def rel_half_width(self, center: float) -> float:
        """Half the interval's width as a fraction of ``center`` (inf when ``center`` is 0)."""
        return (self.hi - self.lo) / 2 / abs(center) if center else math.inf


def _binom_half_cdf(n: int) -> np.ndarray:
    """P(Binomial(n, 1/2) <= i) for i = 0..n, exact to float precision (log space: no underflow for large n)."""
    i = np.arange(n + 1)
    log_pmf = (math.lgamma(n + 1) - np.array([math.lgamma(k + 1) + math.lgamma(n - k + 1) for k in i])
               - n * math.log(2.0))
    return np.minimum(np.cumsum(np.exp(log_pmf)), 1.0)


def median_ci(values: list[float] | np.ndarray, level: float = CI_LEVEL) -> MedianCI | None:
    """Distribution-free interval for the median of ``values``' distribution (None for no values).

    Method: with x(1) <= ... <= x(n), [x(k), x(n+1-k)] covers the median with probability
    1 - 2 P(Bin(n, 1/2) <= k-1); k is the largest rank for which that is >= ``level`` (exact binomial
    ranks, no normal approximation). With fewer than :data:`MIN_CI_VALUES` values no rank reaches 95 %:
    the interval is min..max and ``confidence`` says how much it really covers.
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = x.size
    if n == 0:
        return None
    tail = _binom_half_cdf(n)  # tail[k-1] = P(Bin <= k-1): the chance the median lies below x(k)
    ok = np.nonzero(1.0 - 2.0 * tail[: (n + 1) // 2] >= level - 1e-12)[0]
    k = int(ok[-1]) + 1 if ok.size else 1
    confidence = float(max(0.0, 1.0 - 2.0 * tail[k - 1]))
    return MedianCI(float(x[k - 1]), float(x[n - k]), round(confidence, 6), (k, n + 1 - k))


def p50_ci(prefix: str, samples_ns: list[int] | np.ndarray | None) -> dict[str, list[float] | None]:
    """``{prefix}_p50_ci95``: [lo, hi] ms, a 95 % order-statistics interval for the median (None below 6 samples)."""
    if samples_ns is None or len(samples_ns) < MIN_CI_VALUES:
        return {f"{prefix}_p50_ci95": None}
    ci = median_ci(np.asarray(samples_ns, dtype=np.float64) / 1e6)
    assert ci is not None
    return {f"{prefix}_p50_ci95": [round(ci.lo, 6), round(ci.hi, 6)]}
