"""Calibration reads activations in ONNX Runtime's blocked layout (``exporters/blocked_layout.py``): the values each
probe and histogram sees are the tensor's, in another order, and every range and threshold is the one ORT's own
optimised graph gives.

The network has 16- and 32-channel tensors (a multiple of the block on AVX2 and AVX-512: read blocked), a 24-channel
one (padded to 32 with AVX-512's 16-channel blocks: must be read through ORT's reorder), a signed Conv output into a
residual Add, Relus, pooling and a Gemm.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantbench.common.onnx_save import save_model
from quantbench.exporters import blocked_layout
from quantbench.exporters import calibrate as cal
from quantbench.exporters.blocked_layout import REORDER, nchwc_block, without_reorders
from tests.exporters.test_calibrate_ranges import Reader

pytestmark = pytest.mark.ort_cpu

CHANNELS = {"c1": 16, "r1": 16, "c2": 16, "a": 16, "ra": 16, "c3": 24, "r3": 24, "c4": 32, "g": 32}


def _net(path: Path) -> Path:
    rng = np.random.default_rng(3)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    node = helper.make_node
    nodes = [node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]), node("Relu", ["c1"], ["r1"]),
             node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]), node("Add", ["c2", "r1"], ["a"]),
             node("Relu", ["a"], ["ra"]), node("Conv", ["ra", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1]),
             node("Relu", ["c3"], ["r3"]), node("Conv", ["r3", "w4", "b4"], ["c4"]),
             node("GlobalAveragePool", ["c4"], ["g"]), node("Flatten", ["g"], ["f"]),
             node("Gemm", ["f", "wg", "bg"], ["logits"], transB=1)]
    inits = [w("w1", 16, 3, 3, 3), w("b1", 16), w("w2", 16, 16, 3, 3), w("b2", 16), w("w3", 24, 16, 3, 3),
             w("b3", 24), w("w4", 32, 24, 1, 1), w("b4", 32), w("wg", 10, 32), w("bg", 10)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 12])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _data(n: int = 12) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 3, 12, 12)).astype(np.float32)


def _block_or_skip() -> int:
    block = nchwc_block()
    if block == 0:
        pytest.skip("ONNX Runtime runs no blocked (NCHWc) layout on this CPU: there is nothing to read blocked")
    return block


def test_nchwc_block_is_zero_or_a_power_of_two():
    block = nchwc_block()
    assert block == 0 or (block >= 4 and block & (block - 1) == 0)


def _reordered_outputs(path: Path, tmp: Path) -> set[str]:
    """The graph outputs ORT's own optimised graph of ``path`` copies back to NCHW."""
    blocked_layout._optimise(path, tmp / "ort_own.onnx")
    model = onnx.load(str(tmp / "ort_own.onnx"), load_external_data=False)
    outputs = {o.name for o in model.graph.output}
    return {n.output[0] for n in model.graph.node if (n.domain, n.op_type) == REORDER and n.output[0] in outputs}


def test_activations_handed_out_blocked_are_the_tensors_values(tmp_path, monkeypatch):
    """Pass 2's outputs: the reorders of tensors whose channels fill whole blocks are gone, the padded tensor's
    stays, and every output holds exactly the values ORT's own optimised graph gives (as multisets)."""
    block = _block_or_skip()
    source = _net(tmp_path / "net.onnx")
    tensors = ["x", "c1", "r1", "c2", "ra", "r3", "c4", "g", "f", "logits"]
    path = tmp_path / "acts.onnx"
    outputs = cal.write_activation_model(onnx.load(str(source)), tensors, {"x"}, path)
    reordered = _reordered_outputs(path, tmp_path)
    assert {"r1", "r3", "c4"} <= reordered  # ORT copies them back to NCHW: what is to be saved
    assert without_reorders(path, tmp_path / "edited.onnx", lambda _: False) > 0
    kept = {n.output[0] for n in onnx.load(str(tmp_path / "edited.onnx"), load_external_data=False).graph.node
            if (n.domain, n.op_type) == REORDER}
    for t in reordered - {"g"}:
        assert (t in kept) == bool(CHANNELS[t] % block), t  # padding (24 channels in blocks of 16) keeps the copy
    assert "g" not in reordered or "g" in kept  # Flatten, an NCHW op, reads it too: its copy stays
    x = _data(3)
    got = {}
    for blocked in (True, False):
        monkeypatch.setattr(cal, "READ_BLOCKED", blocked)
        runs = cal._ActivationRuns(path, outputs, 1, optimised=True)
        got[blocked] = [[a.copy() for a in runs.run({"x": x[i:i + 1]})[0]] for i in range(len(x))]
    for sample_blocked, sample_nchw in zip(got[True], got[False], strict=True):
        for t, a, b in zip(outputs, sample_blocked, sample_nchw, strict=True):
            assert a.size == b.size, t
            assert np.array_equal(np.sort(a), np.sort(b)), t
    first = dict(zip(outputs, got[True][0], strict=True))
    assert not np.array_equal(first["c4"], got[False][0][outputs.index("c4")])  # really read in another order


