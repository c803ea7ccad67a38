"""summarize(): each statistic of a hand-made sample, in milliseconds to the nanosecond."""
from __future__ import annotations

import pytest

from quantbench.harness.measure.stats import summarize


def test_statistics_of_a_small_sample_worked_out_by_hand():
    # 10 samples: 1, 2, ..., 9 ms and one 100 ms outlier
    ns = [k * 1_000_000 for k in range(1, 10)] + [100_000_000]
    s = summarize("compute", ns)
    assert s["compute_min_ms"] == 1.0 and s["compute_max_ms"] == 100.0
    assert s["compute_mean_ms"] == 14.5  # (45 + 100) / 10
    assert s["compute_p50_ms"] == 5.5  # between the 5th and 6th values
    assert s["compute_p90_ms"] == pytest.approx(18.1)  # linear: 9 + 0.1 * (100 - 9)
    assert s["compute_p95_ms"] is None and s["compute_p99_ms"] is None  # fewer than 20 / 100 samples
    # sample standard deviation (n - 1): sum of squared deviations / 9
    mean = 14.5
    var = (sum((k - mean) ** 2 for k in range(1, 10)) + (100 - mean) ** 2) / 9
    assert s["compute_std_ms"] == pytest.approx(var ** 0.5, abs=1e-6)


def test_values_keep_nanoseconds_and_are_rounded_there():
    s = summarize("e2e", [1_234_567, 1_234_568, 1_234_568])
    assert s["e2e_raw_ms"] == [1.234567, 1.234568, 1.234568]  # raw values to the nanosecond, not rounded further
    assert s["e2e_min_ms"] == 1.234567 and s["e2e_max_ms"] == 1.234568
    assert s["e2e_mean_ms"] == 1.234568  # 1.2345676667 rounded to the nanosecond
    assert s["e2e_p50_ms"] == 1.234568
    assert s["e2e_std_ms"] == 0.000001  # 0.577 ns


def test_one_sample_has_no_spread():
    s = summarize("io", [3_000_000])
    assert s["io_mean_ms"] == s["io_p50_ms"] == s["io_min_ms"] == s["io_max_ms"] == 3.0
    assert s["io_std_ms"] is None and s["io_p90_ms"] is None
