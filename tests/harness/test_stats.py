"""Latency statistics."""
import numpy as np

from quantbench.harness.stats import summarize


def test_summarize_matches_numpy_and_keeps_raw():
    ns = np.array([1_000_000, 2_000_000, 3_000_000, 10_000_000])
    s = summarize("compute", ns)
    assert s["compute_min_ms"] == 1.0 and s["compute_max_ms"] == 10.0
    assert s["compute_p50_ms"] == 2.5
    assert abs(s["compute_p99_ms"] - np.percentile(ns / 1e6, 99)) < 1e-9
    assert abs(s["compute_std_ms"] - np.std(ns / 1e6, ddof=1)) < 1e-6
    assert s["compute_raw_ms"] == [1.0, 2.0, 3.0, 10.0]


def test_summarize_empty_gives_nulls():
    s = summarize("h2d", [])
    assert s["h2d_p50_ms"] is None and s["h2d_raw_ms"] == []
