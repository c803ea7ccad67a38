"""Adaptive interleaved rounds on a simulated clock: when they stop, and the interval they report.

The fake runtimes of test_measure_numbers advance a fake clock; here their compute time can jitter
from a seeded generator, so how many rounds a target width needs is exact and machine-independent.
"""
from __future__ import annotations

import types

import numpy as np
import pytest

from quantbench.harness.measure import cell as measure
from quantbench.harness.measure.cell import interleaved_speedup
from tests.harness.measure.test_measure_numbers import MS, X8, FakeClock, FakeRuntime


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    c = FakeClock()
    fake_time = types.SimpleNamespace(perf_counter_ns=lambda: c.now_ns, perf_counter=lambda: c.now_ns / 1e9)
    monkeypatch.setattr(measure, "time", fake_time)
    return c


class Jittery(FakeRuntime):
    """Compute time ``infer_ns`` × (1 ± ``jitter``), drawn per call from a seeded generator."""

    def __init__(self, clk: FakeClock, infer_ns: int, jitter: float, seed: int) -> None:
        super().__init__(clk, stage_ns=0, infer_ns=infer_ns, fetch_ns=0)
        self.base, self.jitter, self.rng = infer_ns, jitter, np.random.default_rng(seed)

    def infer(self, x):
        self.infer_ns = int(self.base * (1 + self.jitter * self.rng.uniform(-1, 1)))
        return super().infer(x)


def test_steady_ratio_stops_at_the_minimum_rounds_with_a_95_interval(clock):
    variant = FakeRuntime(clock, stage_ns=0, infer_ns=1 * MS, fetch_ns=0)
    fp32 = FakeRuntime(clock, stage_ns=0, infer_ns=3 * MS, fetch_ns=0)
    out = interleaved_speedup(variant, fp32, X8, rounds=6, iters=3, min_block_s=0.0, max_rounds=20, rel_ci=0.03)
    assert out["speedup_stop_reason"] == "ci_target" and len(out["speedup_interleaved_rounds"]) == 6
    assert out["speedup_interleaved_ci95"] == [3.0, 3.0] and out["speedup_ci_level"] >= 0.95
    assert out["interleave_variant_ms"] == 1.0 and out["interleave_fp32_ms"] == 3.0
    assert out["interleave_fp32_ci95"] == [3.0, 3.0]


def test_target_is_only_met_after_an_even_round_and_a_95_percent_interval(clock):
    variant = FakeRuntime(clock, stage_ns=0, infer_ns=1 * MS, fetch_ns=0)
    fp32 = FakeRuntime(clock, stage_ns=0, infer_ns=2 * MS, fetch_ns=0)
    # rounds=3 asks for 3, but 3 rounds are an odd A-B-B-A count and only a 75% interval: it goes on to 6
    out = interleaved_speedup(variant, fp32, X8, rounds=3, iters=3, min_block_s=0.0, max_rounds=20, rel_ci=0.5)
    assert len(out["speedup_interleaved_rounds"]) == 6 and out["speedup_stop_reason"] == "ci_target"


def test_noisy_rounds_continue_to_the_round_cap(clock):
    variant = Jittery(clock, 1 * MS, jitter=0.4, seed=1)
    fp32 = Jittery(clock, 2 * MS, jitter=0.4, seed=2)
    out = interleaved_speedup(variant, fp32, X8, rounds=6, iters=1, min_block_s=0.0, max_rounds=12, rel_ci=0.001)
    rounds = out["speedup_interleaved_rounds"]
    assert out["speedup_stop_reason"] == "max_rounds" and len(rounds) == 12
    lo, hi = out["speedup_interleaved_ci95"]
    assert lo <= out["speedup_interleaved"] <= hi and lo < hi
    assert (lo, hi) == tuple(sorted(rounds)[i] for i in (2, 9))  # n = 12: ranks 3 and 10 (96.1%)
    assert out["speedup_ci_level"] == pytest.approx(1 - 2 * (1 + 12 + 66) / 4096, abs=1e-6)


