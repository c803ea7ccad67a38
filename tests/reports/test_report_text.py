"""The Markdown report with hostile text in every field a results file can carry, and the size units.

Rows are renderer test data (made-up numbers, see conftest.make_row); the sizes come from files of
known size on disk. The project's unit decision: kB = 1000 bytes and MB = 1e6 bytes everywhere.
"""
from __future__ import annotations

import re

import pytest
from quantbench.exporters.artifacts import artifact_size
from quantbench.reports import build_report, render_markdown
from quantbench.reports.tables import COLUMNS

from ..onnx_sizes import onnx_of_size
from .conftest import make_row, write_rows

pytestmark = pytest.mark.report

HOSTILE = '<img src=x onerror=alert(1)>|<b>x</b>'


def _hostile_rows() -> list[dict]:
    rows = []
    for i, host in enumerate(["a", "b"]):  # two devices: the cross-device table is rendered too
        fp32 = make_row(10 * i, model=HOSTILE, variant="fp32", host=host)
        fp32.update(runtime_label="rt<" + HOSTILE, device="cpu<script>", accuracy_note="")
        int8 = make_row(10 * i + 1, model=HOSTILE, variant="v" + HOSTILE, precision="int8", host=host)
        int8.update(runtime_label="rt<" + HOSTILE, device="cpu<script>", exec_precision="int8<x>",
                    int8_op_share=0.5, audit_warning="warn " + HOSTILE, top1=None,
                    accuracy_note="note " + HOSTILE, speedup_error="speedup " + HOSTILE,
                    timing_valid=False, stop_reason="max_time<y>", iterations=3)
        failed = make_row(10 * i + 2, model=HOSTILE, variant="f" + HOSTILE, status="failed", host=host)
        failed["error"] = "error " + HOSTILE
        rows += [fp32, int8, failed]
    return rows


def test_markdown_escapes_angle_brackets_and_pipes_everywhere(tmp_path):
    md = render_markdown(build_report([write_rows(tmp_path / "r.jsonl", _hostile_rows())]))
    assert "<" not in md and ">" not in md, [ln for ln in md.splitlines() if "<" in ln or ">" in ln][:3]
    # the hostile text is still there, as text
    assert "&lt;img src=x onerror=alert(1)&gt;\\|&lt;b&gt;x&lt;/b&gt;" in md
    for where in ("warn ", "note ", "speedup ", "error "):
        assert where + "&lt;img" in md, where
    assert "max_time&lt;y&gt;" in md  # the invalid-timing footnote
    # every table line has as many cells as its header: no name's "|" opened a column
    widths = {}
    for block in md.split("\n\n"):
        lines = [ln for ln in block.splitlines() if ln.startswith("|")]
        if not lines:
            continue
        cells = {len(re.split(r"(?<!\\)\|", ln)) for ln in lines}
        assert len(cells) == 1, lines
        widths[lines[0][:40]] = cells.pop()
    assert len(widths) >= 3  # per-device tables, the cross-device table, the failed cells




@pytest.mark.parametrize(("n_bytes", "shown"), [(2_500_000, "2.500"), (1_048_576, "1.049"), (999, "0.001")])
def test_report_size_column_is_megabytes_of_1e6_bytes(tmp_path, n_bytes, shown):
    size = artifact_size(onnx_of_size(tmp_path / "model.onnx", n_bytes))
    assert size == n_bytes
    row = make_row(0, variant="fp32")
    row["size_bytes"] = size
    md = render_markdown(build_report([write_rows(tmp_path / "r.jsonl", [row])]))
    header = next(ln for ln in md.splitlines() if ln.startswith("| variant |"))
    line = next(ln for ln in md.splitlines() if ln.startswith("| fp32 |"))
    names = [c.strip() for c in header.strip("|").split("|")]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert names[[c[0] for c in COLUMNS].index("size_mb")] == "size MB"
    assert cells[names.index("size MB")] == shown
