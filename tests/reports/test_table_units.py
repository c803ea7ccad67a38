"""The console table's size column against ONNX files of known size: kB = 1000 bytes (the project's unit
everywhere; the report's "size MB" is 1e6 bytes)."""
from __future__ import annotations

import pytest
from rich.console import Console

from quantbench.exporters.artifacts import artifact_size
from quantbench.reports.console import render_console
from tests.reports.test_table import HEAD, _cells, _row

from ..onnx_sizes import onnx_of_size


@pytest.mark.parametrize(("n_bytes", "shown"), [(2_500_000, "2500"), (1_048_576, "1049"), (1_499, "1")])
def test_console_size_is_kilobytes_of_1000_bytes(tmp_path, n_bytes, shown):
    size = artifact_size(onnx_of_size(tmp_path / "m.onnx", n_bytes))
    assert size == n_bytes
    row = _row("int8", size_bytes=size)
    console = Console(record=True, width=260, color_system=None)
    render_console([row], console)
    assert _cells(console.export_text())["int8"][HEAD.index("size kB")] == shown
