"""weight_bits 8/4/3 on the shipped Fashion-MNIST CNN: grids, INT4 vs simulated storage, packed sizes."""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from quantbench.calibration_data import BatchReader, Preprocess, open_source
from quantbench.exporters.artifacts import VariantSpec
from quantbench.exporters.bitwidth import (
    grid_scale,
    qmax,
    round_nearest,
    weight_tensors,
)
from quantbench.exporters.quantize import QuantSettings

pytestmark = pytest.mark.ort_cpu


@pytest.fixture(scope="module")
def built(store, source):
    """8-bit, real INT4, simulated 4-bit and 3-bit artifacts, calibrated on the same 64 images."""
    out = {}
    for name, kw in {"w8": {}, "w4": {"weight_bits": 4}, "w4sim": {"weight_bits": 4, "weight_storage": "simulated"},
                     "w3": {"weight_bits": 3}}.items():
        out[name] = store.build(source, VariantSpec(name, "int8", QuantSettings(calib_samples=64, **kw)),
                                "fashion-mnist", source.preprocess, timeout_s=300)
    return out


def _weights(path):
    """{node name: (op, integers, scales, axis, onnx dtype)} of the DequantizeLinear-fed Conv/Gemm weights."""
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    out = {}
    for op, node, t in weight_tensors(model):
        d = next(n for n in model.graph.node if n.name == node)
        dqn = dq[d.input[1]]
        axis = next((a.i for a in dqn.attribute if a.name == "axis"), 1)
        out[node] = (op, numpy_helper.to_array(t).astype(np.int32), numpy_helper.to_array(inits[dqn.input[1]]),
                     axis, t.data_type)
    return out


def _fp32_weights(path):
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n.name: inits[n.input[1]] for n in model.graph.node
            if n.op_type in ("Conv", "Gemm") and n.input[1] in inits}


@pytest.mark.parametrize("bits", [4, 3])
def test_grid_helpers_put_weights_on_at_most_2_pow_bits_values(bits):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 8, 3, 3)).astype(np.float32)
    w[3] = 0.0  # an all-zero channel stays at zero
    scale = grid_scale(w, bits, 0)
    q = round_nearest(w, scale, bits, 0)
    assert q.min() >= -qmax(bits) and q.max() <= qmax(bits)
    for c in range(16):
        assert len(np.unique(q[c])) <= 2 ** bits
        if c != 3:
            assert np.abs(q[c]).max() == qmax(bits)  # the channel's largest weight sits on the grid's end
    assert not q[3].any()
    err = np.abs(q * scale[:, None, None, None] - w)
    assert (err <= scale[:, None, None, None] / 2 + 1e-6).all()


@pytest.mark.parametrize("name, bits", [("w4", 4), ("w4sim", 4), ("w3", 3)])
@pytest.mark.slow
def test_built_weights_lie_exactly_on_the_per_channel_grid(built, store, source, name, bits):
    fp32 = _fp32_weights(store.fp32(source).path)
    weights = _weights(built[name].path)
    assert sorted(op for op, *_ in weights.values()) == ["Conv", "Conv", "Gemm", "Gemm"]
    for node, (_op, q, scale, axis, _dtype) in weights.items():
        assert scale.shape == (q.shape[axis],), "one scale per output channel"
        assert q.min() >= -qmax(bits) and q.max() <= qmax(bits)
        for c in range(q.shape[axis]):
            assert len(np.unique(np.take(q, c, axis=axis))) <= 2 ** bits
        w = fp32[node]
        np.testing.assert_allclose(scale, grid_scale(w, bits, axis), rtol=1e-6)
        shape = [1] * q.ndim
        shape[axis] = -1
        deq = q * scale.reshape(shape)
        assert np.abs(deq - w).max() <= scale.max() / 2 * (1 + 1e-5)  # round to nearest on that grid


