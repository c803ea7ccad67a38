"""The verdict and "best" marks: decided only beyond the 95% intervals, ties named, undecidable cases said.

Rows here are made up (``make_row``) to state the decision rules; the paired statistics in them are
computed with the real functions from counts, so they are self-consistent.
"""
from __future__ import annotations

import pytest
from rich.console import Console

from quantbench.common.accuracy_stats import mcnemar_exact_p, paired_diff_ci
from quantbench.harness.config import ConfigError, parse_config
from quantbench.reports.console import render_console, render_verdict
from quantbench.reports.model import build_report, device_key
from quantbench.reports.tables import best_cells, comparison_groups
from quantbench.reports.verdict import (
    decide,
    delta_text,
    separated_best,
    verdict_lines,
    verdicts,
)

from .conftest import make_row, write_rows

N = 2000


def _paired(fp32_only: int, variant_only: int, both: int = 1700) -> dict:
    lo, hi = paired_diff_ci(both, variant_only, fp32_only, N - both - variant_only - fp32_only)
    return {"delta_top1": (variant_only - fp32_only) / N, "delta_top1_ci95": [lo, hi],
            "delta_top1_p": mcnemar_exact_p(fp32_only, variant_only), "fp32_only_correct": fp32_only,
            "variant_only_correct": variant_only, "eval_samples": N}


def _row(i: int, variant: str, p50: float, speedup: tuple[float, float, float] | None = None,
         loss: tuple[int, int] = (0, 0), **over) -> dict:
    precision = "fp32" if variant == "fp32" else "int8"
    row = make_row(i, variant=variant, precision=precision)
    row.update(compute_p50_ms=p50, compute_p50_ci95=[p50 * 0.97, p50 * 1.03], timing_noisy=False,
               **_paired(*loss))
    if speedup:
        row.update(speedup_interleaved=speedup[0], speedup_interleaved_ci95=[speedup[1], speedup[2]])
    row.update(over)
    return row


def _decide(rows: list[dict], budget: float = 1.0):
    return decide(rows, "m", "cpu", 1, budget)


def test_the_fastest_qualifying_variant_separated_beyond_noise_is_the_verdict():
    rows = [_row(0, "fp32", 2.0), _row(1, "fast", 1.0, (2.0, 1.9, 2.1), loss=(12, 6)),
            _row(2, "slow", 1.5, (1.3, 1.2, 1.4))]
    v = _decide(rows)
    assert v.status == "decided" and v.pick["variant"] == "fast" and not v.tied
    text = "\n".join(verdict_lines(v))
    assert "use fast on ort-cpu" in text and "speed-up 2.00× [1.90–2.10]" in text and "% of FP32" in text


def test_overlapping_speed_intervals_are_a_tie_and_all_overlapping_is_undecided():
    rows = [_row(0, "fp32", 2.0), _row(1, "a", 1.0, (2.0, 1.8, 2.2)), _row(2, "b", 1.05, (1.9, 1.7, 2.1)),
            _row(3, "c", 1.9, (1.05, 1.0, 1.1))]
    v = _decide(rows)
    assert v.status == "tie" and v.pick["variant"] == "a" and [r["variant"] for r in v.tied] == ["b"]
    assert "tied with" in "\n".join(verdict_lines(v))
    noise = [_row(0, "fp32", 2.0), _row(1, "a", 1.9, (1.05, 0.9, 1.2))]  # INT8 not faster beyond noise
    v = _decide(noise)
    assert v.status == "undecided" and "no qualifying row is faster than the others beyond noise" in v.reason


def test_missing_speed_intervals_are_never_separable():
    rows = [_row(0, "fp32", 2.0, compute_p50_ci95=None), _row(1, "a", 1.0, compute_p50_ci95=None,
                                                               speedup_interleaved=2.0)]
    v = _decide(rows)
    assert v.status == "undecided" and "no speed interval" in v.reason


def test_a_loss_significantly_beyond_the_budget_is_rejected_one_within_noise_is_not():
    rows = [_row(0, "fp32", 2.0), _row(1, "lossy", 0.5, (4.0, 3.8, 4.2), loss=(120, 20)),  # −5 points
            _row(2, "ok", 1.0, (2.0, 1.9, 2.1), loss=(40, 20))]  # −1.0 ± ~0.6: not significantly beyond 1
    v = _decide(rows)
    assert v.pick["variant"] == "ok" and v.rejected == ["lossy on ort-cpu"]
    assert _decide(rows, budget=6.0).pick["variant"] == "lossy"
    assert _decide(rows, budget=0.0).pick["variant"] == "fp32"  # "ok" loses significantly more than 0 points


