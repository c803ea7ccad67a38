"""The report's speed columns agree with the interleaved speedup, or the row is flagged and shaded."""
from __future__ import annotations

import pytest

from quantbench.reports.console import DISAGREE_NOTE, NOISY_NOTE
from quantbench.reports.model import build_report
from quantbench.reports.tables import comparison_groups

from .conftest import make_row, write_rows


def _rows() -> list[dict]:
    fp32 = make_row(0, variant="fp32", precision="fp32")
    fp32.update(compute_p50_ms=2.0, timing_noisy=False)
    consistent = make_row(1, variant="ok", precision="int8")
    consistent.update(compute_p50_ms=1.0, speedup_interleaved=2.0, speedup_interleaved_ci95=[1.9, 2.1],
                      timing_noisy=False)
    # its own p50 says 2.0 / 1.25 = 1.6×; the interleave 1.2× [1.1–1.3]: the p50 was timed under other load
    odd = make_row(2, variant="odd", precision="int8")
    odd.update(compute_p50_ms=1.25, speedup_interleaved=1.2, speedup_interleaved_ci95=[1.1, 1.3], timing_noisy=False)
    busy = make_row(3, variant="busy", precision="int8")
    busy.update(compute_p50_ms=1.0, speedup_interleaved=2.0, speedup_interleaved_ci95=[1.9, 2.1], timing_noisy=True,
                timing_noisy_reason="other processes used 0.80 of a core while it was timed (threshold 0.1)")
    return [fp32, consistent, odd, busy]


def test_p50_percent_of_fp32_is_derived_from_the_interleaved_speedup(tmp_path):
    (group,) = comparison_groups(build_report([write_rows(tmp_path / "r.jsonl", _rows())])).values()
    by = {r["variant"]: r for r in group}
    assert by["odd"]["p50_pct"] == pytest.approx(100 / 1.2)  # not 100 × 1.25 / 2.0 = 62.5
    assert by["ok"]["p50_pct"] == pytest.approx(50.0)
    assert by["ok"]["timing"] == "" and by["odd"]["timing"] == DISAGREE_NOTE and by["busy"]["timing"] == NOISY_NOTE


def test_html_shades_noisy_and_contradicting_rows_and_shows_the_interval(tmp_path):
    pytest.importorskip("plotly")
    pytest.importorskip("jinja2")
    from quantbench.reports import render_html

    html = render_html(build_report([write_rows(tmp_path / "r.jsonl", _rows())]), tmp_path / "r.html").read_text()
    rows = {name: html[html.index(f">{name}<") - 400: html.index(f">{name}<")] for name in ("ok", "odd", "busy")}
    assert 'class="flag"' in rows["odd"][-120:] and 'class="flag"' in rows["busy"][-120:]
    assert 'class="flag"' not in rows["ok"][-120:]
    assert "2.00× [1.90–2.10]" in html and "other processes used 0.80 of a core" in html  # the row's figures on hover


def test_hand_edited_timing_fields_of_the_wrong_type_read_as_missing(tmp_path):
    rows = _rows()
    rows[2].update(speedup_interleaved_ci95="1.1-1.3", timing_noisy="yes", interference=3, compute_p50_ci95=[1, "x"],
                   speedup_stop_reason=7)
    report = build_report([write_rows(tmp_path / "r.jsonl", rows)])
    odd = next(r for r in report.rows if r.get("variant") == "odd")
    assert odd["speedup_interleaved_ci95"] == [] and odd["timing_noisy"] is None and odd["interference"] == {}
    assert odd["compute_p50_ci95"] == [] and odd["speedup_stop_reason"] is None
    assert any("speedup_interleaved_ci95" in w and "timing_noisy" in w for w in report.warnings)
    (group,) = comparison_groups(report).values()
    assert next(r for r in group if r["variant"] == "odd")["timing"] == ""  # no interval: nothing to contradict


def test_images_per_second_carries_the_same_mark_as_p50(tmp_path):
    from quantbench.reports.tables import cell_text

    rows = _rows()
    rows[2]["throughput_ips"] = 6400.0
    (group,) = comparison_groups(build_report([write_rows(tmp_path / "r.jsonl", rows)])).values()
    by = {r["variant"]: r for r in group}
    assert cell_text(by["odd"], "throughput", "{:,.0f}") == "6,400 ⚠"
    assert cell_text(by["ok"], "throughput", "{:,.0f}") == "1,000"
