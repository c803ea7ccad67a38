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


def _structure_rows() -> list[dict]:
    fp32 = make_row(0, variant="fp32", host="a")
    int8 = make_row(1, variant="int8", precision="int8", host="a")
    int8.update(audit_warning="ran in fp32 here", speedup_interleaved=1.5, timing_valid=False,
                stop_reason="max_time", iterations=7)
    other = make_row(2, variant="fp32", host="b")
    failed = make_row(3, variant="int8", precision="int8", status="failed", host="b")
    skipped = make_row(4, variant="fp16", status="skipped", host="b")
    skipped["error"] = "no fp16 here"
    return [fp32, int8, other, failed, skipped]


def test_markdown_structure(tmp_path):
    """Headings, the counts line, well-formed tables (text columns left-aligned, numbers right-aligned), the
    warning line under a table and the failure table, on a report whose content is counted by hand."""
    path = write_rows(tmp_path / "r.jsonl", _structure_rows())
    report = build_report([path, tmp_path / "missing.jsonl"])
    md = render_markdown(report)
    lines = md.splitlines()
    assert md.endswith("\n") and lines[0] == "# quantbench report" and lines[1] == ""
    assert lines[2] == "3 ok, 1 failed, 1 skipped cells from 1 results file(s)."
    assert lines[4].startswith("**How timing was measured.** ") and "\n" not in lines[4]
    assert any(ln.startswith("> warning: ") and "missing.jsonl" in ln for ln in lines)
    assert "## Verdict" in lines
    devices = sorted(ln for ln in lines if ln.startswith("## m on "))
    assert len(devices) == 2
    header = "| " + " | ".join(c[1] for c in COLUMNS) + " |"
    align = "|" + "|".join("---" if c[0] in ("variant", "settings", "runtime", "ran_as") else "---:"
                           for c in COLUMNS) + "|"
    assert lines.count(header) == 2 and lines.count(align) == 2
    assert lines[lines.index(header) + 1] == align
    assert lines[lines.index(header) - 1] == "" and lines[lines.index(header) - 2].startswith("## m on ")
    first = lines.index(header) + 2
    body = lines[first:lines.index("", first)]
    assert [ln.split(" | ")[0] for ln in body] == ["| fp32", "| int8"]
    assert all(ln.endswith(" |") and ln.count(" | ") == len(COLUMNS) - 1 for ln in body)
    assert "⚠ int8 on ort-cpu (batch 1): ran in fp32 here" in lines
    assert "1. timing not valid: stopped at max_time after 7 iterations" in lines
    cross = lines.index("## m across devices")
    assert lines[cross + 2] == "Compute p50 ms (speedup vs the same device's FP32 on the same runtime and batch)."
    assert lines[cross + 4].startswith("| variant | runtime | batch | ")
    assert lines[cross + 5] == "|---|---|---:|---:|---:|"
    failures = lines.index("## Failed and skipped cells")
    assert lines[failures + 2] == "| status | model | variant | runtime | device | reason |"
    assert lines[failures + 3] == "|---|---|---|---|---|---|"
    assert lines[failures + 4:failures + 6] == ["| failed | m | int8 | ort-cpu | cpu | boom &lt;b&gt;x&lt;/b&gt; |",
                                                "| skipped | m | fp16 | ort-cpu | cpu | no fp16 here |"]


def test_markdown_escapes_line_breaks_in_names(tmp_path):
    row = make_row(0, variant="two\nlines", model="m\nx")
    md = render_markdown(build_report([write_rows(tmp_path / "r.jsonl", [row])]))
    assert "two lines" in md and "## m x on " in md

