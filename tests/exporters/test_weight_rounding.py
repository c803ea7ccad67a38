"""GPTQ / GPFQ weight rounding on a tiny conv + grouped conv + dense model with real Fashion-MNIST data.

Layer output errors are measured independently of the rounding code: each layer runs as a single
ONNX Runtime node on the FP32 model's own layer inputs, once with W and once with the dequantized Ŵ.
"""
from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantbench.calibration_data import BatchReader, Preprocess, open_source
from quantbench.common.onnx_save import with_lowest_ir_version
from quantbench.exporters import weight_rounding as wr
from quantbench.exporters.quantize import QuantSettings, quantize_qdq

pytestmark = pytest.mark.ort_cpu

PRE = Preprocess.from_dict({"channels": 1, "mean": [0.5], "std": [0.5]})
CALIB = 64
# (node name, op, layer input tensor, weight name, attributes): the graph of _tiny_model
LAYERS = [
    ("conv1", "Conv", "x", "w1", {"kernel_shape": [3, 3], "pads": [2, 2, 2, 2], "dilations": [2, 2]}),
    ("conv2", "Conv", "r1", "w2", {"kernel_shape": [3, 3], "strides": [2, 2], "group": 2, "pads": [1, 1, 1, 1]}),
    ("conv3", "Conv", "r2", "w3", {"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER"}),
    ("fc1", "Gemm", "flat", "w4", {"transB": 1}),
    ("fc2", "MatMul", "r4", "w5", {}),
]


