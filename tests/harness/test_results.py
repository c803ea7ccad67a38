"""Results file: append-only, kill-safe, schema-checked."""
from __future__ import annotations

import json

import pytest
from quantbench.harness.results import (
    SCHEMA_VERSION,
    ResultsError,
    append_row,
    export_table,
    measured_cell_ids,
    read_rows,
)


def _row(cell: str, status: str = "ok", **kw):
    return {"schema_version": SCHEMA_VERSION, "cell_id": cell, "status": status, **kw}


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


def test_latest_row_per_cell_and_measured_ids(tmp_path):
    path = tmp_path / "r.jsonl"
    append_row(path, _row("a", "failed"))
    append_row(path, _row("b"))
    assert measured_cell_ids(path) == {"a", "b"}
    assert measured_cell_ids(path, include_failed=False) == {"b"}
    append_row(path, _row("a", "ok"))
    rows = {r["cell_id"]: r for r in read_rows(path).rows}
    assert rows["a"]["status"] == "ok"
    assert len(read_rows(path, latest_per_cell=False).rows) == 3


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(ResultsError, match="not found"):
        read_rows(tmp_path / "none.jsonl")
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    assert read_rows(empty).warnings == [f"{empty}: no result rows"]


def test_export_csv_and_parquet(tmp_path):
    pytest.importorskip("pandas")
    rows = [_row("a", compute_raw_ms=[1.0, 2.0], env={"host": "h"}), _row("b", compute_raw_ms=[3.0])]
    export_table(rows, tmp_path / "r.csv")
    text = (tmp_path / "r.csv").read_text()
    assert "compute_raw_ms" in text and "[1.0, 2.0]" in text
    if pytest.importorskip("pyarrow"):
        import pandas as pd

        export_table(rows, tmp_path / "r.parquet")
        assert list(pd.read_parquet(tmp_path / "r.parquet")["cell_id"]) == ["a", "b"]
    with pytest.raises(ResultsError):
        export_table(rows, tmp_path / "r.xlsx")


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
