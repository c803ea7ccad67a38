"""Separately timed ratios and their contradiction with the interleaved speedup (used when rows are measured,
by timing_verdict, and when tables compare a row with its FP32 reference, by timing_flag)."""
from __future__ import annotations

from quantbench.common.speed_checks import contradiction, separate_ratio, separate_ratio_ci


def test_the_separate_ratio_and_its_range():
    assert separate_ratio(2.0, 1.05) == 1.9048
    assert separate_ratio(2.0, 0) is None and separate_ratio(None, 1.0) is None and separate_ratio(True, 1.0) is None
    assert separate_ratio_ci([1.98, 2.04], [1.04, 1.06]) == [1.8679, 1.9615]  # [fp32 lo / var hi, fp32 hi / var lo]
    assert separate_ratio_ci([2.04, 1.98], [1.04, 1.06]) is None  # not an interval
    assert separate_ratio_ci(None, [1.04, 1.06]) is None


def test_a_contradiction_is_a_ratio_outside_the_interleaved_interval_beyond_its_own_range():
    assert contradiction(1.2, [1.1, 1.3]) == "" and contradiction(None, [1.1, 1.3]) == ""
    assert contradiction(1.2, None) == ""
    text = contradiction(0.72, [1.26, 1.63])
    assert "0.72×" in text and "1.26–1.63×" in text
    assert contradiction(1.9, [1.92, 2.1]) != ""  # a point just outside disagrees
    assert contradiction(1.9048, [1.92, 2.1], [1.8679, 1.9615]) == ""  # its own range reaches into the interval
    assert "[1.62–1.73]" in contradiction(1.67, [1.92, 2.1], [1.62, 1.73])
