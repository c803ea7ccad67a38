"""Latency statistics: a percentile is only given when enough samples were taken to mean it."""
import numpy as np
import pytest
from quantbench.harness.results import MIN_SAMPLES, STATS
from quantbench.harness.stats import summarize


def test_summarize_matches_numpy_and_keeps_raw():
    ns = np.arange(1, 101) * 1_000_000  # 100 samples: every statistic is defined
    s = summarize("compute", ns)
    ms = ns / 1e6
    assert s["compute_min_ms"] == 1.0 and s["compute_max_ms"] == 100.0
    assert s["compute_p50_ms"] == 50.5
    for q in (90, 95, 99):
        assert abs(s[f"compute_p{q}_ms"] - np.percentile(ms, q)) < 1e-6
    assert abs(s["compute_std_ms"] - np.std(ms, ddof=1)) < 1e-6
    assert s["compute_raw_ms"] == [float(v) for v in ms]


@pytest.mark.parametrize("n", [1, 2, 9, 10, 19, 20, 99, 100])
def test_percentiles_need_enough_samples(n):
    s = summarize("e2e", np.full(n, 2_000_000))
    for stat in STATS:
        value = s[f"e2e_{stat}_ms"]
        if n >= MIN_SAMPLES.get(stat, 1):
            assert value is not None, (stat, n)
        else:
            assert value is None, (stat, n)
    assert len(s["e2e_raw_ms"]) == n and s["e2e_mean_ms"] == 2.0


def test_rule_is_the_documented_one():
    assert MIN_SAMPLES == {"std": 2, "p90": 10, "p95": 20, "p99": 100}
    s = summarize("compute", [5_000_000] * 50)
    assert s["compute_p95_ms"] == 5.0 and s["compute_p99_ms"] is None  # p99 of 50 would be their max


def test_summarize_empty_and_untimed():
    s = summarize("h2d", [])
    assert s["h2d_p50_ms"] is None and s["h2d_raw_ms"] == []
    s = summarize("h2d", None)  # a phase that does not exist here (host memory)
    assert all(v is None for v in s.values()) and "h2d_raw_ms" in s
