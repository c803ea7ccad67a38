"""Bad input: one clear line on stderr, a non-zero exit, no traceback, no lost rows."""
from __future__ import annotations

import os

import pytest

from quantbench.harness.results import read_rows

from .conftest import run_cli, write_config

FP32 = '[[variants]]\nname = "fp32"\nprecision = "fp32"\n'


def _one_line_error(proc, fragment: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert fragment in lines[0], lines[0]


def test_missing_config(tmp_path, shared_cache):
    _one_line_error(run_cli("run", str(tmp_path / "nope.toml"), cache=shared_cache), "config file not found")


def test_bad_key_suggests_the_closest(tmp_path, shared_cache):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[run]\nbatch_size = [1]\n[[models]]\nname = "fashion_cnn"\n' + FP32)
    _one_line_error(run_cli("run", str(cfg), cache=shared_cache), "did you mean 'batch_sizes'")


def test_unknown_runtime(tmp_path, shared_cache):
    _one_line_error(run_cli("run", "--runtimes", "ort-cpo", "-o", str(tmp_path), cache=shared_cache),
                    "did you mean 'ort-cpu'")


def test_unknown_model(tmp_path, shared_cache):
    _one_line_error(run_cli("run", "--models", "resnet5O", "-o", str(tmp_path), cache=shared_cache), "resnet5")


def test_unwritable_output(tmp_path, shared_cache):
    if os.geteuid() == 0:
        target = "/proc/quantbench-out"  # even root cannot create directories in /proc
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        target = str(ro / "out")
    _one_line_error(run_cli("run", "-o", target, cache=shared_cache), "not writable")


@pytest.mark.ort_cpu
def test_corrupt_onnx_fails_its_cells_and_keeps_earlier_rows(tmp_path, shared_cache):
    out = tmp_path / "out"
    good = write_config(tmp_path / "good.toml", out, FP32, eval_samples=100)
    assert run_cli("run", str(good), cache=shared_cache).returncode == 0
    corrupt = tmp_path / "broken.onnx"
    corrupt.write_bytes(b"\x08\x07this is not a protobuf model" * 10)
    bad = write_config(tmp_path / "bad.toml", out, FP32, eval_samples=100,
                       models=f'[[models]]\nname = "{corrupt}"\n')
    proc = run_cli("run", str(bad), cache=shared_cache)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout + proc.stderr
    rows = read_rows(out / "results.jsonl").rows
    assert [r["status"] for r in rows] == ["ok", "failed"]
    assert "broken.onnx" in rows[1]["error"] and "\n" not in rows[1]["error"]


@pytest.mark.ort_cpu
def test_model_input_that_does_not_match_the_data(tmp_path, shared_cache):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [10, 3 * 32 * 32], np.zeros(10 * 3 * 32 * 32, np.float32))
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["f"]), helper.make_node("Gemm", ["f", "w"], ["logits"], transB=1)],
        "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], [w])
    path = tmp_path / "cifar_shaped.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    cfg = write_config(tmp_path / "c.toml", tmp_path / "out", FP32, eval_samples=100,
                       models=f'[[models]]\nname = "{path}"\npreprocess = {{ channels = 1 }}\n')
    proc = run_cli("run", str(cfg), cache=shared_cache)
    assert proc.returncode != 0
    row = read_rows(tmp_path / "out" / "results.jsonl").rows[0]
    assert row["status"] == "failed" and "after preprocessing" in row["error"]


@pytest.mark.ort_cpu
def test_a_hanging_cell_times_out_and_the_sweep_goes_on(tmp_path, shared_cache):
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.toml", out, FP32, batches="[1, 2]", eval_samples=50)
    cfg.write_text(cfg.read_text().replace("report = false", "report = false\ntimeout_s = 0.05"))
    proc = run_cli("run", str(cfg), cache=shared_cache)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    rows = read_rows(out / "results.jsonl").rows
    assert len(rows) == 2 and all(r["status"] == "failed" and "timed out" in r["error"] for r in rows)
    retry = run_cli("run", str(cfg).replace("c.toml", "c.toml"), "--retry-failed", cache=shared_cache)
    assert retry.returncode == 1  # still too short, but retried: the latest row per cell is kept
    assert len(read_rows(out / "results.jsonl", latest_per_cell=False).rows) == 4