def test_noisy_rows_and_rows_without_paired_accuracy_leave_the_verdict_undecided_with_the_reason():
    noisy = [_row(0, "fp32", 2.0, timing_noisy=True, timing_noisy_reason="other processes used 0.9 of a core"),
             _row(1, "a", 1.0, (2.0, 1.9, 2.1), timing_noisy=True)]
    v = _decide(noisy)
    assert v.status == "undecided" and "noisy" in v.reason and v.pick is None
    assert "not considered (timing noisy): fp32 on ort-cpu, a on ort-cpu." in "\n".join(verdict_lines(v))
    old = [make_row(0, variant="fp32"), make_row(1, variant="int8", precision="int8")]  # schema-2 style: no Δ interval
    v = _decide(old)
    assert v.status == "undecided" and "no row has a top-1 paired with FP32" in v.reason


def test_best_needs_separation_identical_values_tie_and_sizes_are_exact():
    assert separated_best([(90.0, (89.0, 91.0)), (85.0, (84.0, 86.0))], "max") == ({0}, True)
    assert separated_best([(90.0, (88.0, 92.0)), (89.0, (87.0, 91.0))], "max") == (set(), False)  # all tied
    assert separated_best([(90.0, (89.5, 90.5)), (90.0, (89.5, 90.5)), (80.0, (79.0, 81.0))], "max") == ({0, 1}, False)
    assert separated_best([(1.0, None), (2.0, None)], "min") == (set(), False)  # no interval: not separable
    assert separated_best([(1.0, None), (2.0, None)], "min", exact=True) == ({0}, True)


def test_report_marks_best_only_beyond_the_intervals_and_shows_the_verdict_first(tmp_path):
    pytest.importorskip("plotly")
    pytest.importorskip("jinja2")
    from quantbench.reports import render_html, render_markdown

    rows = [_row(0, "fp32", 2.0), _row(1, "twin-a", 1.0, (2.0, 1.9, 2.1), loss=(12, 6)),
            _row(2, "twin-b", 1.0, (2.0, 1.9, 2.1), loss=(12, 6)), _row(3, "slow", 1.6, (1.25, 1.2, 1.3))]
    for r in rows[1:3]:
        r["size_bytes"] = 500
    report = build_report([write_rows(tmp_path / "r.jsonl", rows)])
    (group,) = comparison_groups(report).values()
    marks = best_cells(group)
    names = [r["variant"] for r in group]
    chosen, alone = marks["speedup"]
    assert {names[i] for i in chosen} == {"twin-a", "twin-b"} and not alone  # identical: a tie, no "best"
    assert {names[i] for i in marks["size_mb"][0]} == {"twin-a", "twin-b"}
    html = render_html(report, tmp_path / "r.html").read_text()
    assert html.index('id="verdict"') < html.index("Devices and software")
    assert "tied with (intervals overlap, pick any)" in html
    md = render_markdown(report, budget_pts=0.5)
    assert "## Verdict" in md and "accuracy budget 0.5 points" in md


def test_console_shows_the_paired_delta_marks_noise_says_how_many_images_and_prints_the_verdict():
    rows = [_row(0, "fp32", 2.0), _row(1, "small", 1.0, (2.0, 1.9, 2.1), loss=(12, 6)),
            _row(2, "real", 1.2, (1.6, 1.5, 1.7), loss=(80, 10))]
    assert delta_text(rows[1]).startswith("≈−0.30 ±") and delta_text(rows[2]).startswith("−3.50 ±")
    console = Console(record=True, width=250, color_system=None)
    render_console(rows, console)
    render_verdict(rows, console, 1.0)
    text = console.export_text()
    assert "≈−0.30 ±0.45" in text and "−3.50 ±" in text and "not significant (exact McNemar" in text
    assert "images would resolve 0.5 points" in text
    assert "Verdict" in text and "use small on ort-cpu" in text and "beyond the budget" in text


def test_console_verdict_is_per_machine_as_the_reports_decide(tmp_path):
    """Rows of two machines with the same device name: the console decides per machine, as the report does,
    and never names one machine's variant the verdict for the other's."""
    rows = [_row(0, "fp32", 2.0), _row(1, "a", 1.0, (2.0, 1.9, 2.1)),
            _row(2, "fp32", 2.0), _row(3, "b", 0.5, (4.0, 3.9, 4.1))]
    for r, host in zip(rows, ["ha", "ha", "hb", "hb"], strict=True):
        r["env"] = {**r["env"], "host": host, "cpu_model": "cpu " + host}
    console = Console(record=True, width=250, color_system=None)
    render_verdict(rows, console, 1.0)
    text = console.export_text()
    assert "m on ha · cpu ha (cpu), batch 1" in text and "m on hb · cpu hb (cpu), batch 1" in text
    assert "use a on" in text and "use b on" in text
    assert [(v.device, v.status) for v in verdicts(rows, device_key, 1.0)] == \
        [("ha · cpu ha (cpu)", "decided"), ("hb · cpu hb (cpu)", "decided")]


