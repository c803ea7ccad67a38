"""Sensitivity scans record their floor (FP32 forward passes over the SQNR images) and run a fast local mode."""
from __future__ import annotations

import math

import pytest

from quantbench.harness.studies.sensitivity import SensitivityOptions, rank_nodes, scan_cost
from tests.harness.studies.test_sensitivity import _study, tiny  # noqa: F401 - the tiny model with one outlier layer

pytestmark = pytest.mark.ort_cpu


def test_scan_cost_of_a_full_scan_counts_two_passes_per_node_measured_alone():
    events = [{"event": "whole", "fp32_pass_s": 0.5, "seconds": 0.6},
              {"event": "node", "node": "a", "alone": True, "seconds": 2.0},
              {"event": "node", "node": "b", "alone": True, "seconds": 3.0},
              {"event": "node", "node": "pool", "alone": False, "seconds": 0.4},  # quantized to nothing: no pass
              {"event": "node", "node": "c", "alone": True, "error": "boom"}]
    cost = scan_cost(events, local=False)
    assert cost["scan_floor_s"] == pytest.approx(0.5 * (1 + 2 * 2))
    assert cost["scan_time_s"] == pytest.approx(0.6 + 2.0 + 3.0 + 0.4)
    assert cost["scan_time_ratio"] == pytest.approx(cost["scan_time_s"] / cost["scan_floor_s"], rel=1e-3)


def test_scan_time_counts_setting_up_the_per_node_builds_of_every_worker_start():
    """Loading the graph for the in-memory builds and checking them against quantize_static is scan time (a
    restarted worker does it again), not free."""
    events = [{"event": "whole", "fp32_pass_s": 0.5, "seconds": 0.6}, {"event": "builder", "seconds": 1.5},
              {"event": "node", "node": "a", "alone": True, "seconds": 2.0}, {"event": "builder", "seconds": 1.25},
              {"event": "node", "node": "b", "alone": True, "seconds": 3.0}]
    cost = scan_cost(events, local=False)
    assert cost["scan_time_s"] == pytest.approx(0.6 + 1.5 + 2.0 + 1.25 + 3.0)
    assert cost["scan_time_ratio"] == pytest.approx(cost["scan_time_s"] / (0.5 * 5), rel=1e-3)


def test_scan_time_of_parallel_lanes_is_the_loop_wall_time_not_the_sum_of_overlapping_nodes():
    events = [{"event": "whole", "fp32_pass_s": 0.5, "seconds": 0.6}, {"event": "builder", "seconds": 1.0},
              {"event": "node", "node": "a", "alone": True, "seconds": 4.0},  # a first worker, cut short
              {"event": "builder", "seconds": 1.0},
              {"event": "node", "node": "b", "alone": True, "seconds": 3.0},
              {"event": "node", "node": "c", "alone": True, "seconds": 3.5},
              {"event": "scan", "lanes": 2, "nodes": ["b", "c"], "seconds": 3.6}]
    cost = scan_cost(events, local=False)
    assert cost["scan_time_s"] == pytest.approx(0.6 + 1.0 + 4.0 + 1.0 + 3.6)
    assert cost["scan_lanes"] == 2
    assert cost["scan_time_ratio"] == pytest.approx(cost["scan_time_s"] / (0.5 * 7), rel=1e-3)


def _batches(per_image_s: list[float], size: int = 8) -> list[list[float]]:
    return [[size, t * size] for t in per_image_s]


