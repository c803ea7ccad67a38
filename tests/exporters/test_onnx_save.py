"""Every ONNX file quantbench writes carries the lowest IR version its opsets allow (issue 18, item 1).

onnx 1.23 stamps IR 14 on whatever it saves; onnxruntime-gpu 1.26-1.31 refuse anything above IR 13, so a
file that uses nothing of IR 14 must not claim it: IR 8 for opset 17, IR 10 for opset 21.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.helper import OP_SET_ID_VERSION_MAP

from quantbench.common.onnx_save import lower_ir_version, lowest_ir_version, save_model, with_lowest_ir_version

TESTS = Path(__file__).resolve().parents[1]


def _graph(op: str = "Relu", domain: str = "") -> onnx.GraphProto:
    return helper.make_graph([helper.make_node(op, ["x"], ["y"], domain=domain)], "g",
                             [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])


def _expected(model: onnx.ModelProto) -> int:
    """The lowest IR for the model's default-domain opset, straight from onnx's release table."""
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return OP_SET_ID_VERSION_MAP[("ai.onnx", opset)]


@pytest.mark.parametrize("opset, ir", [(13, 7), (17, 8), (19, 9), (21, 10)])
def test_lowest_ir_follows_the_opset_not_the_installed_onnx(opset, ir, tmp_path):
    model = helper.make_model(_graph(), opset_imports=[helper.make_opsetid("", opset)])
    assert model.ir_version == onnx.IR_VERSION  # what onnx would have written
    assert lowest_ir_version(model) == ir
    saved = onnx.load(str(save_model(model, tmp_path / "m.onnx")))
    assert saved.ir_version == ir
    onnx.checker.check_model(saved)


def test_unused_and_custom_domains_do_not_raise_it_and_unknown_opsets_keep_it():
    # ORT's quant_pre_process imports ai.onnx.ml 5 (IR 10) and com.microsoft without using them
    model = helper.make_model(_graph(), opset_imports=[helper.make_opsetid("", 17),
                                                       helper.make_opsetid("ai.onnx.ml", 5),
                                                       helper.make_opsetid("com.microsoft", 1)])
    assert lowest_ir_version(model) == 8
    used_ml = helper.make_model(_graph("Normalizer", "ai.onnx.ml"),
                                opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 5)])
    assert lowest_ir_version(used_ml) == OP_SET_ID_VERSION_MAP[("ai.onnx.ml", 5)]
    future = helper.make_model(_graph(), opset_imports=[helper.make_opsetid("", 999)])
    future.ir_version = 42
    assert lowest_ir_version(future) == 42  # cannot know what opset 999 needs: left alone


def test_lower_ir_version_rewrites_only_the_header(tmp_path):
    rng = np.random.default_rng(0)
    w = onnx.numpy_helper.from_array(rng.standard_normal((256, 256)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])], [w])
    path = tmp_path / "ext.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path),
              save_as_external_data=True, location="ext.bin", size_threshold=0)
    data = (tmp_path / "ext.bin").read_bytes()
    assert onnx.load(str(path), load_external_data=False).ir_version == onnx.IR_VERSION
    assert lower_ir_version(path) == 8
    assert onnx.load(str(path), load_external_data=False).ir_version == 8
    assert (tmp_path / "ext.bin").read_bytes() == data
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(onnx.load(str(path)).graph.initializer[0]),
                                  onnx.numpy_helper.to_array(w))


# ---- every artifact of a real (small) sweep ----------------------------------------------------------------
SWEEP = """
[run]
runtimes = ["ort-cpu"]
batch_sizes = [1]
eval_samples = 64
min_iters = 3
min_time_s = 0.01
warmup_iters = 1
interleave_rounds = 0

[[models]]
name = "fashion_cnn"
dataset = "fashion-mnist-subset"

[[variants]]
name = "fp32"
precision = "fp32"

[[variants]]
name = "fp16"
precision = "fp16"

[[variants]]
name = "int8"
calib_samples = 32

[[variants]]
name = "int8-w4"
calib_samples = 32
weight_bits = 4

[[variants]]
name = "int8-gptq"
calib_samples = 32
weight_rounding = "gptq"

