"""Every cell of the console table for two hand-made rows (an FP32 reference and an INT8 variant): the
numbers a reader compares, worked out by hand, and the alignment of text (left) and numbers (right)."""
from __future__ import annotations

from tests.reports.test_table import HEAD, _row, _table

TITLE = ("quantbench results (compute latency per batch; speedup vs the same runtime's FP32, timed alternately "
         "with it in one process)")


def _rows():
    fp32 = _row("fp32", "fp32", compute_p50_ms=2.0, compute_p99_ms=2.5, top1=0.9, agreement_top1=1.0,
                size_bytes=882_000, io_p50_ms=0.125, cell_id="a")
    int8 = _row("int8", compute_p50_ms=1.25, compute_p99_ms=1.5, top1=0.8875, agreement_top1=0.975,
                size_bytes=233_500, speedup_interleaved=1.6, exec_precision="int8", int8_op_share=0.75,
                audit_warning="a conv ran in fp32", identical_to="int8-b", cell_id="b")
    return fp32, int8


def _raw_cells(text: str) -> dict[str, list[str]]:
    rows = [ln.split("│")[1:-1] for ln in text.splitlines() if ln.startswith("│")]
    return {r[1].strip().split(" ")[0]: r for r in rows}


def test_every_cell_of_a_reference_and_a_variant():
    text = _table(list(_rows()))
    assert TITLE in text
    header = next(ln for ln in text.splitlines() if ln.startswith("┃"))
    assert [c.strip() for c in header.split("┃")[1:-1]] == HEAD
    cells = {k: [c.strip() for c in v] for k, v in _raw_cells(text).items()}
    assert cells["fp32"] == ["m", "fp32", "ort-cpu", "cpu", "8", "90.00%", "ref", "100.0%", "2.000", "2.500", "0.125",
                             "n/a", "882", "ref", "fp32"]
    # Δ = (0.8875 - 0.9) x 100 = -1.25 points; size 233 500 bytes = 234 kB (1000 bytes); ran as with its int8 share
    assert cells["int8"] == ["m", "int8 (= int8-b)", "ort-cpu", "cpu", "8", "88.75%", "−1.25", "97.5%", "1.250",
                             "1.500", "0.100", "n/a", "234", "1.60×", "int8 (75% int8) ⚠"]


def test_text_is_left_aligned_and_numbers_right_aligned():
    raw = _raw_cells(_table(list(_rows())))["int8"]
    for i, name in enumerate(HEAD):
        cell = raw[i][1:-1]  # rich pads each cell with one space on both sides
        if cell.strip() == cell:
            continue  # fills its column: alignment not visible
        left = name in ("model", "variant", "runtime", "dev", "ran as")
        assert (cell == cell.rstrip() if not left else cell == cell.lstrip()), (name, cell)


def test_a_row_without_fp32_reference_has_no_delta_and_no_ref():
    _, int8 = _rows()
    cells = {k: [c.strip() for c in v] for k, v in _raw_cells(_table([int8])).items()}
    assert cells["int8"][HEAD.index("Δ pts")] == "—" and cells["int8"][HEAD.index("speedup")] == "1.60×"
