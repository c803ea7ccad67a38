"""Summary statistics over raw latency samples."""
from __future__ import annotations

import numpy as np

from .results import MIN_SAMPLES, STATS


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
