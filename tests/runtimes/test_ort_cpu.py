"""ONNX Runtime CPU adapter: life cycle, settings, errors (torch-free tiny models)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from quantbench.common.onnx_save import save_model
from quantbench.runtimes import Artifact, RuntimeFailure, create_runtime

pytestmark = pytest.mark.ort_cpu


def tiny_model(path, rng=None):
    rng = rng if rng is not None else np.random.default_rng(0)
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    g = rng.standard_normal((10, 4 * 6 * 6)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]), helper.make_node("Gemm", ["f", "g"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "tiny",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
                              [onnx.numpy_helper.from_array(w, "w"), onnx.numpy_helper.from_array(g, "g")])
    save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return w, g


def reference(x, w, g):
    n = x.shape[0]
    out = np.zeros((n, 4, 6, 6), np.float32)
    for i in range(6):
        for j in range(6):
            out[:, :, i, j] = np.einsum("nchw,kchw->nk", x[:, :, i:i + 3, j:j + 3], w)
    return np.maximum(out, 0).reshape(n, -1) @ g.T


def test_runs_and_matches_numpy(tmp_path):
    w, g = tiny_model(tmp_path / "m.onnx")
    x = np.random.default_rng(1).standard_normal((3, 1, 8, 8)).astype(np.float32)
    with create_runtime("ort-cpu", "cpu", {"threads": 1}) as rt:
        rt.activate(Artifact("onnx", "fp32", tmp_path / "m.onnx"), batch=3)
        y = rt.fetch(rt.infer(rt.stage(x)))
        assert rt.settings_used()["threads"] == 1
        report = rt.execution_report()
    np.testing.assert_allclose(y, reference(x, w, g), rtol=1e-4, atol=1e-4)
    assert report["exec_precision"] == "fp32" and report["int8_op_share"] == 0.0


def test_life_cycle_and_bad_input(tmp_path):
    rt = create_runtime("ort-cpu")
    with pytest.raises(RuntimeFailure, match="activate"):
        rt.infer(np.zeros((1, 1, 8, 8), np.float32))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(RuntimeFailure, match="could not load"):
        rt.activate(Artifact("onnx", "fp32", bad))
    with pytest.raises(RuntimeFailure, match="torch"):
        create_runtime("ort-cpu").activate(Artifact("torch", "fp32"))
    tiny_model(tmp_path / "m.onnx")
    rt = create_runtime("ort-cpu")
    rt.activate(Artifact("onnx", "fp32", tmp_path / "m.onnx"))
    with pytest.raises(RuntimeFailure, match="inference failed"):
        rt.infer(np.zeros((1, 3, 8, 8), np.float32))  # wrong channel count
    rt.deactivate()


def test_host_memory_means_no_device_copies():
    """ORT CPU reads numpy buffers in place: the harness reports no host→device / device→host time."""
    assert create_runtime("ort-cpu", "cpu").host_memory is True


@pytest.mark.torch
@pytest.mark.parametrize("device, host", [("cpu", True), ("cuda:0", False)])
def test_host_memory_default_follows_the_device(device, host):
    from quantbench.runtimes import get_runtime_class

    # the base rule (torch does not override it); constructing an adapter touches no device
    assert get_runtime_class("torch")(device).host_memory is host
