"""Bad input: one clear line on stderr, a non-zero exit, no traceback, no lost rows."""
from __future__ import annotations

import os

import pytest

from quantbench.harness.results.store import read_rows
from tests.harness.conftest import run_cli, write_config

FP32 = '[[variants]]\nname = "fp32"\nprecision = "fp32"\n'


def _one_line_error(proc, fragment: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def measured_output(tmp_path_factory, shared_cache):
    """An output folder holding rows of a real sweep, which bad runs into it must leave untouched."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("needs ONNX Runtime for the earlier rows")
    root = tmp_path_factory.mktemp("bad-input")
    out = root / "out"
    good = write_config(root / "good.toml", out, FP32, eval_samples=100)
    proc = run_cli("run", str(good), cache=shared_cache)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


# (what goes into the config, extra CLI arguments, a fragment the one error line must contain)
BAD_INPUT = [
    pytest.param({"variants": '[[variants]]\nname = "q"\nper_channel = "false"\n'}, [],
                 "variant 'q': per_channel must be true or false, not \"false\"", id="per_channel-string"),
    pytest.param({"variants": '[[variants]]\nname = "q"\nop_types = "Conv"\n'}, [],
                 "variant 'q': op_types must be a list of strings", id="op_types-string"),
    pytest.param({"variants": '[[variants]]\nname = "q"\ncalibration = "minmx"\n'}, [],
                 "did you mean 'minmax'", id="calibration-typo"),
    pytest.param({"model": "eval_samples = -10"}, [], "eval_samples must be an integer >= 1, not -10",
                 id="model-eval_samples-negative"),
    pytest.param({"model": "eval_samples = 200.5"}, [], "eval_samples must be an integer, not 200.5",
                 id="model-eval_samples-float"),
    pytest.param({"model": 'input_shape = "1,28,28"'}, [], "input_shape must be a list of integers",
                 id="input_shape-string"),
    pytest.param({"model": "input_shape = [1, 28]"}, [], "input_shape must be [channels, height, width]",
                 id="input_shape-2d"),
    pytest.param({"model": "preprocess = { chanels = 1 }"}, [], "unknown key 'chanels' in the preprocess table",
                 id="preprocess-unknown-key"),
    pytest.param({"model": "preprocess = { channels = 2 }"}, [], "preprocess.channels must be 1 or 3",
                 id="preprocess-channels"),
    pytest.param({"run": "threads = -3"}, [], "run.threads must be an integer >= 0, not -3", id="threads-negative"),
    pytest.param({"run": "interleave_rounds = -2"}, [], "run.interleave_rounds must be an integer >= 0",
                 id="interleave_rounds-negative"),
    pytest.param({"run": "devices = []"}, [], "run.devices is empty", id="devices-empty"),
    pytest.param({"run": 'min_time_s = "1"'}, [], "run.min_time_s must be a finite number", id="min_time-string"),
    pytest.param({"run": "max_time_s = 0.01"}, [], "run.max_time_s (0.01) is below run.min_time_s (0.05)",
                 id="max_time-below-min_time"),
    pytest.param({"run": "report = 1"}, [], "run.report must be true or false", id="report-int"),
    pytest.param({"batches": "[1, 1]"}, [], "run.batch_sizes lists 1 twice", id="batch-duplicate"),
    pytest.param({"batches": "[0]"}, [], "run.batch_sizes must be a list of integers >= 1", id="batch-zero"),
    pytest.param({"batches": "[2.5]"}, [], "run.batch_sizes must be a list of integers", id="batch-float"),
    pytest.param({"run": "batch_size = [1]"}, [], "unknown key 'batch_size' in [run]; did you mean 'batch_sizes'?",
                 id="run-key-typo-keeps-brackets"),
    pytest.param({"options": "[runtime_options.ort-cpu]\nthread = 2\n"}, [],
                 "unknown option 'thread' in [runtime_options.ort-cpu]; did you mean 'threads'?",
                 id="option-typo-keeps-brackets"),
    pytest.param({"options": "[runtime_options.ort-cpu]\nthreads = -1\n"}, [],
                 "[runtime_options.ort-cpu] threads must be an integer >= 0", id="option-threads-negative"),
    pytest.param({"options": "[runtime_options.openvino]\nprecision = []\n"}, [],
                 "[runtime_options.openvino] precision is an empty list", id="option-empty-sweep"),
    pytest.param({}, ["--min-time", "nan"], "--min-time: run.min_time_s must be a finite number, not nan",
                 id="cli-min-time-nan"),
    pytest.param({}, ["--min-time", "inf"], "--min-time: run.min_time_s must be a finite number, not inf",
                 id="cli-min-time-inf"),
    pytest.param({}, ["--min-time", "-1"], "--min-time: run.min_time_s must be a number >= 0",
                 id="cli-min-time-negative"),
    pytest.param({}, ["--threads", "-3"], "--threads: run.threads must be an integer >= 0", id="cli-threads-negative"),
    pytest.param({}, ["--eval-samples", "0"], "--eval-samples: run.eval_samples must be an integer >= 1",
                 id="cli-eval-samples-zero"),
    pytest.param({}, ["--eval-samples", "ten"], "argument --eval-samples: invalid int value: 'ten'",
                 id="cli-eval-samples-not-int"),
    pytest.param({}, ["--weights", "/nonexistent/weights.pt"], "--weights: model 'fashion_cnn': weights file not found",
                 id="cli-weights-missing"),
    pytest.param({}, ["--device", ","], "--device: run.devices is empty", id="cli-devices-empty"),
    pytest.param({}, ["--batch-sizes", "8,8"], "--batch-sizes: run.batch_sizes lists 8 twice",
                 id="cli-batch-duplicate"),
    pytest.param({}, ["--runtimes", "ort-cpo"], "did you mean 'ort-cpu'", id="cli-runtime-typo"),
]


@pytest.mark.ort_cpu
@pytest.mark.parametrize("change, args, fragment", BAD_INPUT)
@pytest.mark.slow
def test_bad_input_is_one_line_before_anything_runs(change, args, fragment, measured_output, tmp_path, shared_cache):
    results = measured_output / "results.jsonl"
    before = results.read_bytes()
    cfg = write_config(tmp_path / "bad.toml", measured_output,
                       change.get("variants", FP32), batches=change.get("batches", "[1]"), eval_samples=100,
                       models='[[models]]\nname = "fashion_cnn"\n' + change.get("model", "") + "\n")
    lines = cfg.read_text().splitlines()
    if change.get("run"):  # replace the [run] key if the fast config sets it, else add it
        key = change["run"].split("=")[0].strip()
        lines = [ln for ln in lines if ln.split("=")[0].strip() != key]
        lines.insert(lines.index("[run]") + 1, change["run"])
    cfg.write_text("\n".join(lines) + "\n" + change.get("options", ""))
    proc = run_cli("run", str(cfg), *args, cache=shared_cache)
    _one_line_error(proc, fragment)
    assert results.read_bytes() == before


def test_missing_config(tmp_path, shared_cache):
    _one_line_error(run_cli("run", str(tmp_path / "nope.toml"), cache=shared_cache), "config file not found")


def test_bad_key_suggests_the_closest(tmp_path, shared_cache):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[run]\nbatch_size = [1]\n[[models]]\nname = "fashion_cnn"\n' + FP32)
    _one_line_error(run_cli("run", str(cfg), cache=shared_cache), "did you mean 'batch_sizes'")


@pytest.mark.slow
def test_unknown_runtime(tmp_path, shared_cache):
    _one_line_error(run_cli("run", "--runtimes", "ort-cpo", "-o", str(tmp_path), cache=shared_cache),
                    "did you mean 'ort-cpu'")


@pytest.mark.slow
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
@pytest.mark.slow
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
@pytest.mark.slow
def test_model_input_that_does_not_match_the_data(tmp_path, shared_cache):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from quantbench.common.onnx_save import with_lowest_ir_version

    w = helper.make_tensor("w", TensorProto.FLOAT, [10, 3 * 32 * 32], np.zeros(10 * 3 * 32 * 32, np.float32))
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["f"]), helper.make_node("Gemm", ["f", "w"], ["logits"], transB=1)],
        "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], [w])
    path = tmp_path / "cifar_shaped.onnx"
    onnx.save(with_lowest_ir_version(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])), path)
    cfg = write_config(tmp_path / "c.toml", tmp_path / "out", FP32, eval_samples=100,
                       # mean/std for one channel: the table is merged over the model's 3-channel defaults
                       models=f'[[models]]\nname = "{path}"\npreprocess = {{ channels = 1, mean = 0.5, std = 0.5 }}\n')
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
