"""Resume: a stored row is reused only when every input that changes a number is unchanged.

Each test runs a tiny real sweep (an ONNX model and an npz data set built here, ONNX Runtime CPU),
changes one knob, and runs it again: the changed cell is measured again with the reason logged; an
unchanged rerun measures nothing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from quantbench.harness.config import parse_config
from quantbench.harness.results.store import SCHEMA_VERSION, append_row, read_rows
from quantbench.harness.sweep import runner
from quantbench.harness.sweep.runner import run_sweep

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

pytestmark = pytest.mark.ort_cpu

SIDE = 6
RUN = """
[run]
output = "{out}"
cache_dir = "{cache}"
runtimes = ["ort-cpu"]
batch_sizes = {batches}
eval_samples = 40
warmup_iters = {warmup}
min_iters = {min_iters}
min_time_s = 0.01
max_time_s = 2.0
io_batches = {io_batches}
interleave_rounds = 0
timeout_s = 300
report = false
"""


def tiny_onnx(path: Path, seed: int = 0, side: int = SIDE) -> Path:
    """Flatten + Gemm to 10 classes, random weights from ``seed``, input (N, 1, side, side)."""
    import onnx
    from onnx import TensorProto, helper

    from quantbench.common.onnx_save import with_lowest_ir_version

    w = np.random.default_rng(seed).standard_normal((10, side * side)).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["input"], ["f"]), helper.make_node("Gemm", ["f", "w"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, side, side])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [onnx.numpy_helper.from_array(w, "w")])
    onnx.save(with_lowest_ir_version(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])), path)
    return path


def tiny_npz(path: Path, seed: int = 0, n: int = 60, side: int = SIDE) -> Path:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    np.savez(path, x_train=rng.integers(0, 256, (n, side, side), dtype=np.uint8), y_train=y,
             x_test=rng.integers(0, 256, (n, side, side), dtype=np.uint8), y_test=y)
    return path


class Sweep:
    """A tiny sweep whose knobs the tests turn one at a time."""

    def __init__(self, tmp_path: Path, cache: Path) -> None:
        self.out, self.cache = tmp_path / "out", cache
        self.model, self.data = tiny_onnx(tmp_path / "m.onnx"), tiny_npz(tmp_path / "d.npz")
        self.knobs: dict[str, Any] = {"batches": "[1]", "warmup": 1, "min_iters": 3, "io_batches": 2}

    def run(self, **kw) -> tuple[runner.SweepSummary, list[str]]:
        text = RUN.format(out=self.out, cache=self.cache, **self.knobs)
        text += f'[[models]]\nname = "{self.model}"\ndataset = "npz:{self.data}"\n'
        text += '[[variants]]\nname = "fp32"\nprecision = "fp32"\n'
        logs: list[str] = []
        summary = run_sweep(parse_config(tomllib.loads(text), "test"), self.out, log=logs.append, **kw)
        return summary, logs

    def rows(self, latest: bool = False) -> list[dict[str, Any]]:
        return read_rows(self.out / "results.jsonl", latest_per_cell=latest).rows


@pytest.fixture
def sweep(tmp_path, shared_cache) -> Sweep:
    return Sweep(tmp_path, shared_cache)


@pytest.mark.slow
def test_unchanged_rerun_skips_every_cell(sweep):
    sweep.knobs["batches"] = "[1, 2]"
    first, _ = sweep.run()
    assert first.ran == 2 and first.already == 0
    rows = sweep.rows()
    assert all(r["status"] == "ok" and r["schema_version"] == SCHEMA_VERSION for r in rows)
    assert len({r["cell_id"] for r in rows}) == 2  # the batch is part of the cell's identity...
    assert rows[0]["fingerprint"] == rows[1]["fingerprint"]  # ...and every input behind the numbers is shared
    again, logs = sweep.run()
    assert (again.ran, again.already, again.remeasured) == (0, 2, 0)
    assert not [m for m in logs if "re-measured" in m]
    assert len(sweep.rows()) == 2


def _rewrite_data(s: Sweep) -> None:
    tiny_npz(s.data, seed=1)  # same path and spec, other images


def _rewrite_model(s: Sweep) -> None:
    tiny_onnx(s.model, seed=1)  # same path, other weights


@pytest.mark.parametrize("change, reason", [
    (lambda s: s.knobs.update(min_iters=4), "timing settings changed"),
    (lambda s: s.knobs.update(warmup=2), "timing settings changed"),
    (lambda s: s.knobs.update(io_batches=3), "timing settings changed"),
    (_rewrite_data, "data changed"),
    (_rewrite_model, "model weights/ONNX, variant artifact changed"),
], ids=["min_iters", "warmup", "io_batches", "data-content", "onnx-content"])
@pytest.mark.slow
def test_one_changed_input_remeasures_and_says_why(sweep, change, reason):
    sweep.run()
    before = sweep.rows()
    change(sweep)
    summary, logs = sweep.run()
    assert (summary.ran, summary.already, summary.remeasured) == (1, 0, 1)
    said = [m for m in logs if "re-measured" in m]
    assert said == [f"warning: m/fp32 on ort-cpu (cpu) batch 1: re-measured, {reason}"]
    rows = sweep.rows()
    assert len(rows) == 2 and rows[0] == before[0] and rows[1]["cell_id"] == rows[0]["cell_id"]
    assert rows[1]["fingerprint"] != rows[0]["fingerprint"]
    # and now it is stored under the new inputs: the next rerun skips it
    assert sweep.run()[0].already == 1


@pytest.mark.slow
def test_changed_package_version_is_named(sweep, monkeypatch):
    sweep.run()
    old = sweep.rows()[0]["env"]["versions"]["onnxruntime"]
    env = dict(runner.fingerprint())
    env["versions"] = {**env["versions"], "onnxruntime": "0.0.1"}
    monkeypatch.setattr(runner, "fingerprint", lambda: env)
    summary, logs = sweep.run()
    assert summary.ran == 1
    assert [m for m in logs if "re-measured" in m] == [
        f"warning: m/fp32 on ort-cpu (cpu) batch 1: re-measured, package versions (onnxruntime {old}→0.0.1) changed"]


@pytest.mark.slow
def test_schema1_row_is_measured_again_and_failed_rows_kept_unless_retried(sweep):
    sweep.run()
    row = sweep.rows()[0]
    old = {k: v for k, v in row.items() if k not in ("fingerprint", "fingerprint_parts")}
    old["schema_version"] = 1
    append_row(sweep.out / "results.jsonl", old)  # as an older quantbench would have left it
    summary, logs = sweep.run()
    assert summary.ran == 1 and any("no fingerprint (schema version 1)" in m for m in logs)

    failed = {**sweep.rows(latest=True)[0], "status": "failed", "error": "boom"}
    append_row(sweep.out / "results.jsonl", failed)
    assert sweep.run()[0].already == 1  # same inputs: a failure is not retried by default
    assert sweep.run(retry_failed=True)[0].ran == 1
