"""One rule for "the FP32 reference of this row": the console table and the reports pair the same rows."""
from __future__ import annotations

from quantbench.reports.console import summary_rows
from quantbench.reports.model import build_report
from quantbench.reports.tables import comparison_groups

from .conftest import make_row, write_rows


def _rows():
    fp32 = make_row(0, host="h", precision="fp32", variant="fp32")
    here = make_row(1, host="h", precision="int8", variant="int8")
    there = make_row(2, host="h2", precision="int8", variant="int8")  # another machine, no FP32 row of its own
    other_cpu = make_row(3, host="h", precision="int8", variant="int8-b")
    other_cpu["env"]["cpu_model"] = "another cpu"  # the same host name, another processor
    return [fp32, here, there, other_cpu]


def test_console_and_report_compare_each_row_with_the_same_fp32_row(tmp_path):
    rows = _rows()
    console = {s["cell_id"]: s for s in summary_rows(rows)}
    report = build_report([write_rows(tmp_path / "r.jsonl", rows)])
    tables = {g["row"]["cell_id"]: g for group in comparison_groups(report).values() for g in group}
    assert set(console) == set(tables)
    for cell, s in console.items():
        assert s["ref"] == tables[cell]["ref"], cell
        if not s["ref"]:  # the reference's own Δ: 0 in the console, "ref" in the reports
            assert (s["delta_pts"] is None) == (tables[cell]["delta"] is None), cell
    assert console["c0-h"]["ref"] and console["c1-h"]["delta_pts"] is not None
    # measured on another machine: its separately timed p50 is not compared with this machine's FP32
    assert console["c2-h2"]["delta_pts"] is None and console["c3-h"]["delta_pts"] is None


def test_a_fleet_row_is_compared_within_its_target_and_processor():
    fp32 = make_row(0, host="n1", precision="fp32", variant="fp32")
    same = make_row(1, host="n1", precision="int8", variant="int8")
    other = make_row(2, host="n2", precision="int8", variant="int8")
    other["env"]["cpu_model"] = "cpu other"
    for r in (fp32, same, other):
        r["fleet"] = {"target": "cpu-x"}
    console = {s["cell_id"]: s for s in summary_rows([fp32, same, other])}
    assert console["c1-n1"]["delta_pts"] is not None and console["c2-n2"]["delta_pts"] is None