def test_range_probes_read_blocked_give_the_same_ranges(tmp_path, monkeypatch, caplog):
    """Pass 1's probes (Reshape + ReduceMin/ReduceMax, Abs, GlobalMaxPool) read blocked tensors: same minima and
    maxima, and the same per-channel maxima in another order."""
    _block_or_skip()
    source = _net(tmp_path / "net.onnx")
    model = onnx.load(str(source))
    tensors = ["x", "c1", "r1", "c2", "a", "ra", "c3", "r3", "c4", "g", "f"]
    path = tmp_path / "range.onnx"
    plan = cal.write_range_model(model, tensors, {"x"}, path, abs_min=True, max_only=cal.nonnegative_tensors(model))
    names = [n for probe in plan for n in probe[1:] if n]
    assert without_reorders(path, tmp_path / "edited.onnx", cal._reads_values_only) > 0
    feeds = [{"x": x[None]} for x in _data(4)]
    got = {}
    for blocked in (True, False):
        monkeypatch.setattr(cal, "READ_BLOCKED", blocked)
        with caplog.at_level(logging.DEBUG, logger=cal.__name__):
            session = cal.calibration_session(path, 1, optimised=True)
        assert "blocked-layout reading unavailable" not in caplog.text  # the edited graph did load
        got[blocked] = [session.run(names, feed) for feed in feeds]
    for run_b, run_n in zip(got[True], got[False], strict=True):
        for name, a, b in zip(names, run_b, run_n, strict=True):
            assert np.array_equal(np.sort(a.reshape(-1)), np.sort(b.reshape(-1))), name


@pytest.mark.parametrize("method, symmetric", [("minmax", False), ("entropy", False), ("percentile", True),
                                               ("mse", False)])
def test_calibration_does_not_depend_on_reading_blocked(tmp_path, monkeypatch, caplog, method, symmetric):
    """The knob: every range and threshold bit-equal whether the passes read blocked, read ORT's NCHW copies, or
    fall back to them because editing the graph failed."""
    source = _net(tmp_path / "net.onnx")
    x = _data()
    runs = {}
    real = blocked_layout.without_reorders
    calls = []

    def counted(*args):
        calls.append(1)
        return real(*args)

    def broken(*_args):
        raise RuntimeError("ORT could not save its optimised graph")

    for mode in ("blocked", "nchw", "fallback"):
        monkeypatch.setattr(cal, "READ_BLOCKED", mode != "nchw")
        monkeypatch.setattr(blocked_layout, "without_reorders", broken if mode == "fallback" else counted)
        calls.clear()
        config = cal.CalibrationConfig(method, num_bins=128 if method != "percentile" else 2048, symmetric=symmetric,
                                       graph="optimised", threads=1)
        (tmp_path / mode).mkdir()
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger=cal.__name__):
            result = cal.calibrate(source, config, Reader([x]), tmp_path / mode, floor=False)
        assert bool(calls) == (mode == "blocked")
        assert ("blocked-layout reading unavailable" in caplog.text) == (mode == "fallback")
        runs[mode] = {t: tuple(np.float32(v) for v in result.ranges[t].range_value) for t in result.ranges}
    assert runs["blocked"] == runs["nchw"] == runs["fallback"]
