"""Interference: the CPU other processes take while a cell is timed, and the rows it makes noisy.

The arithmetic is checked on readings made up by hand; the end-to-end property with a real CPU hog
(a bounded busy-loop subprocess started and stopped here) on a real runtime. Nothing asserts that a
run *without* a hog is quiet: the machines that run these tests are shared.
"""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from quantbench.harness.measure import interference
from quantbench.harness.measure.cell import measure_cell
from quantbench.harness.measure.interference import (
    CpuSample,
    between,
    contradiction,
    noisy_reason,
    timing_verdict,
)
from tests.harness.sweep.test_runner_measure import _spec
from tests.harness.sweep.test_runner_resume import tiny_npz

HZ = 100.0


def _jiffies(user=0, nice=0, system=0, idle=0, iowait=0, irq=0, softirq=0, steal=0):
    return (user, nice, system, idle, iowait, irq, softirq, steal, 0, 0)


def test_other_cpu_is_busy_time_minus_our_own_over_wall_time(monkeypatch):
    monkeypatch.setattr(interference, "_hz", lambda: HZ)
    before = CpuSample(wall=10.0, jiffies=_jiffies(), own_s=5.0, load=0.5)
    # 2 s: 300 busy jiffies (3 core-seconds: user, nice, system, irq, softirq), 1.2 s of it ours; 40 stolen
    after = CpuSample(wall=12.0, jiffies=_jiffies(user=150, nice=50, system=60, idle=90, iowait=10, irq=20,
                                                 softirq=20, steal=40), own_s=6.2, load=1.5)
    out = between(before, after)
    assert out == {"other_cpu_frac": 0.9, "steal_frac": 0.2, "load_start": 0.5, "load_end": 1.5, "wall_s": 2.0}


def test_own_time_above_the_machine_count_reads_zero_not_negative(monkeypatch):
    monkeypatch.setattr(interference, "_hz", lambda: HZ)
    out = between(CpuSample(0.0, _jiffies(), 0.0, None), CpuSample(1.0, _jiffies(user=99), 1.01, None))
    assert out["other_cpu_frac"] == 0.0


def test_unreadable_proc_stat_measures_nothing_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(interference, "PROC_STAT", str(tmp_path / "missing"))
    s = interference.sample()
    out = between(s, interference.sample())
    assert out["other_cpu_frac"] is None and out["steal_frac"] is None
    verdict = timing_verdict({"interference": out}, 0.1)
    assert verdict["timing_noisy"] is None and "not measured" in verdict["timing_noisy_reason"]
    assert interference.wait_for_quiet(5.0, 0.1) == {"waited_s": 0.0, "quiet": None}  # no reading: no wait


def test_noisy_reasons_name_the_cause_and_the_threshold():
    assert noisy_reason({"other_cpu_frac": 0.1, "steal_frac": 0.0}, 0.1) == ""  # at the threshold: not above
    assert "other processes used 0.45 of a core" in noisy_reason({"other_cpu_frac": 0.45, "steal_frac": 0}, 0.1)
    assert "stole 0.30" in noisy_reason({"other_cpu_frac": 0.0, "steal_frac": 0.3}, 0.1)
    assert contradiction(1.2, [1.1, 1.3]) == "" and contradiction(None, [1.1, 1.3]) == ""
    assert "0.72×" in contradiction(0.72, [1.26, 1.63]) and "1.26–1.63×" in contradiction(0.72, [1.26, 1.63])


def test_a_separately_timed_p50_outside_the_interval_is_noisy_even_on_a_quiet_machine():
    quiet = {"other_cpu_frac": 0.0, "steal_frac": 0.0}
    inside = timing_verdict({"interference": quiet, "interleave_fp32_ms": 2.0, "compute_p50_ms": 1.0,
                             "speedup_interleaved_ci95": [1.9, 2.1]}, 0.1)
    assert inside == {"timing_noisy": False, "timing_noisy_reason": "", "speedup_separate": 2.0,
                      "speedup_separate_ci95": None}
    outside = timing_verdict({"interference": quiet, "interleave_fp32_ms": 2.0, "compute_p50_ms": 1.6,
                              "speedup_interleaved_ci95": [1.9, 2.1]}, 0.1)
    assert outside["timing_noisy"] is True and outside["speedup_separate"] == 1.25
    assert "separately timed p50s give 1.25×" in outside["timing_noisy_reason"]


@pytest.fixture
def hog():
    """One busy-looping process (it ends itself after 120 s if the test dies); stopped after the test."""
    spin = "import time\nend = time.time() + 120\nwhile time.time() < end:\n pass"
    proc = subprocess.Popen([sys.executable, "-c", spin])
    time.sleep(0.3)  # let it start spinning
    yield proc
    proc.kill()
    proc.wait(timeout=10)


