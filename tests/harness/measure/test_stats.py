"""Latency statistics: a percentile is only given when enough samples were taken to mean it; the interval
for a median (order statistics, exact binomial ranks) against hand-worked ranks and by simulation."""
import numpy as np
import pytest

from quantbench.harness.measure.stats import MIN_CI_VALUES, median_ci, p50_ci, summarize
from quantbench.harness.results.store import MIN_SAMPLES, STATS


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


# ---- the order-statistics interval for a median --------------------------------------------------
@pytest.mark.parametrize(("n", "ranks", "confidence"), [
    # [x(k), x(n+1-k)] covers the median with 1 - 2 P(Bin(n, 1/2) <= k-1), worked out by hand:
    (5, (1, 5), 1 - 2 / 32),  # no rank reaches 95%: min..max, and it says 93.75%
    (6, (1, 6), 1 - 2 / 64),
    (8, (1, 8), 1 - 2 / 256),  # k = 2 would give 1 - 2 * 9/256 = 92.97%
    (9, (2, 8), 1 - 2 * (1 + 9) / 512),
    (20, (6, 15), 1 - 2 * (1 + 20 + 190 + 1140 + 4845 + 15504) / 2**20),
    (100, (40, 61), None),  # the textbook ranks for n = 100
])
def test_median_ci_uses_exact_binomial_ranks(n, ranks, confidence):
    values = np.random.default_rng(n).permutation(np.arange(1, n + 1) * 10.0)  # x(k) = 10 k, given unsorted
    ci = median_ci(values)
    assert ci.ranks == ranks and (ci.lo, ci.hi) == (10.0 * ranks[0], 10.0 * ranks[1])
    if confidence is not None:
        assert ci.confidence == pytest.approx(confidence, abs=1e-6)
    assert ci.confidence >= 0.95 if n >= MIN_CI_VALUES else ci.confidence < 0.95


def test_median_ci_edge_cases():
    assert median_ci([]) is None
    one = median_ci([3.0])
    assert (one.lo, one.hi, one.confidence) == (3.0, 3.0, 0.0)
    same = median_ci([2.0] * 50)
    assert (same.lo, same.hi) == (2.0, 2.0) and same.rel_half_width(2.0) == 0.0
    assert median_ci([1.0, 3.0] * 3).rel_half_width(2.0) == 0.5


@pytest.mark.parametrize("n", [6, 9, 20, 51])
def test_median_ci_covers_the_true_median_as_often_as_it_says(n):
    """Seeded simulation on a skewed distribution (lognormal, true median 1): coverage ≈ the stated confidence."""
    rng = np.random.default_rng(1234 + n)
    trials = 3000
    samples = rng.lognormal(0.0, 0.5, size=(trials, n))
    cis = [median_ci(s) for s in samples]
    covered = np.mean([c.lo <= 1.0 <= c.hi for c in cis])
    stated = cis[0].confidence
    se = (stated * (1 - stated) / trials) ** 0.5
    assert abs(covered - stated) < 4 * se + 1e-3, (covered, stated)
    assert covered > 0.95 - 4 * se  # a real 95% interval (conservative: exact ranks round it up)


def test_p50_ci_in_ms_and_only_from_enough_samples():
    assert p50_ci("compute", None) == {"compute_p50_ci95": None}
    assert p50_ci("compute", [1_000_000] * (MIN_CI_VALUES - 1)) == {"compute_p50_ci95": None}
    ns = np.arange(1, 101) * 1_000_000  # 1..100 ms
    assert p50_ci("e2e", ns) == {"e2e_p50_ci95": [40.0, 61.0]}
