"""The one reader of results files: the CLI, the API and the reports read a file the same way."""
from __future__ import annotations

import json

import pytest

from quantbench.common.row import SCHEMA_VERSION
from quantbench.common.row_file import NOT_JSON, ResultsError, append_row, iter_json_lines, read_rows
from quantbench.common.row_format import MISSING, NA, fmt, is_number
from tests.common.test_row_keys import _gen_a, _gen_row


def _row(cell: str, status: str = "ok", **kw):
    return {"schema_version": SCHEMA_VERSION, "cell_id": cell, "status": status, **kw}


def _bad_file(tmp_path):
    path = tmp_path / "results.jsonl"
    lines = [json.dumps(_row("a", top1=0.9)), '{"schema_version": 3, "cell_id": "cut', "<html>", "[1, 2]",
             json.dumps({"schema_version": 9, "cell_id": "z", "status": "ok"}), json.dumps(_row("b", top1="high"))]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_cli_and_the_report_say_the_same_about_the_same_bad_lines(tmp_path):
    from quantbench.reports.model import build_report

    path = _bad_file(tmp_path)
    cli = read_rows(path).warnings
    report = build_report([path]).warnings
    assert cli == [f"{path}:2: truncated or corrupt line (not JSON); row skipped",
                   f"{path}:3: truncated or corrupt line (not JSON); row skipped",
                   f"{path}:4: not a result row (an array, not a JSON object); row skipped",
                   f"{path}:5: schema version 9 is not supported (this quantbench reads 1, 2, 3); row skipped"]
    assert report[:4] == cli and report[4] == f"{path}: field(s) of the wrong type shown as missing: top1"


def test_rows_are_kept_as_written_unless_types_are_checked(tmp_path):
    path = _bad_file(tmp_path)
    assert read_rows(path).rows[1]["top1"] == "high"  # the API and resume see what the file holds
    checked = read_rows(path, check_types=True)
    assert checked.rows[1]["top1"] is None and checked.mistyped == {"top1"}
    assert [no for no, _ in read_rows(path).foreign] == [3, 4]  # a cut row is not a foreign line, HTML is


def test_rows_without_a_cell_id_are_each_kept(tmp_path):
    path = tmp_path / "r.jsonl"
    for variant in ("x", "y"):
        append_row(path, _row(None, variant=variant))
    append_row(path, _row("c", variant="z"))
    assert [r["variant"] for r in read_rows(path).rows] == ["x", "y", "z"]


def test_fields_added_since_an_old_row_are_null_only_when_asked(tmp_path):
    path = tmp_path / "r.jsonl"
    append_row(path, {"schema_version": 1, "cell_id": "a", "status": "ok"})
    assert read_rows(path).rows[0]["top1_ci95"] is None and "stop_reason" in read_rows(path).rows[0]
    assert "stop_reason" not in read_rows(path, fill_added=False).rows[0]  # the report shows rows as written


def test_json_lines_drop_a_byte_order_mark_and_mark_lines_that_are_not_json(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"kind": "sensitivity"}\n\n{"kind": \n[1]\n')
    assert [(no, value) for no, value, _ in iter_json_lines(path)] == [(1, {"kind": "sensitivity"}), (3, NOT_JSON),
                                                                      (4, [1])]


def test_one_missing_value_rule():
    assert fmt(None) == fmt("") == fmt(float("nan"), "{:.3f}") == fmt(float("inf")) == MISSING
    assert fmt(NA, "{:.3f}") == NA and fmt("text", "{:.2f}") == "text"
    assert fmt(0.9, "{:.2f}", "%", scale=100) == "90.00%" and fmt(1234.5, "{:,.0f}") == "1,234"
    assert fmt([1, 2], "{:.3f}") == "[1, 2]"  # a value the spec cannot format is shown as text
    assert is_number(1) and is_number(0.5) and not is_number(True) and not is_number(float("nan"))


# ---- moved from tests/harness/results/test_results.py with the reader --------------------------------
def test_truncated_line_is_repaired_and_skipped(tmp_path):
    path = tmp_path / "r.jsonl"
    append_row(path, _row("a"))
    with open(path, "a") as fh:  # a writer killed mid-line
        fh.write('{"schema_version": 1, "cell_id": "b", "sta')
    append_row(path, _row("c"))
    report = read_rows(path)
    assert [r["cell_id"] for r in report.rows] == ["a", "c"]
    assert any("truncated" in w for w in report.warnings)
    assert path.read_text().count("\n") == 3


def test_old_schema_rows_are_reported_not_read(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"schema_version": 0, "cell_id": "x"}) + "\n")
    append_row(path, _row("y"))
    report = read_rows(path)
    assert [r["cell_id"] for r in report.rows] == ["y"]
    assert "schema version 0 is not supported" in report.warnings[0]


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(ResultsError, match="not found"):
        read_rows(tmp_path / "none.jsonl")
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    assert read_rows(empty).warnings == [f"{empty}: no result rows"]


def test_version1_rows_are_read_with_new_fields_null(tmp_path):
    path = tmp_path / "r.jsonl"
    append_row(path, {"schema_version": 1, "cell_id": "a", "status": "ok", "h2d_p50_ms": 0.001})
    row = read_rows(path).rows[0]
    for key in ("stop_reason", "timing_valid", "speedup_error", "io_scope", "host_memory", "fingerprint"):
        assert key in row and row[key] is None
    assert row["h2d_p50_ms"] == 0.001 and row["schema_version"] == 1


def test_version2_rows_are_read_with_the_accuracy_intervals_not_measured(tmp_path):
    path = tmp_path / "r.jsonl"
    append_row(path, {"schema_version": 2, "cell_id": "a", "status": "ok", "top1": 0.9, "stop_reason": "max_iters"})
    append_row(path, _row("b", top1=0.9, top1_ci95=[0.88, 0.92]))
    old, new = read_rows(path).rows
    for key in ("top1_ci95", "agreement_ci95", "delta_top1", "delta_top1_ci95", "delta_top1_p",
                "fp32_only_correct", "variant_only_correct"):
        assert key in old and old[key] is None
    assert old["stop_reason"] == "max_iters" and old["top1"] == 0.9  # what it measured is kept
    assert new["top1_ci95"] == [0.88, 0.92] and SCHEMA_VERSION == 3


def test_read_current_takes_a_folder_and_all_generations(tmp_path):
    from quantbench.common.row_file import read_current

    path = tmp_path / "results.jsonl"
    for row in [*_gen_a(), _gen_row("b-fp32", "fp32", 100, "2026-01-02T00:00:00", precision="fp32")]:
        append_row(path, row)
    loaded = read_current(tmp_path)
    assert [r["cell_id"] for r in loaded.rows] == ["b-fp32"]
    assert any("2 row(s) measured under earlier inputs" in w for w in loaded.warnings)
    assert len(read_current(path, all_generations=True).rows) == 3


def test_a_utf8_byte_order_mark_is_not_a_corrupt_first_row(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(_row("a")) + "\n" + json.dumps(_row("b")) + "\n").encode())
    report = read_rows(path)
    assert [r["cell_id"] for r in report.rows] == ["a", "b"] and report.warnings == []
