"""What the report reads: output folders, byte-order marks, one generation of rows, a dataset line that says
what the data is, and an FP32 reference taken only from the row's own generation."""
from __future__ import annotations

import json

import pytest

from quantbench.reports import main_report
from quantbench.reports.model import build_report, dataset_text
from quantbench.reports.tables import comparison_groups

from .conftest import make_row, write_rows


def _gen(i: int, precision: str, eval_samples: int, when: str, top1: float) -> dict:
    row = make_row(i, precision=precision, variant=precision)
    row.update(cell_id=f"{precision}-{eval_samples}", timestamp=when, top1=top1, eval_samples=eval_samples,
               fingerprint_parts={"model": "w", "timing": "t", "runtime": "r"},
               dataset={"name": "d", "fingerprint": "f", "eval_samples": eval_samples})
    return row


def test_a_folder_and_a_byte_order_mark_are_read(tmp_path):
    (tmp_path / "out").mkdir()
    text = "".join(json.dumps(r) + "\n" for r in (make_row(1), make_row(2)))
    (tmp_path / "out" / "results.jsonl").write_bytes(b"\xef\xbb\xbf" + text.encode())
    report = build_report([tmp_path / "out"])
    assert len(report.rows) == 2 and report.warnings == []


def test_superseded_rows_are_left_out_and_never_paired(tmp_path):
    """Run 1 (eval 200) measured FP32 and INT8; run 2 (eval 100) was stopped after its INT8 cell."""
    path = write_rows(tmp_path / "results.jsonl", [
        _gen(1, "fp32", 200, "2026-01-01T00:00:00", 0.90), _gen(2, "int8", 200, "2026-01-01T00:00:00", 0.89),
        _gen(3, "int8", 100, "2026-01-02T00:00:00", 0.80)])
    report = build_report([path])
    assert [r["cell_id"] for r in report.rows] == ["int8-100"]
    assert any("2 row(s) measured under earlier inputs" in w for w in report.warnings)
    (rows,) = comparison_groups(report).values()
    assert rows[0]["delta"] is None  # run 1's FP32 (200 images) is not its reference

    every = build_report([path], all_generations=True)
    (rows,) = comparison_groups(every).values()
    delta = {r["row"]["cell_id"]: r["delta"] for r in rows}
    assert delta["int8-100"] is None and round(delta["int8-200"], 6) == -1.0
    assert sorted(r["variant"] for r in rows) == ["fp32 (older generation)", "int8", "int8 (older generation)"]


def test_dataset_line_says_what_the_data_is():
    row = make_row(1)
    row["dataset"] = {"name": "cifar10", "split": "test_batch (evaluation), data_batch_* (calibration)",
                      "class_index": "folder names as integers", "n_evaluation": 10000, "eval_samples": 500,
                      "fingerprint": "a", "calibration": {"name": "cifar10", "fingerprint": "a"}}
    assert dataset_text(row) == ("cifar10; 500 evaluation images (of 10000 in its evaluation split); "
                                 "split: test_batch (evaluation), data_batch_* (calibration); "
                                 "class index: folder names as integers")
    row["dataset"]["calibration"] = {"name": "my-calib", "fingerprint": "b", "n_calibration": 64}
    assert dataset_text(row).endswith("; calibration: my-calib (64 images)")
    assert "?" not in dataset_text({"eval_samples": 3})


def test_the_report_never_writes_over_its_input_or_a_results_file(tmp_path, capsys):
    path = write_rows(tmp_path / "results.jsonl", [make_row(1)])
    before = path.read_text()
    assert main_report([path], path, "html") == 2
    assert main_report([tmp_path], tmp_path / "results.jsonl", "md") == 2
    other = write_rows(tmp_path / "a.jsonl", [make_row(1)])
    assert main_report([other], tmp_path / "sub" / "results.jsonl", "csv") == 2
    err = capsys.readouterr().err.strip().splitlines()
    named = (f"error: refusing to write a report to {tmp_path / 'sub' / 'results.jsonl'}: files named results.jsonl "
             "hold measured rows; choose another -o")
    assert err == [f"error: refusing to write the report over its input {path}: choose another -o"] * 2 + [named]
    assert path.read_text() == before


def test_study_charts_use_the_current_generation_only(tmp_path):
    """The studies' curves and their dotted FP32 line come from one generation, even in an --all-generations report."""
    from quantbench.reports.studies import _latest

    rows = [_gen(1, "fp32", 200, "2026-01-01T00:00:00", 0.90), _gen(2, "int8", 200, "2026-01-01T00:00:00", 0.89),
            _gen(3, "int8", 100, "2026-01-02T00:00:00", 0.80)]
    every = build_report([write_rows(tmp_path / "results.jsonl", rows)], all_generations=True)
    assert [r["cell_id"] for r in _latest(every.rows)] == ["int8-100"]


def test_the_verdict_decides_for_the_current_generation_only(tmp_path):
    from quantbench.reports.verdict import verdicts

    rows = [_gen(1, "fp32", 200, "2026-01-01T00:00:00", 0.90), _gen(2, "int8", 200, "2026-01-01T00:00:00", 0.89),
            _gen(3, "fp32", 100, "2026-01-02T00:00:00", 0.80), _gen(4, "int8", 100, "2026-01-02T00:00:00", 0.80)]
    every = build_report([write_rows(tmp_path / "results.jsonl", rows)], all_generations=True)
    assert len(every.ok) == 4 and [r["cell_id"] for r in every.current_ok] == ["fp32-100", "int8-100"]
    (v,) = verdicts(every.current_ok, lambda r: "d", 1.0)
    assert v.reference is not None and v.reference["cell_id"] == "fp32-100"
    assert all(r["eval_samples"] == 100 for r in v.front)


def test_a_mistyped_record_field_is_a_warning_not_a_crash(tmp_path, capsys):
    """Every Row field is type-checked on reading, records too: a hand-edited ``"fleet": "gpu"`` is shown as missing."""
    bad = make_row(1, precision="int8")
    bad.update(fleet="gpu", sweep="no", calib_time_ratio="abc")
    path = write_rows(tmp_path / "results.jsonl", [make_row(0), bad])
    for fmt in ("md", "csv"):
        assert main_report([path], tmp_path / f"r.{fmt}", fmt) == 0
    err = capsys.readouterr().err
    assert "field(s) of the wrong type shown as missing: calib_time_ratio, fleet, sweep" in err
    assert "abc" not in (tmp_path / "r.md").read_text()


@pytest.mark.slow
def test_a_real_sweep_writes_rows_of_the_row_type(real_results):
    """Every field the runner writes is declared in quantbench.common.row.Row, with a value of its declared type."""
    from quantbench.common.row import row_problems
    from quantbench.common.row_file import read_rows

    rows = read_rows(real_results, fill_added=False).rows
    assert rows and {r["precision"] for r in rows} == {"fp32", "int8"}
    assert {r["cell_id"]: row_problems(r) for r in rows} == {r["cell_id"]: [] for r in rows}