def _tiny_model(path):
    rng = np.random.default_rng(0)

    def init(name, *shape, scale=1.0):
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        return numpy_helper.from_array((rng.standard_normal(shape) * scale / np.sqrt(fan_in)).astype(np.float32), name)

    inits = [init("w1", 8, 1, 3, 3), init("b1", 8, scale=0.1), init("w2", 8, 4, 3, 3), init("b2", 8, scale=0.1),
             init("w3", 8, 8, 2, 2), init("w4", 32, 8 * 14 * 14), init("b4", 32, scale=0.1),
             numpy_helper.from_array((rng.standard_normal((32, 10)) / np.sqrt(32)).astype(np.float32), "w5")]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", **LAYERS[0][4]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", **LAYERS[1][4]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3"], ["c3"], name="conv3", **LAYERS[2][4]),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        helper.make_node("Flatten", ["r3"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "w4", "b4"], ["g4"], name="fc1", transB=1),
        helper.make_node("Relu", ["g4"], ["r4"], name="relu4"),
        helper.make_node("MatMul", ["r4", "w5"], ["y"], name="fc2"),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    model = with_lowest_ir_version(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _reader(batch=32, n=CALIB, seed=0):
    split = open_source("fashion-mnist").calibration
    return BatchReader(split, PRE, split.select(n, seed=seed), batch, "x")


def _session(model_or_path):
    import onnxruntime as ort

    data = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tiny_model(tmp_path_factory.mktemp("wr") / "tiny.onnx")


@pytest.fixture(scope="module")
def built(tiny, tmp_path_factory):
    """QDQ models by (bits, rounding)."""
    out = tmp_path_factory.mktemp("wr-q")
    models = {}
    for bits in (4, 3):
        for rounding in ("nearest", "gptq", "gpfq"):
            path = out / f"{bits}-{rounding}.onnx"
            notes = quantize_qdq(tiny, path, QuantSettings(weight_bits=bits, weight_rounding=rounding,
                                                           calib_samples=CALIB), _reader())
            models[bits, rounding] = (path, notes)
    return models


@pytest.fixture(scope="module")
def layer_inputs(tiny):
    """Each layer's FP32 input over the calibration samples (tiny model: small enough to hold)."""
    model = onnx.load(str(tiny))
    names = [name for name in dict.fromkeys(x for _, _, x, _, _ in LAYERS) if name != "x"]
    for name in names:
        model.graph.output.append(helper.make_empty_tensor_value_info(name))
    sess = _session(model)
    reader = _reader()
    xs = np.concatenate([b["x"] for b in iter(reader.get_next, None)])
    values = dict(zip(names, sess.run(names, {"x": xs}), strict=True))
    values["x"] = xs
    return values


def _dequantized(path):
    """{node name: Ŵ} from the DequantizeLinear feeding each quantized node's weight."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    out = {}
    for node in model.graph.node:
        if node.name in {name for name, *_ in LAYERS} and node.input[1] in dq:
            d = dq[node.input[1]]
            q = inits[d.input[0]].astype(np.float64)
            axis = next((a.i for a in d.attribute if a.name == "axis"), 1)
            shape = [1] * q.ndim
            shape[axis] = -1
            s = inits[d.input[1]].astype(np.float64)
            z = inits[d.input[2]].astype(np.float64) if len(d.input) > 2 else 0.0
            if s.size > 1:
                s, z = s.reshape(shape), np.reshape(z, shape)
            out[node.name] = (q - z) * s
    return out


def _layer_output(op, attrs, x, w):
    """One node run by ORT: the layer's output WX (no bias: it cancels in WX − ŴX)."""
    node = helper.make_node(op, ["x", "w"], ["y"], **attrs)
    graph = helper.make_graph([node], "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_empty_tensor_value_info("y")],
                              [numpy_helper.from_array(w.astype(np.float32), "w")])
    model = with_lowest_ir_version(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    return _session(model).run(None, {"x": x.astype(np.float32)})[0].astype(np.float64)


@pytest.mark.parametrize("bits", [4, 3])
@pytest.mark.slow
def test_gptq_and_gpfq_lower_layer_output_error_than_nearest(built, tiny, layer_inputs, bits):
    fp = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tiny)).graph.initializer}
    w_hat = {r: _dequantized(built[bits, r][0]) for r in ("nearest", "gptq", "gpfq")}
    errors = {}
    for name, op, x_name, w_name, attrs in LAYERS:
        x = layer_inputs[x_name]
        ref = _layer_output(op, attrs, x, fp[w_name])
        errors[name] = {r: float(np.linalg.norm(ref - _layer_output(op, attrs, x, w_hat[r][name])))
                        for r in w_hat}
    for name, e in errors.items():
        assert e["gptq"] <= e["nearest"] * (1 + 1e-6), (name, e)
        assert e["gpfq"] <= e["nearest"] * (1 + 1e-6), (name, e)
    assert any(e["gptq"] < 0.8 * e["nearest"] for e in errors.values()), errors
    assert any(e["gpfq"] < 0.8 * e["nearest"] for e in errors.values()), errors
    note = next(n for n in built[bits, "gptq"][1] if n.startswith("weight_rounding gptq"))
    assert f"at {bits} bits (integers in [-{2 ** (bits - 1) - 1}, {2 ** (bits - 1) - 1}]): 5 layers" in note
    assert "lower on 5/5 layers" in note


@pytest.mark.parametrize("bits", [4, 3])
@pytest.mark.slow
def test_same_graph_and_grid_only_the_integers_differ_and_it_runs(built, tiny, bits):
    near = onnx.load(str(built[bits, "nearest"][0]))
    top = 2 ** (bits - 1) - 1
    x = next(iter(_reader().get_next, None))["x"]
    ref = _session(tiny).run(None, {"x": x})[0]
    for rounding in ("gptq", "gpfq"):
        path = built[bits, rounding][0]
        model = onnx.load(str(path))
        assert [(n.op_type, list(n.input), list(n.output)) for n in model.graph.node] == \
            [(n.op_type, list(n.input), list(n.output)) for n in near.graph.node]
        near_inits = {i.name: i for i in near.graph.initializer}
        changed = 0
        for init in model.graph.initializer:
            same = init.SerializeToString() == near_inits[init.name].SerializeToString()
            if init.name in {f"{w}_quantized" for *_, w, _ in LAYERS}:
                q = numpy_helper.to_array(init).astype(np.int64)
                assert init.data_type == near_inits[init.name].data_type
                assert q.min() >= -top and q.max() <= top, init.name  # on the symmetric b-bit grid
                changed += not same
            else:  # scales, zero points, biases and activations' parameters: untouched
                assert same, init.name
        assert changed == len(LAYERS)
        y = _session(path).run(None, {"x": x})[0]
        assert y.shape == ref.shape and np.isfinite(y).all()
        # a 3-bit random-weight net still follows its FP32 logits
        assert np.corrcoef(y.ravel(), ref.ravel())[0, 1] > 0.8