@pytest.mark.slow
def test_int4_and_simulated_store_the_same_grid(built):
    real, sim = _weights(built["w4"].path), _weights(built["w4sim"].path)
    assert set(real) == set(sim)
    for node in real:
        assert real[node][4] == TensorProto.INT4 and sim[node][4] == TensorProto.INT8
        np.testing.assert_array_equal(real[node][1], sim[node][1])
        np.testing.assert_array_equal(real[node][2], sim[node][2])
    model = onnx.load(str(built["w4"].path))
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 21


@pytest.mark.slow
def test_recorded_sizes(built):
    w8, w4, sim, w3 = built["w8"], built["w4"], built["w4sim"], built["w3"]
    assert w8.packed_size_bytes == w8.size_bytes  # 8-bit weights are already packed at 8 bits
    assert w4.packed_size_bytes == w4.size_bytes  # so are real INT4 ones
    elements = sum(math.prod(t.dims) for _, _, t in weight_tensors(onnx.load(str(sim.path))))
    tensors = _weights(sim.path)
    packed4 = sim.size_bytes - elements + sum(math.ceil(q.size * 4 / 8) for _, q, *_ in tensors.values())
    packed3 = w3.size_bytes - elements + sum(math.ceil(q.size * 3 / 8) for _, q, *_ in tensors.values())
    assert sim.packed_size_bytes == packed4 < sim.size_bytes == w8.size_bytes
    assert w3.packed_size_bytes == packed3 < packed4
    # A packed INT4 file is what the simulated one would be packed (protobuf framing aside).
    assert abs(w4.size_bytes - sim.packed_size_bytes) < 0.01 * sim.packed_size_bytes


def _run(path, source, n=500):
    import onnxruntime as ort

    split = open_source(source.dataset).evaluation
    idx = split.select(n, seed=3)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reader = BatchReader(split, Preprocess.from_dict(source.preprocess), idx, 250, "input")
    preds, labels = [], []
    for x, y, _ in reader:
        out = sess.run(None, {"input": x})[0]
        assert np.isfinite(out).all()
        preds.append(out.argmax(1))
        labels.append(y)
    return np.concatenate(preds), np.concatenate(labels)


@pytest.mark.slow
def test_every_bit_width_runs_in_ort_and_8_bit_is_best(built, store, source):
    fp32_pred, labels = _run(store.fp32(source).path, source)
    acc = {"fp32": (fp32_pred == labels).mean()}
    preds = {}
    for name, art in built.items():
        preds[name], _ = _run(art.path, source)
        acc[name] = (preds[name] == labels).mean()
    assert acc["w8"] >= acc["fp32"] - 0.02
    assert min(acc["w4"], acc["w4sim"], acc["w3"]) > 0.3  # still a classifier (10 classes: chance is 0.1)
    assert acc["w8"] >= max(acc["w4"], acc["w4sim"], acc["w3"]) - 0.01
    # The same grid and activation ranges: the INT4 file and its INT8 simulation agree on nearly every image.
    assert (preds["w4"] == preds["w4sim"]).mean() >= 0.97


def test_settings_are_checked_and_recorded():
    d = QuantSettings(weight_bits=3).to_dict()
    assert (d["weight_bits"], d["weight_storage"], d["weight_rounding"]) == (3, "simulated", "nearest")
    assert QuantSettings(weight_bits=4).to_dict()["weight_storage"] == "int4"
    assert QuantSettings().to_dict()["weight_storage"] == "int8"
    for bad, match in [({"weight_bits": 5}, "weight_bits must be 8, 4 or 3"),
                       ({"weight_bits": True}, "weight_bits must be 8, 4 or 3"),
                       ({"weight_bits": 3, "weight_storage": "int4"}, "does not fit weight_bits = 3"),
                       ({"weight_bits": 4, "weight_type": "QUInt8"}, "needs weight_type = 'QInt8'"),
                       ({"weight_storage": "packed"}, "weight_storage must be one of"),
                       ({"weight_bits": 4, "reduce_range": True}, "reduce_range .* does not combine"),
                       ({"weight_rounding": "nearst"}, r"unknown weight_rounding .*\(known: .*nearest")]:
        with pytest.raises(ValueError, match=match) as err:
            QuantSettings.from_dict(bad)
        assert "\n" not in str(err.value)
