"""The numbers the timed loop and the interleaved comparison report, on a simulated clock.

A fake runtime advances a fake clock by a known number of nanoseconds in each of stage, infer and
fetch, and ``harness.measure`` reads that clock instead of the host's: every reported figure then has
one exact expected value (no wall time, no tolerance for machine load).
"""
from __future__ import annotations

import math
import types

import numpy as np
import pytest

from quantbench.harness.measure import cell as measure
from quantbench.harness.measure.cell import MeasureSettings, _timed_loop, interleaved_speedup


class FakeClock:
    """A clock that only moves when a fake runtime works (``step``)."""

    kind = "fake"

    def __init__(self) -> None:
        self.now_ns = 0

    def step(self, ns: int) -> None:
        self.now_ns += int(ns)

    def time(self, fn, *args):
        t0 = self.now_ns
        out = fn(*args)
        return out, self.now_ns - t0


class FakeRuntime:
    """stage, infer and fetch each take a fixed time on the shared :class:`FakeClock`."""

    def __init__(self, clock: FakeClock, stage_ns: int, infer_ns: int, fetch_ns: int, host_memory: bool = True,
                 name: str = "rt", log: list[str] | None = None) -> None:
        self._clock, self.host_memory, self.name, self.log = clock, host_memory, name, log
        self.stage_ns, self.infer_ns, self.fetch_ns = stage_ns, infer_ns, fetch_ns

    def clock(self) -> FakeClock:
        return self._clock

    def stage(self, x):
        self._clock.step(self.stage_ns)
        return x

    def infer(self, x):
        self._clock.step(self.infer_ns)
        if self.log is not None:
            self.log.append(self.name)
        return np.zeros((x.shape[0], 3), np.float32)

    def fetch(self, out):
        self._clock.step(self.fetch_ns)
        return out


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    c = FakeClock()
    fake_time = types.SimpleNamespace(perf_counter_ns=lambda: c.now_ns, perf_counter=lambda: c.now_ns / 1e9)
    monkeypatch.setattr(measure, "time", fake_time)
    return c


X8 = np.zeros((8, 1, 4, 4), np.float32)
MS = 1_000_000  # ns


def _settings(**kw) -> MeasureSettings:
    base = {"warmup_iters": 2, "min_iters": 20, "min_time_s": 0.0, "max_iters": 1000, "max_time_s": 1e9}
    return MeasureSettings(**{**base, **kw})


@pytest.mark.parametrize("host_memory", [True, False])
def test_throughput_is_images_per_second_of_end_to_end_time_not_compute(clock, host_memory):
    # 8 images per batch; stage 3 ms + infer 1 ms + fetch 4 ms = 8 ms end to end per batch.
    rt = FakeRuntime(clock, stage_ns=3 * MS, infer_ns=1 * MS, fetch_ns=4 * MS, host_memory=host_memory)
    row = _timed_loop(rt, X8, _settings())
    assert row["iterations"] == 20 and row["stop_reason"] == "min_iters_and_time"
    assert row["compute_mean_ms"] == 1.0 and row["compute_p50_ms"] == 1.0
    assert row["e2e_mean_ms"] == 8.0 and row["e2e_p50_ms"] == 8.0
    assert row["throughput_ips"] == 1000.0  # 8 images / 8 ms; from compute it would read 8000
    if host_memory:
        assert row["h2d_mean_ms"] is None and row["d2h_mean_ms"] is None
    else:
        assert row["h2d_mean_ms"] == 3.0 and row["d2h_mean_ms"] == 4.0


def test_warm_up_is_not_timed_and_the_time_minimum_is_respected(clock):
    rt = FakeRuntime(clock, stage_ns=0, infer_ns=2 * MS, fetch_ns=0)
    # 20 iterations take 40 ms; 0.099 s of timing needs 50 iterations of 2 ms.
    row = _timed_loop(rt, X8, _settings(warmup_iters=7, min_time_s=0.099))
    assert row["iterations"] == 50 and len(row["compute_raw_ms"]) == 50
    assert row["timing_valid"] is True
    capped = _timed_loop(rt, X8, _settings(min_iters=100, max_time_s=0.029))  # 29 ms cap: 15 iterations
    assert (capped["iterations"], capped["stop_reason"], capped["timing_valid"]) == (15, "max_time", False)


@pytest.mark.parametrize(("variant_ms", "fp32_ms", "expected"), [
    (5.0, 1.0, 0.2),   # a variant 5x slower than FP32: speedup 0.2 (< 1)
    (1.0, 5.0, 5.0),   # 5x faster: speedup 5 (> 1)
    (2.0, 2.0, 1.0),
])
def test_interleaved_speedup_is_fp32_time_over_variant_time(clock, variant_ms, fp32_ms, expected):
    variant = FakeRuntime(clock, stage_ns=7 * MS, infer_ns=int(variant_ms * MS), fetch_ns=11 * MS)
    fp32 = FakeRuntime(clock, stage_ns=13 * MS, infer_ns=int(fp32_ms * MS), fetch_ns=0)
    out = interleaved_speedup(variant, fp32, X8, rounds=4, iters=5, min_block_s=0.0)
    assert out["speedup_interleaved"] == pytest.approx(expected)
    assert out["speedup_interleaved_rounds"] == [pytest.approx(expected)] * 4
    # The property a reader relies on: slower than FP32 reads below 1, faster above 1.
    assert np.sign(math.log(out["speedup_interleaved"])) == np.sign(math.log(fp32_ms / variant_ms))


