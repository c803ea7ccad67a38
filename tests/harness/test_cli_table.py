"""The table at the end of ``quantbench run`` reads the results file as the report does: a hand-edited field of the
wrong type in a stored row is shown as missing with a warning, never a crash after the sweep."""
from __future__ import annotations

import json

import pytest

from tests.harness.conftest import run_cli, write_config

FP32 = '[[variants]]\nname = "fp32"\nprecision = "fp32"\n'


@pytest.mark.slow
def test_a_mistyped_stored_row_does_not_break_the_table(tmp_path, shared_cache):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.toml", out, FP32, eval_samples=100)
    assert run_cli("run", str(cfg), cache=shared_cache).returncode == 0
    path = out / "results.jsonl"
    (row,) = [json.loads(line) for line in path.read_text().splitlines()]
    # a row of another cell of the same generation, edited by hand: its top-1 is text
    edited = {**row, "cell_id": row["cell_id"] + "-edited", "variant": "edited", "precision": "int8", "top1": "high"}
    path.write_text(path.read_text() + json.dumps(edited) + "\n")
    proc = run_cli("run", str(cfg), cache=shared_cache)  # nothing left to measure: the table only
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "edited" in proc.stdout and "internal error" not in proc.stderr + proc.stdout
    assert f"{path}: field(s) of the wrong type shown as missing: top1" in proc.stdout + proc.stderr
    assert json.loads(path.read_text().splitlines()[-1])["top1"] == "high"  # the file is left as it is
