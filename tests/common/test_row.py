"""The Row type: every field documented once, the schema document generated from it, old versions still read."""
from __future__ import annotations

from pathlib import Path

from quantbench.common import row as row_mod
from quantbench.common.row import (
    ADDED_FIELDS,
    FIELDS,
    PHASES,
    READABLE_VERSIONS,
    SCHEMA_VERSION,
    STATS,
    Row,
    conforms,
    row_problems,
    schema_markdown,
    type_text,
    value_kind,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "row-schema.md"


def test_the_schema_document_is_the_one_generated_from_the_type():
    """docs/row-schema.md must be regenerated (python -m quantbench.common.row docs/row-schema.md) when Row changes."""
    assert DOC.read_text(encoding="utf-8") == schema_markdown(), (
        "docs/row-schema.md and quantbench/common/row.py disagree: run "
        "`python -m quantbench.common.row docs/row-schema.md`")


def test_the_document_names_every_field_with_its_type_unit_and_version():
    text = schema_markdown()
    for name, f in FIELDS.items():
        shown = f.doc.pattern or name
        line = next(ln for ln in text.splitlines() if ln.startswith(f"| `{shown}` |"))
        cells = [c.strip() for c in line.split(" | ")]
        assert cells[1] == type_text(f.type).replace("|", "\\|") and cells[2] == f.doc.unit, line
        assert cells[3] == str(f.doc.since) and f.doc.meaning[:30] in line, line
    assert "`{P}_{S}_ms`" in text and "`compute_p50_ms`" not in text  # the 40 statistics: one family line


def test_a_changed_field_changes_the_document(monkeypatch):
    """The document follows the type: a field's new meaning shows up (the comparison above can fail)."""
    before = schema_markdown()
    f = FIELDS["top1"]
    changed = row_mod.Field(f.name, f.type, row_mod.Doc("changed", "pts", 3), f.group)
    monkeypatch.setitem(row_mod.FIELDS, "top1", changed)
    after = schema_markdown()
    assert after != before and "| `top1` | number or null | pts | 3 | changed |" in after


def test_every_field_is_documented_and_versioned():
    assert set(Row.__annotations__) == set(FIELDS)
    for name, f in FIELDS.items():
        assert f.doc.meaning and 1 <= f.doc.since <= SCHEMA_VERSION, name
    for p in PHASES:
        for s in STATS:
            assert FIELDS[f"{p}_{s}_ms"].doc.pattern == "{P}_{S}_ms"
        assert value_kind(FIELDS[f"{p}_raw_ms"].type) == "number_list"


def test_fields_filled_on_reading_old_rows_are_declared_with_their_version():
    assert set(ADDED_FIELDS) == {v for v in READABLE_VERSIONS if v > 1}
    for version, keys in ADDED_FIELDS.items():
        for key in keys:
            assert FIELDS[key].doc.since == version, key
            assert conforms(None, FIELDS[key].type), f"{key} is null in older rows: its type must allow null"


def test_row_problems_names_unknown_and_mistyped_fields():
    good = {"schema_version": 3, "status": "ok", "batch": 8, "top1": 0.9, "compute_raw_ms": [1.0, 2],
            "stop_reason": None, "_source": "x"}
    assert row_problems(good) == []
    bad = {**good, "status": "done", "batch": True, "top1": "high", "compute_raw_ms": [1.0, "x"], "extra": 1}
    assert sorted(p.split(":")[0] for p in row_problems(bad)) == ["batch", "compute_raw_ms", "extra", "status", "top1"]


def test_the_readers_type_checks_cover_what_the_report_reader_checked():
    """The kinds the report reader used to list by hand (before the Row type) are each field's declared kind."""
    text = {"run_id", "cell_id", "timestamp", "error", "model", "variant", "precision", "runtime", "runtime_label",
            "device", "weights", "artifact_sha256", "artifact_path", "identical_to", "clock", "exec_precision",
            "audit_note", "audit_warning", "stop_reason", "accuracy_note", "speedup_error", "io_scope", "fingerprint",
            "speedup_stop_reason", "timing_noisy_reason", "params_from"}
    number = {"batch", "size_bytes", "param_count", "quant_time_s", "quant_peak_mem_mb", "throughput_ips", "top1",
              "top5", "agreement_top1", "max_abs_err", "mean_abs_err", "int8_op_share", "speedup_interleaved",
              "eval_samples", "iterations", "load_avg", "duration_s", "speedup_ci_level", "speedup_separate",
              "interleave_variant_ms", "interleave_fp32_ms", "timing_attempts", "trainable_params",
              "non_trainable_params", "eval_wall_s", "delta_top1", "delta_top1_p", "fp32_only_correct",
              "variant_only_correct"}
    flags = {"timing_valid", "host_memory", "timing_noisy"}
    records = {"env", "variant_settings", "runtime_settings", "dataset", "op_precisions", "runtime_versions",
               "measure_settings", "fingerprint_parts", "interference"}
    lists = {"speedup_interleaved_rounds", "speedup_interleaved_ci95", "compute_p50_ci95", "e2e_p50_ci95",
             "interleave_fp32_ci95", "speedup_separate_ci95", "top1_ci95", "agreement_ci95", "delta_top1_ci95"}
    for kind, names in (("text", text), ("number", number), ("bool", flags), ("dict", records),
                        ("number_list", lists)):
        for name in names:
            assert value_kind(FIELDS[name].type) == kind, name


def test_the_fields_a_budget_step_keeps_from_its_cell_are_row_fields():
    """mixed_precision's step rows copy these from a measured cell: each must be a Row field (documented there)."""
    from quantbench.harness.studies.mixed_precision import STEP_FIELDS

    assert [f for f in STEP_FIELDS if f not in FIELDS] == []


def test_the_changelog_names_each_field_under_the_schema_version_that_added_it():
    import re

    text = (Path(__file__).resolve().parents[2] / "CHANGELOG.md").read_text(encoding="utf-8")
    for version in range(2, SCHEMA_VERSION + 1):
        section = re.search(rf"^### Row schema {version}\b(.*?)(?=^### |\Z)", text, re.M | re.S)
        assert section, f"CHANGELOG.md has no 'Row schema {version}' section"
        missing = [n for n, f in FIELDS.items() if f.doc.since == version and f"`{n}`" not in section.group(1)]
        assert missing == [], f"Row fields added in schema {version} missing from CHANGELOG.md: {missing}"