@pytest.mark.ort_cpu
def test_a_cpu_hog_during_the_timed_phase_makes_the_row_noisy(tmp_path, hog):
    spec = _spec(tmp_path, f"npz:{tiny_npz(tmp_path / 'd.npz')}", precision="fp32")
    spec.measure.update(min_time_s=1.0, max_time_s=5.0, max_iters=10**7, noisy_retries=0)  # >= 1 s of timing
    row = measure_cell(spec)
    assert hog.poll() is None  # the hog was running all along
    other = row["interference"]["other_cpu_frac"]
    assert other > row["measure_settings"]["noisy_cpu_frac"] == 0.10
    assert row["timing_noisy"] is True and "other processes used" in row["timing_noisy_reason"]
    # the window covers every timed iteration
    assert row["interference"]["wall_s"] >= sum(row["compute_raw_ms"]) / 1000 and row["timing_attempts"] == 1


def _fake_phases(monkeypatch, others: list[float], quiet_after: list[bool]) -> list[str]:
    """Attempt i of the timed phases sees ``others[i]`` cores of other load; each retry's wait sees ``quiet_after``."""
    from quantbench.harness.measure import cell as measure

    calls: list[str] = []
    load = iter(others)
    waits = iter(quiet_after)
    monkeypatch.setattr(measure, "_timed_loop", lambda rt, x, m: (calls.append("loop"), {"compute_p50_ms": 1.0})[1])
    monkeypatch.setattr(measure, "_speedup", lambda spec, rt, x, m: {})
    monkeypatch.setattr(interference, "between", lambda a, b: {"other_cpu_frac": next(load), "steal_frac": 0.0})
    monkeypatch.setattr(interference, "wait_for_quiet",
                        lambda max_s, thr: {"waited_s": 0.0, "quiet": None} if not calls else
                        {"waited_s": 1.0, "quiet": next(waits)})
    return calls


@pytest.mark.parametrize(("others", "quiet_after", "attempts", "kept", "noisy"), [
    ([0.8, 0.02], [True], 2, 0.02, False),  # a neighbour that went away: measured again, the quiet attempt kept
    ([0.8, 0.5], [True], 2, 0.5, True),  # still noisy after the one retry: the less disturbed attempt kept
    ([0.8], [False], 1, 0.8, True),  # lasting load: no retry (it would be as noisy), the row says noisy
    ([0.02], [], 1, 0.02, False),  # quiet at once: measured once
])
def test_a_noisy_cell_is_measured_again_once_the_machine_is_quiet(monkeypatch, others, quiet_after, attempts, kept,
                                                                   noisy):
    from quantbench.harness.measure.cell import CellSpec, MeasureSettings, _timed_phases

    calls = _fake_phases(monkeypatch, others, quiet_after)
    spec = CellSpec("c", "ort-cpu", "cpu", 1, {}, {"precision": "fp32"}, {}, {})
    part = _timed_phases(spec, None, None, MeasureSettings(noisy_retries=1))
    assert len(calls) == attempts and part["timing_attempts"] == attempts
    assert part["interference"]["other_cpu_frac"] == kept and part["timing_noisy"] is noisy


def test_a_separate_ratio_is_judged_with_its_own_interval():
    """2.0 / 1.05 = 1.90 lies just outside 1.92–2.10, but its own range (over both medians' intervals) reaches
    into it: within the noise of both, not noisy; a range wholly outside is."""
    quiet = {"other_cpu_frac": 0.0, "steal_frac": 0.0}
    part = {"interference": quiet, "interleave_fp32_ms": 2.0, "interleave_fp32_ci95": [1.98, 2.04],
            "compute_p50_ms": 1.05, "compute_p50_ci95": [1.04, 1.06], "speedup_interleaved_ci95": [1.92, 2.1]}
    near = timing_verdict(part, 0.1)
    assert near["speedup_separate"] == 1.9048 and near["speedup_separate_ci95"] == [1.8679, 1.9615]
    assert near["timing_noisy"] is False
    far = timing_verdict({**part, "compute_p50_ms": 1.2, "compute_p50_ci95": [1.18, 1.22]}, 0.1)
    assert far["timing_noisy"] is True
    assert "separately timed p50s give 1.67× [1.62–1.73], outside the interleaved speedup's 95% interval" in \
        far["timing_noisy_reason"]
    assert contradiction(1.9, [1.92, 2.1]) != ""  # without its own interval a point just outside disagrees


def test_quiet_wait_returns_once_the_machine_is_quiet_or_the_time_is_up(monkeypatch):
    loads = iter([0.9, 0.5, 0.05])
    monkeypatch.setattr(interference, "between", lambda a, b: {"other_cpu_frac": next(loads), "steal_frac": 0.0})
    out = interference.wait_for_quiet(10.0, 0.1, poll_s=0.01)
    assert out["quiet"] is True and out["waited_s"] < 5.0  # the third window was quiet: it stopped there
    monkeypatch.setattr(interference, "between", lambda a, b: {"other_cpu_frac": 0.9, "steal_frac": 0.0})
    out = interference.wait_for_quiet(0.2, 0.1, poll_s=0.05)
    assert out["quiet"] is False and 0.2 <= out["waited_s"] < 2.0  # bounded by max_s
    assert interference.wait_for_quiet(0.0, 0.1) == {"waited_s": 0.0, "quiet": None}  # the default: no wait