def test_interleaved_speedup_times_compute_blocks_of_at_least_min_block_s(clock):
    log: list[str] = []
    variant = FakeRuntime(clock, stage_ns=0, infer_ns=10 * MS, fetch_ns=0, name="V", log=log)
    fp32 = FakeRuntime(clock, stage_ns=0, infer_ns=20 * MS, fetch_ns=0, name="R", log=log)
    out = interleaved_speedup(variant, fp32, X8, rounds=2, iters=3, min_block_s=0.095)
    timed = log[3:]  # after the reference's 3 warm-up calls
    # Round 1 variant first (10 x 10 ms >= 0.095 s), round 2 reference first (5 x 20 ms): A-B-B-A.
    assert timed == ["V"] * 10 + ["R"] * 5 + ["R"] * 5 + ["V"] * 10
    assert out["speedup_interleaved"] == 2.0


def test_interleaved_speedup_is_the_median_round(clock):
    """One disturbed round does not move the result: the median of the rounds is reported."""
    variant = FakeRuntime(clock, stage_ns=0, infer_ns=1 * MS, fetch_ns=0)
    fp32 = FakeRuntime(clock, stage_ns=0, infer_ns=3 * MS, fetch_ns=0)
    calls = {"n": 0}
    infer = variant.infer

    def disturbed(x):  # the first block (round 1, variant first) runs 10x slower
        calls["n"] += 1
        if calls["n"] <= 4:
            clock.step(9 * MS)
        return infer(x)

    variant.infer = disturbed
    out = interleaved_speedup(variant, fp32, X8, rounds=3, iters=4, min_block_s=0.0)
    assert out["speedup_interleaved_rounds"] == [0.3, 3.0, 3.0]
    assert out["speedup_interleaved"] == 3.0


@pytest.mark.parametrize(("n", "elapsed", "settings", "reason"), [
    (50, 1.0, {}, "min_iters_and_time"),            # both minimums met exactly
    (49, 1.0, {}, None), (50, 0.999, {}, None),
    (100, 0.5, {"max_iters": 100}, "max_iters"),    # the cap itself stops
    (99, 0.5, {"max_iters": 100}, None),
    (10, 20.0, {}, "max_time"), (10, 19.999, {}, None),
])
def test_stop_rule_boundaries(n, elapsed, settings, reason):
    m = MeasureSettings(**{"min_iters": 50, "min_time_s": 1.0, "max_iters": 20000, "max_time_s": 20.0, **settings})
    assert measure._stop_reason(n, elapsed, m) == reason


def test_the_row_says_which_clock_and_where_the_data_lived(clock):
    seen = []
    rt = FakeRuntime(clock, stage_ns=1 * MS, infer_ns=3 * MS, fetch_ns=1 * MS, host_memory=False)
    fetch = rt.fetch
    rt.fetch = lambda out: (seen.append(out), fetch(out))[1]
    x3 = np.zeros((3, 1, 4, 4), np.float32)
    row = _timed_loop(rt, x3, _settings(warmup_iters=1, min_iters=6))
    assert row["clock"] == "fake" and row["host_memory"] is False and row["timing_valid"] is True
    assert all(isinstance(o, np.ndarray) and o.shape == (3, 3) for o in seen)  # fetch gets infer's output
    assert len(seen) == 1 + 6
    assert row["throughput_ips"] == 600.0  # 3 images / 5 ms
    # a 95 % interval of the median needs 6 samples: all equal here, so it is the value itself
    assert row["compute_p50_ci95"] == [3.0, 3.0] and row["e2e_p50_ci95"] == [5.0, 5.0]
    odd = _timed_loop(FakeRuntime(clock, 0, 7 * MS, 0), x3, _settings(warmup_iters=0, min_iters=5))
    assert odd["throughput_ips"] == 428.571  # 3 / 7 ms, to three decimals
    assert odd["compute_p50_ci95"] is None  # 5 samples: too few
    assert odd["timing_valid"] is True and odd["iterations"] == 5
    short = _timed_loop(FakeRuntime(clock, 0, 7 * MS, 0), x3, _settings(warmup_iters=0, min_iters=5, max_iters=4))
    assert short["timing_valid"] is False and short["iterations"] == 4


def test_a_block_times_exactly_iters_calls_once_the_time_is_up(clock):
    log: list[str] = []
    variant = FakeRuntime(clock, 0, 1 * MS, 0, name="V", log=log)
    fp32 = FakeRuntime(clock, 0, 1 * MS, 0, name="R", log=log)
    interleaved_speedup(variant, fp32, X8, rounds=1, iters=7, min_block_s=0.0)
    assert log[3:] == ["V"] * 7 + ["R"] * 7