def test_a_wide_interval_narrows_with_more_rounds_until_the_target(clock):
    variant = Jittery(clock, 1 * MS, jitter=0.1, seed=3)
    fp32 = Jittery(clock, 2 * MS, jitter=0.1, seed=4)
    out = interleaved_speedup(variant, fp32, X8, rounds=6, iters=20, min_block_s=0.0, max_rounds=200, rel_ci=0.02)
    n = len(out["speedup_interleaved_rounds"])
    lo, hi = out["speedup_interleaved_ci95"]
    assert out["speedup_stop_reason"] == "ci_target" and 6 <= n < 200 and n % 2 == 0
    assert (hi - lo) / 2 <= 0.02 * out["speedup_interleaved"]
    assert lo <= 2.0 <= hi  # the true ratio of the two simulated medians


def test_time_cap_ends_the_rounds_but_not_before_the_minimum(clock):
    variant = Jittery(clock, 1 * MS, jitter=0.4, seed=5)
    fp32 = Jittery(clock, 2 * MS, jitter=0.4, seed=6)
    # each round is >= 2 blocks of 10 ms: a 0.1 s cap ends it after the round that crosses it
    out = interleaved_speedup(variant, fp32, X8, rounds=2, iters=1, min_block_s=0.01, max_rounds=100,
                              max_s=0.1, rel_ci=0.001)
    n = len(out["speedup_interleaved_rounds"])
    assert out["speedup_stop_reason"] == "max_time" and 2 <= n <= 6
    minimum = interleaved_speedup(variant, fp32, X8, rounds=8, iters=1, min_block_s=0.01, max_rounds=100,
                                  max_s=0.0, rel_ci=0.001)
    assert minimum["speedup_stop_reason"] == "max_time" and len(minimum["speedup_interleaved_rounds"]) == 8


def test_few_fixed_rounds_report_their_real_confidence(clock):
    variant = Jittery(clock, 1 * MS, jitter=0.2, seed=7)
    fp32 = Jittery(clock, 2 * MS, jitter=0.2, seed=8)
    out = interleaved_speedup(variant, fp32, X8, rounds=5, iters=2, min_block_s=0.0)  # no max_rounds: exactly 5
    assert out["speedup_stop_reason"] == "max_rounds" and len(out["speedup_interleaved_rounds"]) == 5
    assert out["speedup_ci_level"] == pytest.approx(0.9375)  # min..max of 5: not a 95% interval, and it says so
    assert out["speedup_interleaved_ci95"] == [min(out["speedup_interleaved_rounds"]),
                                               max(out["speedup_interleaved_rounds"])]


class LogNormal(FakeRuntime):
    """Compute time ``infer_ns`` × exp(N(0, ``sigma``)) per call, from a seeded generator."""

    def __init__(self, clk: FakeClock, infer_ns: int, sigma: float, rng: np.random.Generator) -> None:
        super().__init__(clk, stage_ns=0, infer_ns=infer_ns, fetch_ns=0)
        self.base, self.sigma, self.rng = infer_ns, sigma, rng

    def infer(self, x):
        self.infer_ns = int(self.base * np.exp(self.rng.normal(0.0, self.sigma)))
        return super().infer(x)


@pytest.mark.slow  # 1,500 simulated interleaves per noise level: ~3-10 s each
@pytest.mark.parametrize("sigma", [0.01, 0.03, 0.06])
def test_adaptive_stopping_keeps_the_interval_at_95_percent(clock, sigma):
    """Stopping once the interval is narrow (optional stopping) could make it cover less; simulated with
    one-call blocks whose ratio has a known median (2.0), the default rule still covers ~95%."""
    rng = np.random.default_rng(int(sigma * 1000))
    trials, covered, rounds = 1500, 0, []
    for _ in range(trials):
        variant, fp32 = LogNormal(clock, 1 * MS, sigma, rng), LogNormal(clock, 2 * MS, sigma, rng)
        out = interleaved_speedup(variant, fp32, X8, rounds=6, iters=1, min_block_s=0.0, max_rounds=20, rel_ci=0.03)
        lo, hi = out["speedup_interleaved_ci95"]
        covered += lo <= 2.0 <= hi
        rounds.append(len(out["speedup_interleaved_rounds"]))
    assert 0.93 <= covered / trials <= 0.99, covered / trials
    assert (np.mean(rounds) < 8) if sigma == 0.01 else (np.mean(rounds) > 8)  # steady ratios stop early
