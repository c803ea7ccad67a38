"""Tables never let a time contradict the interleaved speedup silently, and say which rows were timed under load."""
from __future__ import annotations

from quantbench.reports.console import (
    DISAGREE_NOTE,
    NOISY_NOTE,
    summary_rows,
    timing_flag,
)
from tests.reports.test_table import HEAD, _cells, _row, _table


def _pair(variant_p50: float, speedup: float, ci: list[float], **over) -> list[dict]:
    return [_row("fp32", "fp32", compute_p50_ms=2.0, timing_noisy=False),
            _row("int8", compute_p50_ms=variant_p50, speedup_interleaved=speedup, speedup_interleaved_ci95=ci,
                 timing_noisy=False, **over)]


def test_separately_timed_p50s_outside_the_interval_flag_the_row():
    fp32, agree = _pair(1.0, 2.0, [1.9, 2.1])  # 2.0 / 1.0 = 2.0: inside
    assert timing_flag(agree, fp32) == ""
    fp32, wrong = _pair(1.0, 1.4, [1.3, 1.5])  # the p50 columns would say 2.0×, the interleave 1.3–1.5×
    assert timing_flag(wrong, fp32) == DISAGREE_NOTE and timing_flag(wrong) == ""  # needs the FP32 row
    text = _table([fp32, wrong])
    cells = _cells(text)["int8"]
    assert cells[HEAD.index("p50 ms")] == "1.000 ⚠ [1]" and f"[1] {DISAGREE_NOTE}" in " ".join(text.split())
    assert cells[HEAD.index("speedup")] == "1.40× [1.30–1.50]"
    assert timing_flag(fp32, fp32) == ""  # the reference itself has nothing to disagree with


def test_a_noisy_row_is_flagged_with_one_shared_note_and_old_rows_are_not():
    reason = "other processes used 0.95 of a core while it was timed (threshold 0.1)"
    rows = [_row("fp32", "fp32", timing_noisy=True, timing_noisy_reason=reason),
            _row("int8", timing_noisy=True, timing_noisy_reason=reason.replace("0.95", "0.40")),
            _row("old")]  # schema 2: never measured, never flagged
    flags = {s["variant"]: s["timing"] for s in summary_rows(rows)}
    assert flags == {"fp32": NOISY_NOTE, "int8": NOISY_NOTE, "old": ""}
    text = _table(rows)
    assert _cells(text)["int8"][HEAD.index("p50 ms")] == "1.000 ⚠ [1]" and text.count("[1]") == 3  # 2 cells + note
    inner = _row("x", timing_noisy=True, timing_noisy_reason="separately timed p50s give 1.25×, outside …")
    assert timing_flag(inner) == DISAGREE_NOTE


def test_cli_names_noisy_rows_then_counts_the_rest_then_says_what_to_do():
    from quantbench.reports.console import MAX_NOISY_LINES, noisy_warnings

    reason = "other processes used 0.95 of a core while it was timed (threshold 0.1)"
    rows = [_row(f"v{i}", timing_noisy=True, timing_noisy_reason=reason) for i in range(MAX_NOISY_LINES + 2)]
    rows += [_row("quiet", timing_noisy=False), _row("old"), _row("failed", status="failed", timing_noisy=True)]
    lines = noisy_warnings(rows)
    assert len(lines) == MAX_NOISY_LINES + 2 and all("\n" not in ln for ln in lines)
    assert lines[0] == f"m/v0 on ort-cpu (cpu, batch 8): timing noisy: {reason}"
    assert lines[-2] == "2 more row(s) timed noisily (⚠ in the table)"
    assert lines[-1].startswith(f"{MAX_NOISY_LINES + 2} of {MAX_NOISY_LINES + 4} row(s) were timed while other")
    assert "run.quiet_wait_s" in lines[-1]
    assert noisy_warnings([_row("quiet", timing_noisy=False), _row("old")]) == []


def test_the_rows_p50_intervals_widen_the_cross_row_check():
    # 2.0 / 1.1 = 1.82, outside 1.85–2.1; the p50 intervals give 1.94/1.12 .. 2.06/1.08 = 1.73–1.91: overlaps
    fp32, row = _pair(1.1, 2.0, [1.85, 2.1], compute_p50_ci95=[1.08, 1.12])
    assert timing_flag(row, fp32) == DISAGREE_NOTE  # the FP32 row has no interval: the point is judged
    fp32["compute_p50_ci95"] = [1.94, 2.06]
    assert timing_flag(row, fp32) == ""
