"""The results file of an output folder: what a rerun finds there, re-affirmed rows, CSV/Parquet export.

The reader and writer themselves are tested in tests/common/test_row_file.py, generations in
tests/common/test_row_keys.py."""
from __future__ import annotations

import pytest

from quantbench.harness.results.store import (
    SCHEMA_VERSION,
    ResultsError,
    append_row,
    export_table,
    measured_cell_ids,
    read_rows,
)
from tests.common.test_row_keys import _gen_a, _gen_row


def _row(cell: str, status: str = "ok", **kw):
    return {"schema_version": SCHEMA_VERSION, "cell_id": cell, "status": status, **kw}


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


def test_a_config_changed_back_makes_its_reused_rows_current_again(tmp_path):
    """Run 1 eval 200, run 2 eval 100, run 3 eval 200 again (every cell reused): run 3's rows are the current ones."""
    from quantbench.harness.results.store import current_rows, reaffirm_rows

    path = tmp_path / "results.jsonl"
    a = _gen_a()
    for row in [*a, _gen_row("b-fp32", "fp32", 100, "2026-01-02T00:00:00", precision="fp32"),
                _gen_row("b-int8", "int8", 100, "2026-01-02T00:00:00")]:
        append_row(path, row)
    assert reaffirm_rows(path, a, "run3") == 2
    rows = read_rows(path).rows
    current, _ = current_rows(rows)
    assert [r["cell_id"] for r in current] == ["a-fp32", "a-int8"]
    assert all(r["reused_in_run"] == "run3" and r["top1"] == 0.9 for r in current)  # the measurement is unchanged
    assert reaffirm_rows(path, a, "run4") == 0  # already current: nothing appended
    assert len(read_rows(path, latest_per_cell=False).rows) == 6


def test_stored_rows_stop_on_a_file_that_is_not_results_but_not_on_a_cut_row(tmp_path):
    from quantbench.harness.results.store import stored_rows

    path = tmp_path / "results.jsonl"
    append_row(path, _row("a"))
    with open(path, "a") as fh:  # a writer killed mid-row: skipped with a warning, the run goes on
        fh.write('{"schema_version": 2, "cell_id": "b", "sta')
    logs: list[str] = []
    assert set(stored_rows(path, logs.append)) == {"a"}
    assert logs and "truncated" in logs[0]
    path.write_text("<!DOCTYPE html>\n<html><body>report</body></html>\n")  # a report written over the results
    with pytest.raises(ResultsError, match=r"is not a quantbench results file: line 1 is not a result row "
                                           r"\('<!DOCTYPE html>'\), nor are 1 other line\(s\); move it away"):
        stored_rows(path)


def test_export_writes_a_mistyped_row_as_null_with_a_warning(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    rows = [_row("a", top1=0.9, extra=1), _row("b", top1="high", extra="x")]
    warnings = export_table(rows, tmp_path / "r.parquet")
    df = pd.read_parquet(tmp_path / "r.parquet")
    assert list(df["cell_id"]) == ["a", "b"] and df["top1"].iloc[0] == 0.9 and pd.isna(df["top1"].iloc[1])
    assert list(df["extra"]) == ["1", "x"]
    assert warnings == ["field(s) of the wrong type written as null: top1",
                        "column(s) with values of mixed types written as text: extra"]


def test_read_results_dataframe_carries_the_interval_columns_for_old_and_new_rows(tmp_path):
    pytest.importorskip("pandas")
    from quantbench.harness.api import read_results

    path = tmp_path / "results.jsonl"
    append_row(path, {"schema_version": 2, "cell_id": "old", "status": "ok", "top1": 0.9, "variant": "a"})
    append_row(path, _row("new", variant="b", top1=0.9, top1_ci95=[0.88, 0.92], delta_top1=-0.01,
                          delta_top1_ci95=[-0.02, 0.0], delta_top1_p=0.04, fp32_only_correct=30,
                          variant_only_correct=10, agreement_ci95=[0.95, 0.97]))
    df = read_results(tmp_path).set_index("cell_id")
    for col in ("top1_ci95", "agreement_ci95", "delta_top1", "delta_top1_ci95", "delta_top1_p", "fp32_only_correct",
                "variant_only_correct"):
        assert col in df.columns and (df.loc["old", col] is None or df.loc["old", col] != df.loc["old", col])  # NaN
    assert list(df.loc["new", "delta_top1_ci95"]) == [-0.02, 0.0] and df.loc["new", "variant_only_correct"] == 10
