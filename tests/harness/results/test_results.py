"""Results file: append-only, kill-safe, schema-checked."""
from __future__ import annotations

import json

import pytest
from quantbench.harness.results.store import (
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


# ---- generations: a rerun with other inputs supersedes the rows it measures again ------------------
def _gen_row(cell: str, variant: str, eval_samples: int, when: str, precision: str = "int8", model: str = "m",
             runtime_part: str = "rt", top1: float = 0.9, **kw) -> dict:
    """A row as the runner writes it, reduced to what decides its generation (numbers made up)."""
    return _row(cell, model=model, variant=variant, precision=precision, runtime="ort-cpu", runtime_label="ort-cpu",
                device="cpu", batch=1, timestamp=when, top1=top1, env={"host": "h"},
                fingerprint_parts={"model": "w", "timing": "t", "runtime": runtime_part},
                dataset={"fingerprint": "d", "eval_samples": eval_samples}, eval_samples=eval_samples, **kw)


def _gen_a():
    return [_gen_row("a-fp32", "fp32", 200, "2026-01-01T00:00:00", precision="fp32"),
            _gen_row("a-int8", "int8", 200, "2026-01-01T00:00:00")]


def test_a_rerun_with_other_eval_samples_supersedes_every_row_it_measured_again():
    from quantbench.harness.results.store import current_rows

    b = [_gen_row("b-fp32", "fp32", 100, "2026-01-02T00:00:00", precision="fp32"),
         _gen_row("b-int8", "int8", 100, "2026-01-02T00:00:00")]
    current, older = current_rows(_gen_a() + b)
    assert [r["cell_id"] for r in current] == ["b-fp32", "b-int8"]
    assert [r["cell_id"] for r in older] == ["a-fp32", "a-int8"]


def test_an_interrupted_rerun_shows_only_its_own_generation_never_a_mix():
    """Run 2 (eval 100) stopped after its FP32 cell: the INT8 row of run 1 (eval 200) is not current."""
    from quantbench.harness.results.store import current_rows

    current, older = current_rows(_gen_a() + [_gen_row("b-fp32", "fp32", 100, "2026-01-02T00:00:00",
                                                       precision="fp32")])
    assert [r["cell_id"] for r in current] == ["b-fp32"]
    assert {r["cell_id"] for r in older} == {"a-fp32", "a-int8"}


def test_other_threads_on_one_runtime_supersede_its_rows_but_not_the_other_models():
    from quantbench.harness.results.store import current_rows

    other_model = _gen_row("x", "fp32", 200, "2026-01-01T00:00:00", precision="fp32", model="m2")
    new_fp32 = _gen_row("c-fp32", "fp32", 200, "2026-01-03T00:00:00", precision="fp32", runtime_part="rt-2-threads")
    current, older = current_rows([*_gen_a(), other_model, new_fp32])
    assert [r["cell_id"] for r in current] == ["x", "c-fp32"]
    assert {r["cell_id"] for r in older} == {"a-fp32", "a-int8"}


def test_a_variant_added_later_keeps_the_reused_fp32_row_current():
    from quantbench.harness.results.store import current_rows

    later = _gen_row("a-int8-entropy", "int8-entropy", 200, "2026-01-05T00:00:00")
    current, older = current_rows([*_gen_a(), later])
    assert len(current) == 3 and older == []


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


def test_read_current_takes_a_folder_and_all_generations(tmp_path):
    from quantbench.harness.results.store import read_current

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
    append_row(path, _row("new", variant="b", top1=0.9, top1_ci95=[0.88, 0.92], delta_top1=-0.01, delta_top1_ci95=[-0.02, 0.0],
                          delta_top1_p=0.04, fp32_only_correct=30, variant_only_correct=10, agreement_ci95=[0.95, 0.97]))
    df = read_results(tmp_path).set_index("cell_id")
    for col in ("top1_ci95", "agreement_ci95", "delta_top1", "delta_top1_ci95", "delta_top1_p", "fp32_only_correct",
                "variant_only_correct"):
        assert col in df.columns and (df.loc["old", col] is None or df.loc["old", col] != df.loc["old", col])  # NaN
    assert list(df.loc["new", "delta_top1_ci95"]) == [-0.02, 0.0] and df.loc["new", "variant_only_correct"] == 10


def test_other_timing_settings_on_one_runtime_leave_the_other_runtimes_current():
    """A rerun of one runtime with another min_time_s: its rows are a new generation of that runtime only."""
    from quantbench.harness.results.store import current_rows, pairing_key

    other = {**_gen_row("ov-fp32", "fp32", 200, "2026-01-01T00:00:00", precision="fp32"), "runtime_label": "openvino"}
    new = _gen_row("c-fp32", "fp32", 200, "2026-01-03T00:00:00", precision="fp32")
    new["fingerprint_parts"] = {**new["fingerprint_parts"], "timing": "t-longer"}
    current, older = current_rows([*_gen_a(), other, new])
    assert [r["cell_id"] for r in current] == ["ov-fp32", "c-fp32"]
    assert {r["cell_id"] for r in older} == {"a-fp32", "a-int8"}
    assert pairing_key(new) != pairing_key(_gen_a()[1])  # never the reference of the older INT8 row
