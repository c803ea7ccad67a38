"""The console table of ``quantbench run``: one speedup estimator, n/a host copies, flagged timing, notes."""
from __future__ import annotations

from rich.console import Console

from quantbench.reports.console import (
    NA,
    render_console,
    summary_rows,
    timing_flag,
    transfer_ms,
)


def _row(variant: str, precision: str = "int8", **over) -> dict:
    """A made-up row for rendering only (numbers are not measurements)."""
    row = {"schema_version": 2, "status": "ok", "model": "m", "variant": variant, "precision": precision,
           "runtime": "ort-cpu", "runtime_label": "ort-cpu", "device": "cpu", "batch": 8, "top1": 0.9,
           "agreement_top1": 1.0, "compute_p50_ms": 1.0, "compute_p99_ms": None, "io_p50_ms": 0.1,
           "h2d_p50_ms": None, "d2h_p50_ms": None, "host_memory": True, "size_bytes": 4096,
           "speedup_interleaved": None, "speedup_error": "", "timing_valid": True,
           "stop_reason": "min_iters_and_time", "iterations": 100, "exec_precision": precision,
           "variant_settings": {}, "audit_warning": "", "identical_to": "", "accuracy_note": ""}
    row.update(over)
    return row


def _table(rows: list[dict]) -> str:
    console = Console(record=True, width=260, color_system=None)
    render_console(rows, console)
    return console.export_text()


def _cells(text: str) -> dict[str, list[str]]:
    """Table body cells by variant name."""
    rows = [[c.strip() for c in ln.split("│")[1:-1]] for ln in text.splitlines() if ln.startswith("│")]
    return {r[1]: r for r in rows}


HEAD = ["model", "variant", "runtime", "dev", "batch", "top-1", "Δ pts", "agree", "p50 ms", "p99 ms", "I/O p50 ms",
        "h2d / d2h p50 ms", "size kB", "speedup", "ran as"]


def test_speedup_is_only_the_interleaved_estimate():
    rows = [_row("fp32", "fp32", compute_p50_ms=2.0),
            _row("int8-a", compute_p50_ms=1.0, speedup_interleaved=1.6),  # medians alone would say 2.0
            _row("int8-b", compute_p50_ms=0.5, speedup_error="interleaved FP32 timing failed: out of memory")]
    by = {s["variant"]: s for s in summary_rows(rows)}
    assert by["fp32"]["speedup"] == 1.0 and by["int8-a"]["speedup"] == 1.6 and by["int8-b"]["speedup"] is None
    text = _table(rows)
    speedup = {name: cells[HEAD.index("speedup")] for name, cells in _cells(text).items()}
    assert speedup == {"fp32": "ref", "int8-a": "1.60×", "int8-b": "— [1]"}
    assert "[1] interleaved FP32 timing failed: out of memory" in text


def test_host_copies_are_na_and_missing_percentiles_a_dash():
    host = _row("cpu-row")
    gpu = _row("gpu-row", device="cuda:0", host_memory=False, h2d_p50_ms=0.25, d2h_p50_ms=0.125)
    gpu_unmeasured = _row("gpu-none", device="cuda:0", host_memory=False)
    v1_cpu = _row("v1-row", schema_version=1, host_memory=None, h2d_p50_ms=0.0, d2h_p50_ms=0.0)
    assert transfer_ms(host, "h2d") == NA and transfer_ms(v1_cpu, "d2h") == NA
    assert transfer_ms(gpu, "h2d") == 0.25 and transfer_ms(gpu_unmeasured, "h2d") is None
    cells = _cells(_table([host, gpu, gpu_unmeasured, v1_cpu]))
    copies, p99 = HEAD.index("h2d / d2h p50 ms"), HEAD.index("p99 ms")
    assert cells["cpu-row"][copies] == "n/a" and cells["v1-row"][copies] == "n/a"  # v1 timed a no-op on the CPU
    assert cells["gpu-row"][copies] == "0.250 / 0.125" and cells["gpu-none"][copies] == "— / —"
    assert cells["cpu-row"][p99] == "—"  # p99 of too few samples


def test_invalid_timing_and_missing_top1_are_flagged_with_why():
    short = _row("short", iterations=7, timing_valid=False, stop_reason="max_time",
                 measure_settings={"min_iters": 100}, top1=None, accuracy_note="no labels for this dataset")
    assert timing_flag(short) == "timing not valid: stopped at max_time after 7 of 100 iterations"
    assert timing_flag(_row("ok")) == "" and timing_flag(_row("v1", timing_valid=None)) == ""
    text = _table([short])
    cells = _cells(text)["short"]
    assert cells[HEAD.index("top-1")] == "— [1]" and cells[HEAD.index("p50 ms")] == "1.000 ⚠ [2]"
    assert "[1] no labels for this dataset" in text
    assert "[2] timing not valid: stopped at max_time after 7 of 100 iterations" in text


def test_names_are_shown_as_text_not_markup():
    text = _table([_row("[bold]x[/bold]", model="[red]m[/red]")])
    assert "[bold]x[/bold]" in text and "[red]m[/red]" in text


def test_long_swept_names_wrap_and_are_never_cut():
    """Swept variants differ only at the end of their names: a narrow terminal wraps them whole."""
    names = [f"int8[calibration=percentile,calib_samples={n},per_channel=true]" for n in (64, 128)]
    model = "digit_recognizer.module_with_a_long_name"
    rows = [_row(n, model=model, runtime_label="openvino[precision=f32,hint=latency]") for n in names]
    console = Console(record=True, width=100, color_system=None)
    render_console(rows, console)
    text = console.export_text()
    assert "…" not in text
    body = [[c.strip() for c in ln.split("│")[1:-1]] for ln in text.splitlines() if ln.startswith("│")]
    column = {h: "".join(r[i] for r in body) for i, h in enumerate(HEAD)}
    assert column["variant"] == "".join(sorted(names))  # each name complete, in order
    assert column["model"] == model * 2 and column["runtime"] == "openvino[precision=f32,hint=latency]" * 2