@pytest.mark.slow
def test_deterministic_and_independent_of_calibration_batching(tiny, tmp_path):
    shas = []
    for i, batch in enumerate((32, 7, 32)):
        path = tmp_path / f"g{i}.onnx"
        quantize_qdq(tiny, path, QuantSettings(weight_bits=3, weight_rounding="gptq", calib_samples=CALIB,
                                               calib_batch=batch), _reader(batch=batch))
        shas.append(hashlib.sha256(path.read_bytes()).hexdigest())
    assert shas[0] == shas[1] == shas[2]


def test_gram_matrices_do_not_depend_on_the_memory_budget(tiny, tmp_path):
    from onnxruntime.quantization.shape_inference import quant_pre_process

    near = tmp_path / "near.onnx"
    quantize_qdq(tiny, near, QuantSettings(weight_bits=4, calib_samples=16), _reader(n=16))
    pre = tmp_path / "pre.onnx"
    quant_pre_process(str(tiny), str(pre))
    layers, notes = wr.find_layers(onnx.load(str(near)), onnx.load(str(pre)))
    assert [lay.node for lay in layers] == [name for name, *_ in LAYERS] and notes == []
    assert len(wr.plan_passes(layers, 1e-3)) == len(LAYERS)
    whole, n1 = wr.collect_grams(pre, layers, _reader(n=16), tmp_path, budget_mb=1024)
    split, n2 = wr.collect_grams(pre, layers, _reader(n=16, batch=5), tmp_path, budget_mb=1e-3)
    assert n1 == n2 == 16
    for name in whole:
        np.testing.assert_array_equal(whole[name], split[name])
    assert whole["conv2"].shape == (2, 4 * 9, 4 * 9)  # one matrix per group