def test_accuracy_budget_pts_is_a_run_key_with_default_one_point():
    doc = {"models": ["fashion_cnn"], "variants": [{"name": "fp32"}]}
    assert parse_config(doc).run.accuracy_budget_pts == 1.0
    assert parse_config({**doc, "run": {"accuracy_budget_pts": 0.25}}).run.accuracy_budget_pts == 0.25
    with pytest.raises(ConfigError, match="accuracy_budget_pts must be a number >= 0"):
        parse_config({**doc, "run": {"accuracy_budget_pts": -1}})


def test_verdicts_are_per_model_device_and_batch():
    rows = [_row(0, "fp32", 2.0), _row(1, "a", 1.0, (2.0, 1.9, 2.1)),
            dict(_row(2, "fp32", 4.0), batch=8, cell_id="b8-fp32"), dict(_row(3, "a", 3.9, (1.02, 0.95, 1.1)),
                                                                          batch=8, cell_id="b8-a")]
    found = verdicts(rows, device_key)
    assert [(v.batch, v.status) for v in found] == [(1, "decided"), (8, "undecided")]


def test_quantbench_report_takes_the_budget_and_refuses_a_bad_one(tmp_path):
    from quantbench.harness.cli import main

    rows = [_row(0, "fp32", 2.0), _row(1, "lossy", 1.0, (2.0, 1.9, 2.1), loss=(60, 20))]  # −2 ± ~0.6 points
    path = write_rows(tmp_path / "r.jsonl", rows)
    out = tmp_path / "r.md"
    assert main(["report", str(path), "--format", "md", "-o", str(out)]) == 0
    assert "beyond the budget" in out.read_text() and "use fp32" in out.read_text()
    assert main(["report", str(path), "--format", "md", "-o", str(out), "--accuracy-budget", "3"]) == 0
    assert "use lossy on ort-cpu" in out.read_text() and "accuracy budget 3 points" in out.read_text()
    assert main(["report", str(path), "--format", "md", "-o", str(out), "--accuracy-budget", "-1"]) == 2


def test_accuracy_chart_has_error_bars_and_labels_only_the_front_and_the_verdict():
    pytest.importorskip("plotly")
    from quantbench.reports.charts import accuracy_vs_latency

    rows = [_row(0, "fp32", 2.0, top1=0.90, top1_ci95=[0.88, 0.92])]
    rows += [_row(i, f"v{i}", 1.0 + 0.01 * i, top1=0.85 - 0.001 * i, top1_ci95=[0.83 - 0.001 * i, 0.87 - 0.001 * i])
             for i in range(1, 12)]  # eleven variants in one accuracy band: only the fastest is on the front
    fig = accuracy_vs_latency(rows, "t", picks={id(rows[5])})
    (points,) = [t for t in fig.data if t.mode == "markers+text"]
    labelled = {t for t in points.text if t}
    assert labelled == {"fp32", "v1", "v5"}  # the front (fp32, v1) and the verdict's pick
    assert len(set(points.customdata)) == 12  # every point still names itself on hover
    assert points.error_y.array[0] == pytest.approx(2.0) and points.error_y.arrayminus[0] == pytest.approx(2.0)
    assert points.error_x.array[0] == pytest.approx(0.06)  # compute p50 interval, ms
    assert any(t.name == "verdict" for t in fig.data)


def test_hand_edited_intervals_of_the_wrong_type_are_warnings_and_read_as_not_measured(tmp_path):
    rows = [_row(0, "fp32", 2.0), _row(1, "a", 1.0, (2.0, 1.9, 2.1), delta_top1_ci95="narrow", delta_top1="-0.1",
                                         top1_ci95=[0.8, "x"])]
    report = build_report([write_rows(tmp_path / "r.jsonl", rows)])
    assert "delta_top1, delta_top1_ci95, top1_ci95" in " ".join(report.warnings)
    (group,) = comparison_groups(report).values()
    a = next(r for r in group if r["variant"] == "a")
    assert a["delta_text"] is None  # shown as the plain difference, without an interval
    v = decide(report.ok, "m", "cpu", 1)
    assert v.pick["variant"] == "fp32" and v.excluded == {"no top-1 paired with FP32": ["a on ort-cpu"]}


def test_a_lone_qualifying_row_is_named_as_the_only_one_not_as_faster_than_others():
    rows = [_row(0, "fp32", 2.0), _row(1, "lossy", 1.0, (2.0, 1.9, 2.1), loss=(120, 20))]
    text = "\n".join(verdict_lines(_decide(rows)))
    assert "use fp32 on ort-cpu" in text and "the only row within the budget" in text and "faster beyond" not in text


def test_no_qualifying_row_for_mixed_reasons_names_them_all():
    rows = [_row(0, "fp32", 2.0, timing_noisy=True), _row(1, "lossy", 1.0, (2.0, 1.9, 2.1), loss=(120, 20))]
    v = _decide(rows)
    text = "\n".join(verdict_lines(v))
    assert v.pick is None and "no row qualifies" in text and "beyond the budget" in text and "timing noisy" in text
    assert "every variant loses" not in text
