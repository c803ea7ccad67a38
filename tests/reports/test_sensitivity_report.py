"""Sensitivity section: bars and budget path render, every label from rows is escaped, the chosen point is marked.

The rows are made up (renderer test only); tests/harness/studies/test_sensitivity.py produces real ones.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import make_row, write_rows

pytestmark = pytest.mark.report

EVIL = "<b>conv</b></script><a href='x'>"


def _rows(met: bool = True) -> list[dict]:
    base = {"sensitivity_schema": 1, "run_id": "r1", "model": "m<i>", "variant": "int8", "status": "ok", "error": ""}
    nodes = [{**base, "kind": "sensitivity", "node": EVIL if i == 0 else f"n{i}", "op_type": "Conv", "rank": i + 1,
              "sqnr_quant_only_db": 10.0 + 10 * i, "sqnr_float_only_db": 40.0 - 5 * i,
              "top1_quant_only": 0.5 if i == 0 else None, "top1_float_only": 0.9 if i == 0 else None} for i in range(3)]
    summary = {**base, "kind": "sensitivity_summary", "nodes": 3, "sqnr_samples": 100, "sqnr_whole_int8_db": 9.0,
               "top1_fp32": 0.9, "top1_int8": 0.5, "elapsed_s": 3.0, "accuracy_note": ""}
    common = {**base, "kind": "budget_step", "runtime": "ort-cpu", "batch": 1, "budget_pts": 0.5}
    steps = [{**common, "step": None, "label": "fp32", "nodes_float": None, "top1": 0.9, "compute_p50_ms": 2.0},
             {**common, "step": 0, "label": "0 float", "nodes_float": [], "top1": 0.5, "drop_pts": 40.0,
              "compute_p50_ms": 1.0, "meets_budget": False, "chosen": not met},
             {**common, "step": 1, "label": "1 float", "nodes_float": [EVIL], "added_node": EVIL,
              "top1": 0.9 if met else 0.6, "drop_pts": 0.0 if met else 30.0, "compute_p50_ms": 1.2,
              "meets_budget": met, "chosen": met}]
    if not met:
        steps[1]["chosen"], steps[2]["chosen"] = False, True  # the best found: the highest top-1
    budget = {**base, "kind": "budget", "runtime": "ort-cpu", "batch": 1, "budget_pts": 0.5, "met": met,
              "exclude_nodes": [EVIL], "message": "budget of 0.5 points " + ("met" if met else "NOT met; best found")}
    return [*nodes, summary, *steps, budget]


def test_section_escapes_and_marks_the_chosen_point(tmp_path: Path) -> None:
    from quantbench.reports.sensitivity import write_sensitivity_report

    path = write_rows(tmp_path / "sensitivity.jsonl", _rows())
    text = write_sensitivity_report([path], tmp_path / "s.html").read_text()
    body = text.split("</script>", 1)[1]  # after the embedded plotly bundle
    assert EVIL not in body and "<b>conv</b>" not in body and "m<i>" not in body
    assert "&lt;b&gt;conv&lt;/b&gt;" in body
    assert "per-node sensitivity" in body and "accuracy vs latency" in body
    assert '"name":"chosen"' in body.replace(" ", "")
    assert "← chosen" in body


def test_not_met_is_said_and_the_best_point_marked(tmp_path: Path) -> None:
    from quantbench.reports.sensitivity import section_html

    body = section_html(_rows(met=False))
    assert "NOT met" in body and "best found (budget not met)" in body


def test_main_report_includes_the_section_next_to_results(tmp_path: Path) -> None:
    from quantbench.reports import build_report, render_html

    results = write_rows(tmp_path / "results.jsonl", [make_row(0), make_row(1, precision="int8")])
    write_rows(tmp_path / "sensitivity.jsonl", _rows())
    text = render_html(build_report([results]), tmp_path / "r.html").read_text()
    assert "Quantization sensitivity and mixed precision" in text
    (tmp_path / "sensitivity.jsonl").unlink()
    text = render_html(build_report([results]), tmp_path / "r2.html").read_text()
    assert "Quantization sensitivity" not in text


def test_latest_study_only_and_bad_lines_are_warnings(tmp_path: Path) -> None:
    from quantbench.reports.sensitivity import load_rows, studies

    old = [{**r, "run_id": "r0", "sqnr_quant_only_db": -1.0} for r in _rows() if r["kind"] == "sensitivity"]
    path = tmp_path / "sensitivity.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in old + _rows()) + '{"truncated": ')
    rows, warnings = load_rows([path])
    (st,) = studies(rows)
    assert [n["sqnr_quant_only_db"] for n in st["nodes"]] == [10.0, 20.0, 30.0]
    assert len(warnings) == 1 and "unreadable" in warnings[0]


def test_a_byte_order_mark_does_not_cost_the_first_row(tmp_path: Path) -> None:
    """sensitivity.jsonl is read by the same JSON Lines reader as results.jsonl (an editor's BOM is dropped)."""
    from quantbench.reports.sensitivity import load_rows

    path = tmp_path / "sensitivity.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in _rows()).encode())
    rows, warnings = load_rows([path])
    assert len(rows) == len(_rows()) and warnings == []


def test_node_top1_shows_its_change_and_interval_as_the_console_does() -> None:
    from quantbench.reports.console_sensitivity import top1_change_text
    from quantbench.reports.sensitivity import section_html

    rows = _rows()
    rows[0].update(top1_drop_quant_only_pts=0.51, top1_drop_quant_only_ci95_pts=[-0.41, 1.43],
                   top1_drop_quant_only_p=0.3, top1_drop_float_only_pts=2.0, top1_drop_float_only_ci95_pts=[1.0, 3.0],
                   top1_drop_float_only_p=0.001)
    html = section_html(rows)
    assert "50.00 <span class='muted'>(Δ ≈-0.51 ±0.92)</span>" in html  # not significant: ≈
    assert "90.00 <span class='muted'>(Δ -2.00 ±1.00)</span>" in html
    assert top1_change_text(rows[0], "top1_drop_quant_only") == "≈-0.51 ±0.92"
    assert "<td>—</td>" in html  # the other nodes: no top-1 measured