@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [3, 3], "pads": [1, 0, 2, 1], "strides": [2, 1], "dilations": [1, 2]},
    {"kernel_shape": [3, 2], "auto_pad": "SAME_LOWER", "strides": [2, 2]},
    {"kernel_shape": [2, 3], "auto_pad": "SAME_UPPER"},
    {"kernel_shape": [1, 1], "group": 3},
    {"kernel_shape": [3, 3], "auto_pad": "VALID", "group": 6},
])
def test_im2col_matches_ort_conv(attrs):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 6, 9, 8)).astype(np.float32)
    g = attrs.get("group", 1)
    w = rng.standard_normal((6, 6 // g, *attrs["kernel_shape"])).astype(np.float32)
    ref = _layer_output("Conv", attrs, x, w)  # (1, 6, H', W')
    layer = wr.Layer("c", "Conv", "x", w, "q", np.int8, np.ones(6), np.zeros(6), attrs, g)
    p = layer.patches(x.astype(np.float64))  # (groups, positions, cols)
    wm = layer.matrix(w.astype(np.float64))
    rg = 6 // g
    out = np.concatenate([p[k] @ wm[k * rg:(k + 1) * rg].T for k in range(g)], axis=1)  # (positions, 6)
    np.testing.assert_allclose(out.T.reshape(ref.shape), ref, rtol=1e-4, atol=1e-4)


def test_uncorrelated_inputs_make_gptq_and_gpfq_round_to_nearest():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((5, 40))
    grid = wr.Grid(np.full(5, 0.3), np.zeros(5), -3, 3)
    h = np.diag(rng.uniform(0.5, 2.0, 40))  # no correlation: no other column can absorb an error
    near = wr.round_nearest(w, None, grid)
    np.testing.assert_array_equal(wr.round_gptq(w, h, grid), near)
    np.testing.assert_array_equal(wr.round_gpfq(w, h, grid), near)
    # correlated inputs: both beat nearest on the objective they minimise
    x = rng.standard_normal((200, 40)) @ rng.standard_normal((40, 40))
    h = 2 * x.T @ x / len(x)
    e_near = wr.output_error(w, grid.dequantize(near), h)
    assert wr.output_error(w, grid.dequantize(wr.round_gptq(w, h, grid)), h) < e_near
    assert wr.output_error(w, grid.dequantize(wr.round_gpfq(w, h, grid)), h) < e_near


def test_registry_and_unknown_rounding_is_one_line():
    assert set(wr.ROUNDINGS) == {"nearest", "gptq", "gpfq"}
    assert QuantSettings(weight_rounding="gpfq").to_dict()["weight_rounding"] == "gpfq"
    with pytest.raises(ValueError, match="unknown weight_rounding") as err:
        QuantSettings.from_dict({"weight_rounding": "gtpq"})
    assert "\n" not in str(err.value) and "gptq" in str(err.value)
    with pytest.raises(ValueError, match="did you mean 'gptq'"):
        wr.check_rounding("gtpq")


@pytest.mark.slow
def test_per_tensor_scale_and_8_bits(tiny, tmp_path):
    for per_channel, bits in ((False, 4), (True, 8)):
        near, gptq = tmp_path / f"n{bits}.onnx", tmp_path / f"g{bits}.onnx"
        for path, rounding in ((near, "nearest"), (gptq, "gptq")):
            quantize_qdq(tiny, path, QuantSettings(weight_bits=bits, per_channel=per_channel, weight_rounding=rounding,
                                                   calib_samples=16), _reader(n=16))
        a, b = _dequantized(near), _dequantized(gptq)
        assert a.keys() == b.keys() and len(a) == len(LAYERS)
        assert any(not np.array_equal(a[k], b[k]) for k in a)
        x = next(iter(_reader(n=16).get_next, None))["x"]
        assert np.isfinite(_session(gptq).run(None, {"x": x})[0]).all()


def _weight_grids(path):
    """{node name: (integers, scale, zero point)} of each quantized layer's weight."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return {node.name: tuple(inits[i] for i in dq[node.input[1]].input)
            for node in model.graph.node if node.name in {name for name, *_ in LAYERS}}


@pytest.mark.parametrize("kw, qrange", [
    ({"reduce_range": True}, (-64, 64)),
    ({"weight_type": "QUInt8"}, (0, 255)),
    ({"weight_type": "QUInt8", "reduce_range": True, "symmetric_weight": False}, (0, 127)),
])
@pytest.mark.slow
def test_8_bit_gptq_and_gpfq_round_on_orts_own_grid(tiny, tmp_path, kw, qrange):
    """At 8 bits GPTQ/GPFQ keep the grid round-to-nearest gets from the same settings (reduce_range,
    weight_type, symmetry): same scales and zero points, integers in the same range; only integers move."""
    assert wr.weight_qrange(QuantSettings(weight_rounding="gptq", **kw)) == qrange
    grids = {}
    for rounding in ("nearest", "gptq", "gpfq"):
        path, stats = tmp_path / f"{rounding}.onnx", {}
        notes = quantize_qdq(tiny, path, QuantSettings(weight_rounding=rounding, calib_samples=16, **kw), _reader(n=16),
                             stats)
        assert "weight_grids" not in stats  # no bit-width grid replaced ORT's 8-bit one
        if rounding != "nearest":  # the note names the integer range the row's settings give
            assert f"at 8 bits (integers in [{qrange[0]}, {qrange[1]}])" in notes[0], notes[0]
        grids[rounding] = _weight_grids(path)
    near = grids["nearest"]
    assert len(near) == len(LAYERS)
    for rounding in ("gptq", "gpfq"):
        moved = 0
        for node, (q, scale, zp) in grids[rounding].items():
            nq, nscale, nzp = near[node]
            np.testing.assert_array_equal(scale, nscale, err_msg=f"{rounding} {node}")
            np.testing.assert_array_equal(zp, nzp, err_msg=f"{rounding} {node}")
            # ORT clips its nearest integers to the storage type only: one step past an end at most
            low, high = min(qrange[0], int(nq.min())), max(qrange[1], int(nq.max()))
            assert low >= qrange[0] - 1 and high <= qrange[1] + 1, (node, low, high)
            assert q.dtype == nq.dtype and low <= int(q.min()) and int(q.max()) <= high, (rounding, node)
            moved += int((q != nq).sum())
        assert moved > 0, rounding
    # ORT's nearest uses the whole range the settings give (e.g. 7-bit with reduce_range)
    spans = [(int(q.min()), int(q.max())) for q, _, _ in near.values()]
    assert qrange[1] - 1 <= max(hi for _, hi in spans) <= qrange[1] + 1


def _inputs_of(tiny, reader):
    """Each layer's FP32 input over the reader's samples."""
    model = onnx.load(str(tiny))
    names = [name for name in dict.fromkeys(x for _, _, x, _, _ in LAYERS) if name != "x"]
    for name in names:
        model.graph.output.append(helper.make_empty_tensor_value_info(name))
    xs = np.concatenate([b["x"] for b in iter(reader.get_next, None)])
    values = dict(zip(names, _session(model).run(names, {"x": xs}), strict=True))
    values["x"] = xs
    return values


def test_error_note_is_measured_on_held_out_images(tiny, tmp_path):
    """The note and the per-layer stats give each layer's output error on images calibration did not
    use (as many, same classes), measured here independently by running the layer on those images."""
    cal = _reader()
    held = wr.heldout_reader(cal)
    assert len(held.indices) == CALIB and not set(held.indices) & set(cal.indices)
    labels = np.asarray(cal.split.labels)
    assert set(labels[held.indices]) <= set(labels[cal.indices])
    path, stats = tmp_path / "g.onnx", {}
    notes = quantize_qdq(tiny, path, QuantSettings(weight_bits=3, weight_rounding="gptq", calib_samples=CALIB), cal,
                         stats)
    assert stats["weight_rounding_heldout_samples"] == CALIB
    note = next(n for n in notes if n.startswith("weight_rounding gptq"))
    assert f"on {CALIB} held-out images" in note and "on the calibration images" in note
    reports = {r["node"]: r for r in stats["weight_rounding"]}
    fp = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tiny)).graph.initializer}
    w_hat = _dequantized(path)
    inputs = {"cal": _inputs_of(tiny, _reader()), "held": _inputs_of(tiny, wr.heldout_reader(_reader()))}
    optimistic = 0
    for name, op, x_name, w_name, attrs in LAYERS:
        measured = {}
        for which, values in inputs.items():
            ref = _layer_output(op, attrs, values[x_name], fp[w_name])
            diff = ref - _layer_output(op, attrs, values[x_name], w_hat[name])
            measured[which] = float(np.sum(diff ** 2) / np.sum(ref ** 2))
        r = reports[name]
        assert r["output_error"] == pytest.approx(measured["cal"], rel=2e-2), name
        assert r["output_error_heldout"] == pytest.approx(measured["held"], rel=2e-2), name
        optimistic += measured["held"] > measured["cal"]
    assert optimistic >= 1  # GPTQ fits the calibration images: out of sample it does worse somewhere


def test_no_held_out_images_says_so():
    class Plain:  # a reader that is not a BatchReader: no split to draw other images from
        def rewind(self):
            pass

    assert wr.heldout_reader(Plain()) is None
    split = open_source("fashion-mnist").calibration
    everything = BatchReader(split, PRE, np.arange(len(split.labels)), 32, "x")
    assert wr.heldout_reader(everything) is None
    rep = wr.LayerReport("n", "Conv", 2, 3, 1, 0.1, 0.2, 0.5)
    assert "no held-out images left" in wr.summary("gpfq", 4, [rep])