[[variants]]
name = "int8-dynamic"
mode = "dynamic"
"""


@pytest.mark.ort_cpu
@pytest.mark.slow
def test_every_onnx_file_a_sweep_writes_has_the_lowest_ir(tmp_path):
    """fp16, static QDQ, INT4 (opset 21), GPTQ-rounded and dynamic artifacts, all through the CLI."""
    (tmp_path / "sweep.toml").write_text(SWEEP)
    env = {**os.environ, "QUANTBENCH_CACHE": str(tmp_path / "cache")}
    res = subprocess.run([sys.executable, "-c", "import sys; from quantbench.harness.cli import main; sys.exit(main())",
                          "run", "sweep.toml", "-o", "out", "--no-report"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    files = sorted(p for p in tmp_path.rglob("*.onnx") if p.name != "sweep.toml")
    assert len(files) >= 5, files  # fp16, int8, int8-w4, int8-gptq, int8-dynamic (fp32 is the shipped file)
    found = {}
    for path in files:
        model = onnx.load(str(path), load_external_data=False)
        found[path.relative_to(tmp_path).as_posix()] = (model.ir_version, _expected(model))
    assert all(ir == want for ir, want in found.values()), found
    assert {want for _, want in found.values()} >= {8, 10}  # opset 17 and the INT4 variant's opset 21


def test_a_model_newer_than_the_runtime_fails_naming_the_limit(tmp_path):
    """ORT's own refusal, turned into one line that names both IR versions."""
    from quantbench.runtimes.ort_cuda import load_error

    text = ("[ONNXRuntimeError] : 1 : FAIL : Load model from /x/m.onnx failed:/onnxruntime_src/onnxruntime/core/graph/"
            "model.cc:181 onnxruntime::Model::Model(...) Unsupported model IR version: 14, "
            "max supported IR version: 13")
    msg = load_error("ort-cuda", Path("/x/m.onnx"), RuntimeError(text), "1.26.0")
    assert msg == ("ort-cuda cannot load m.onnx: its IR version 14 is newer than onnxruntime 1.26.0 reads (IR <= 13); "
                   "re-save it with the lowest IR its opset allows (quantbench.common.onnx_save.lower_ir_version)")
    assert load_error("ort-cuda", Path("/x/m.onnx"), RuntimeError("bad\nmore"), "1.26.0") == \
        "ort-cuda could not load /x/m.onnx: bad"


# ---- every test helper model ---------------------------------------------------------------------------------
def _make_model_calls(path: Path) -> list[tuple[int, bool]]:
    """(line, wrapped) for each ``make_model(...)`` call: wrapped when it sits inside save_model(...) or
    with_lowest_ir_version(...), the two ways a test model gets its IR from quantbench rather than onnx."""
    tree = ast.parse(path.read_text(), str(path))
    wrapped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                "save_model", "with_lowest_ir_version") and node.args:
            wrapped |= {id(n) for n in ast.walk(node.args[0])}
    return [(n.lineno, id(n) in wrapped) for n in ast.walk(tree)
            if isinstance(n, ast.Call) and getattr(n.func, "attr", getattr(n.func, "id", "")) == "make_model"]


def test_every_test_helper_model_gets_the_lowest_ir():
    """A test model built with onnx.helper.make_model and saved as is claims IR 14 and would not load on
    onnxruntime-gpu: every one goes through save_model / with_lowest_ir_version."""
    calls = {f"{p.relative_to(TESTS)}:{line}": ok for p in sorted(TESTS.rglob("*.py")) if p.name != Path(__file__).name
             for line, ok in _make_model_calls(p)}
    assert len(calls) >= 10  # the scan finds the helpers (tiny_model, fashion_model, ...)
    assert [where for where, ok in calls.items() if not ok] == []


def test_the_gpu_test_helpers_write_the_lowest_ir(tmp_path):
    from ..runtimes.test_ort_cpu import tiny_model
    from ..runtimes.test_tensorrt import fashion_model

    tiny_model(tmp_path / "tiny.onnx")
    for path in (tmp_path / "tiny.onnx", fashion_model(tmp_path / "fashion.onnx")):
        model = onnx.load(str(path))
        assert model.ir_version == _expected(model) == 8, path.name
    model = with_lowest_ir_version(helper.make_model(_graph(), opset_imports=[helper.make_opsetid("", 21)]))
    assert model.ir_version == 10
