"""Summary statistics over raw latency samples."""
from __future__ import annotations

import numpy as np

from .results import STATS


def summarize(prefix: str, samples_ns: list[int] | np.ndarray) -> dict[str, float | list[float] | None]:
    """``{prefix}_{mean,std,min,p50,p90,p95,p99,max}_ms`` plus ``{prefix}_raw_ms`` from ns samples."""
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    out: dict[str, float | list[float] | None] = {}
    if ms.size == 0:
        for s in STATS:
            out[f"{prefix}_{s}_ms"] = None
        out[f"{prefix}_raw_ms"] = []
        return out
    values = {
        "mean": ms.mean(), "std": ms.std(ddof=1) if ms.size > 1 else 0.0, "min": ms.min(),
        "p50": np.percentile(ms, 50), "p90": np.percentile(ms, 90), "p95": np.percentile(ms, 95),
        "p99": np.percentile(ms, 99), "max": ms.max(),
    }
    for s in STATS:
        out[f"{prefix}_{s}_ms"] = round(float(values[s]), 6)
    out[f"{prefix}_raw_ms"] = [round(float(v), 6) for v in ms]
    return out