def test_scan_floor_pools_the_batches_timed_before_and_after_the_scan():
    """The floor's pass is the mean over both timed passes (per image), and the ratio's interval holds the ratio."""
    before = _batches([0.010, 0.011, 0.009, 0.010])  # 32 images: 0.32 s
    after = _batches([0.012, 0.013, 0.011, 0.012])  # the machine busier after the scan: 0.384 s
    events = [{"event": "whole", "fp32_pass_s": 0.32, "fp32_batches": before, "seconds": 0.5},
              {"event": "node", "node": "a", "alone": True, "seconds": 2.0},
              {"event": "scan", "lanes": 1, "nodes": ["a"], "seconds": 2.1},
              {"event": "floor", "fp32_batches": after}]
    cost = scan_cost(events, local=False)
    assert cost["fp32_pass_s"] == pytest.approx((0.32 + 0.384) / 2)
    assert cost["scan_floor_s"] == pytest.approx(3 * (0.32 + 0.384) / 2, rel=1e-4)
    lo, hi = cost["scan_time_ratio_ci95"]
    assert lo < cost["scan_time_ratio"] < hi
    # a floor that is slower makes the ratio smaller: the interval's low end is the slow floor's ratio
    assert hi <= (0.5 + 2.1) / (3 * 0.32) * 1.001 and lo >= (0.5 + 2.1) / (3 * 0.384) * 0.999


def test_scan_interval_widens_with_the_floors_spread_and_needs_batches():
    steady = _batches([0.010] * 6)
    noisy = _batches([0.006, 0.014, 0.008, 0.012, 0.010, 0.010])

    def ci(batches):
        events = [{"event": "whole", "fp32_pass_s": 0.48, "fp32_batches": batches, "seconds": 0.5},
                  {"event": "node", "node": "a", "alone": True, "seconds": 2.0}]
        return scan_cost(events, local=False)["scan_time_ratio_ci95"]

    lo, hi = ci(steady)
    assert hi - lo == pytest.approx(0, abs=1e-6)
    lo_n, hi_n = ci(noisy)
    assert hi_n - lo_n > 0.1
    # events from before batches were recorded: the pass time as given, no interval
    old = scan_cost([{"event": "whole", "fp32_pass_s": 0.5, "seconds": 0.6},
                     {"event": "node", "node": "a", "alone": True, "seconds": 2.0}], local=False)
    assert old["scan_floor_s"] == pytest.approx(1.5) and old["scan_time_ratio_ci95"] is None


def test_scan_cost_of_a_local_scan_is_one_pass_and_unknown_without_a_pass_time():
    cost = scan_cost([{"event": "whole", "fp32_pass_s": 0.25}, {"event": "local", "seconds": 1.0, "passes": 2}],
                     local=True)
    assert (cost["scan_floor_s"], cost["scan_time_ratio"]) == (0.5, 2.0)
    assert scan_cost([{"event": "local", "seconds": 1.0}], local=True)["scan_time_ratio"] is None


def test_local_rows_rank_lowest_own_output_sqnr_first():
    rows = [{"node": "a", "sqnr_local_db": 30.0}, {"node": "b", "sqnr_local_db": 12.0},
            {"node": "c", "sqnr_local_db": None}, {"node": "d", "error": "x", "sqnr_local_db": None}]
    assert [r["node"] for r in rank_nodes(rows, "local")] == ["b", "a", "c", "d"]


def _consistent(s):
    assert s["scan_floor_s"] > 0 and s["scan_time_s"] > 0
    assert s["scan_time_ratio"] == pytest.approx(s["scan_time_s"] / s["scan_floor_s"], rel=1e-2)
    if s["scan_mode"] == "full":
        lo, hi = s["scan_time_ratio_ci95"]
        assert lo <= s["scan_time_ratio"] <= hi
    assert s["calib_floor_s"] > 0
    assert s["calib_time_ratio"] > 0


@pytest.mark.slow
def test_full_scan_rows_carry_the_floor(tiny, tmp_path):  # noqa: F811 - the pytest fixture imported above
    study, _ = _study(tiny, tmp_path / "out", SensitivityOptions(sqnr_samples=64, top=0))
    s = study.summary
    assert s["scan_mode"] == "full"
    _consistent(s)
    for r in study.rows:
        assert r["scan_mode"] == "full"
        assert r["node_time_ratio"] == pytest.approx(r["node_seconds"] / r["node_floor_s"], rel=1e-2)
    # the floor is 1 + 2 per node FP32 passes of the same images
    unit = (s["scan_floor_s"]) / (1 + 2 * len(study.rows))
    assert all(r["node_floor_s"] == pytest.approx(2 * unit, rel=1e-2) for r in study.rows)


