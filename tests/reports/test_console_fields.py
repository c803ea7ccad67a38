"""The console table's field rules on hand-made rows: where a host↔device copy exists and where it reads n/a
(schema 1 and 2 rows, CPU and GPU devices), a fleet row's device, why a value is missing, and the timing
notes' texts."""
from __future__ import annotations

from rich.console import Console

from quantbench.reports.console import (
    NA,
    NOISY_NOTE,
    missing_note,
    render_console,
    speedup_of,
    summary_rows,
    timing_flag,
    transfer_ms,
)
from tests.reports.test_table import _row


def test_copies_exist_off_the_host_and_where_a_row_says_so():
    # schema 2 says it: host_memory True -> no copy, whatever the device; False -> the measured value
    assert transfer_ms(_row("a", device="cuda:0", host_memory=True, h2d_p50_ms=0.5), "h2d") == NA
    assert transfer_ms(_row("a", device="cpu", host_memory=False, h2d_p50_ms=0.5), "h2d") == 0.5
    # rows that do not say: a GPU copy is a copy; on the CPU schema 1 timed a no-op (0.0): n/a
    old_gpu = _row("a", device="cuda:0", host_memory=None, schema_version=1, h2d_p50_ms=0.25)
    assert transfer_ms(old_gpu, "h2d") == 0.25
    assert transfer_ms(_row("a", device="cpu", host_memory=None, schema_version=1, d2h_p50_ms=0.0), "d2h") == NA
    assert transfer_ms(_row("a", device="CPU:0", host_memory=None, schema_version=1, d2h_p50_ms=0.0), "d2h") == NA
    no_version = _row("a", device="cpu", host_memory=None, d2h_p50_ms=0.0)
    del no_version["schema_version"]
    assert transfer_ms(no_version, "d2h") == NA
    # a schema-2 CPU row without host_memory that measured a copy shows it; one that did not: n/a
    assert transfer_ms(_row("a", device="cpu", host_memory=None, schema_version=2, h2d_p50_ms=0.125), "h2d") == 0.125
    assert transfer_ms(_row("a", device="cpu", host_memory=None, schema_version=2, h2d_p50_ms=None), "h2d") == NA
    assert transfer_ms(_row("a", device="cuda:0", host_memory=False, h2d_p50_ms=None), "h2d") is None
    assert transfer_ms(_row("a", device="cuda:0", host_memory=False, h2d_p99_ms=0.75), "h2d", "p99") == 0.75


def _text(rows: list[dict]) -> str:
    console = Console(record=True, width=260, color_system=None)
    render_console(rows, console)
    return console.export_text()


def test_copy_cells_show_each_direction():
    gpu = _row("gpu", device="cuda:0", host_memory=False, h2d_p50_ms=0.5, d2h_p50_ms=None)
    line = next(ln for ln in _text([gpu]).splitlines() if "│ gpu " in ln)
    assert line.split("│")[12].strip() == "0.500 / —"
    half = _row("half", device="cpu", host_memory=None, schema_version=2, h2d_p50_ms=0.125, d2h_p50_ms=None)
    line = next(ln for ln in _text([half]).splitlines() if "│ half " in ln)
    assert line.split("│")[12].strip() == "0.125 / n/a"
    host = _row("host", device="cuda:0", host_memory=True)
    line = next(ln for ln in _text([host]).splitlines() if "│ host " in ln)
    assert line.split("│")[12].strip() == "n/a"  # one n/a for both directions, not "n/a / n/a"


def test_a_fleet_row_names_its_target_beside_the_device():
    fleet = _row("f", device="cuda:0", fleet={"target": "gpu-H100"})
    plain = _row("p", device="cuda:1", cell_id="p")
    by = {s["variant"]: s for s in summary_rows([fleet, plain])}
    assert by["f"]["device"] == "cuda:0 @ gpu-H100" and by["p"]["device"] == "cuda:1"
    assert by["p"]["runtime"] == "ort-cpu"
    nolabel = _row("n", runtime_label=None, runtime="openvino")
    assert summary_rows([nolabel])[0]["runtime"] == "openvino"


def test_missing_notes_say_why_and_nothing_otherwise():
    no_speedup = _row("a", speedup_interleaved=None, speedup_error="FP32 failed")
    assert missing_note(no_speedup, "speedup") == "FP32 failed"
    assert missing_note(_row("a", speedup_interleaved=None, speedup_error=None), "speedup") == ""
    assert missing_note(_row("a", speedup_interleaved=1.5, speedup_error="stale"), "speedup") == ""
    assert missing_note(_row("a", top1=None, accuracy_note="no labels"), "top1") == "no labels"
    assert missing_note(_row("a", top1=None, accuracy_note=None), "top1") == ""
    assert missing_note(_row("a", top1=0.5, accuracy_note="stale"), "top1") == ""
    assert missing_note(_row("a", top1=None, accuracy_note="no labels"), "p50") == ""


def test_a_speedup_is_a_number_not_a_flag():
    assert speedup_of(_row("a", speedup_interleaved=True)) is None
    assert speedup_of(_row("a", speedup_interleaved="1.5")) is None
    assert speedup_of(_row("a", speedup_interleaved=2)) == 2
    assert speedup_of(_row("a", speedup_interleaved=None), is_reference=True) == 1.0


def test_timing_notes_say_what_went_wrong():
    assert timing_flag(_row("a", timing_valid=False, stop_reason=None, iterations=None)) == \
        "timing not valid: stopped at an unknown limit"
    assert timing_flag(_row("a", timing_valid=False, stop_reason="max_time", iterations=7)) == \
        "timing not valid: stopped at max_time after 7 iterations"
    stolen = _row("a", timing_noisy=True, timing_noisy_reason="the hypervisor stole 20% of the CPU")
    assert timing_flag(stolen) == NOISY_NOTE
    both = _row("a", timing_valid=False, stop_reason="max_time", iterations=None, timing_noisy=True,
                timing_noisy_reason="")
    assert timing_flag(both) == "timing not valid: stopped at max_time; " + NOISY_NOTE


def test_rows_after_a_failed_one_are_listed_and_unmeasured_sizes_are_blank():
    failed = _row("bad", status="failed", cell_id="bad")
    ok = _row("ok", size_bytes=None, cell_id="ok")
    assert [s["variant"] for s in summary_rows([failed, ok])] == ["ok"]
    assert summary_rows([ok])[0]["size_kb"] is None


def test_cells_carry_both_copies_the_top1_interval_and_the_older_generation_mark():
    gpu = _row("gpu", device="cuda:0", host_memory=False, h2d_p50_ms=0.5, d2h_p50_ms=0.25, top1_ci95=[0.89, 0.91],
               cell_id="new")
    old = _row("old", cell_id="old")
    text = _text_older([gpu, old], older=[old])
    line = next(ln for ln in text.splitlines() if "│ gpu " in ln)
    assert line.split("│")[12].strip() == "0.500 / 0.250"
    assert "90.00% ±1.0" in line  # half of [89, 91] points
    assert "old (older generation)" in text and "gpu (older generation)" not in text


def _text_older(rows: list[dict], older: list[dict]) -> str:
    console = Console(record=True, width=260, color_system=None)
    render_console(rows, console, older=older)
    return console.export_text()