@pytest.mark.slow
def test_local_scan_is_marked_and_scores_every_node_from_one_pass(tiny, tmp_path):  # noqa: F811 - the pytest fixture imported above
    study, messages = _study(tiny, tmp_path / "out", SensitivityOptions(sqnr_samples=64, top=0, scan="local"))
    s = study.summary
    assert s["scan_mode"] == "local"
    _consistent(s)
    assert sorted(r["node"] for r in study.rows) == sorted(["conv_a", "sensitive_conv", "classifier"])
    values = [r["sqnr_local_db"] for r in study.rows]
    assert all(r["scan_mode"] == "local" and r["sqnr_quant_only_db"] is None for r in study.rows)
    assert all(v is not None and math.isfinite(v) for v in values) and values == sorted(values)
    assert any("local scan" in m for m in messages)
    assert s["sqnr_whole_int8_db"] is not None  # the whole model's SQNR, for context


def test_scan_must_be_known():
    from quantbench.harness.config.schema import ConfigError

    with pytest.raises(ConfigError, match="--scan"):
        SensitivityOptions(scan="fast").validate()


def _local_rows():
    base = {"sensitivity_schema": 1, "run_id": "r1", "model": "m", "variant": "int8", "status": "ok", "error": ""}
    nodes = [{**base, "kind": "sensitivity", "node": n, "op_type": "Conv", "rank": i + 1, "sqnr_local_db": db,
              "sqnr_quant_only_db": None, "sqnr_float_only_db": None, "scan_mode": "local"}
             for i, (n, db) in enumerate([("conv_b", 12.345), ("conv_a", 31.5)])]
    summary = {**base, "kind": "sensitivity_summary", "nodes": 2, "scan_mode": "local", "scan_time_s": 3.0,
               "scan_floor_s": 1.5, "scan_time_ratio": 2.0, "sqnr_samples": 10}
    return nodes, summary


def test_tables_show_a_local_scan_as_such():
    import io

    from rich.console import Console

    from quantbench.harness.studies.sensitivity import StudyResult
    from quantbench.reports.console_sensitivity import render_console
    from quantbench.reports.sensitivity import section_html

    nodes, summary = _local_rows()
    out = io.StringIO()
    render_console([StudyResult("m", "int8", rows=nodes, summary=summary)], Console(file=out, width=250))
    text = out.getvalue()
    assert "local scan" in text and "12.35" in text and "∞" not in text
    assert "2.00 × its floor" in text
    html = section_html([*nodes, summary])
    assert "local SQNR dB" in html and "12.35" in html and "2.00 × its floor" in html


def test_tables_show_the_scan_ratio_with_its_interval():
    import io

    from rich.console import Console

    from quantbench.harness.studies.sensitivity import StudyResult
    from quantbench.reports.console_sensitivity import render_console
    from quantbench.reports.sensitivity import section_html

    nodes, summary = _local_rows()
    summary = {**summary, "scan_mode": "full", "scan_time_ratio": 1.1, "scan_time_ratio_ci95": [1.05, 1.14]}
    nodes = [{**n, "scan_mode": "full", "sqnr_quant_only_db": n["sqnr_local_db"], "sqnr_local_db": None}
             for n in nodes]
    out = io.StringIO()
    render_console([StudyResult("m", "int8", rows=nodes, summary=summary)], Console(file=out, width=250))
    assert "1.10 [1.05–1.14] × its floor" in out.getvalue()
    assert "1.10 [1.05–1.14] × its floor" in section_html([*nodes, summary])
