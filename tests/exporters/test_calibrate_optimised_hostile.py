"""Hostile cases for MinMax on ORT's optimised graph (``calib_graph = "optimised"``): valid models on which the
shortcuts of :func:`nonnegative_tensors` / :func:`adopted_ranges` could give other ranges than ORT's calibrators.

Each model is built here and run by ONNX Runtime on scikit-learn's 8x8 digits (shipped with scikit-learn).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantbench.common.onnx_save import save_model, with_lowest_ir_version
from quantbench.exporters.calibrate import nonnegative_tensors
from tests.exporters.test_calibrate_optimised import _qdq_params, assert_same_qdq
from tests.exporters.test_calibrate_ranges import Reader

pytestmark = pytest.mark.ort_cpu

node = helper.make_node


def _weights(*shapes: tuple[int, ...], seed: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(s) * 0.4).astype(np.float32) for s in shapes]


def _save(path: Path, nodes: list, inits: dict[str, np.ndarray], opset: int = 17) -> Path:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)
    return path


def _digits(n: int = 32) -> np.ndarray:
    from sklearn.datasets import load_digits

    x = load_digits().images[:n].astype(np.float32) / 16.0
    return ((x - 0.3) / 0.4)[:, None]


def _inverted_clip(path: Path) -> Path:
    """Conv -> Clip(min 0.5, max -0.25) -> Conv: ONNX's Clip with min > max outputs max (-0.25) everywhere."""
    w1, b1, w2, b2 = _weights((4, 1, 3, 3), (4,), (4, 4, 1, 1), (4,))
    nodes = [node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1] * 4),
             node("Clip", ["c1", "lo", "hi"], ["k1"], name="clip1"),
             node("Conv", ["k1", "w2", "b2"], ["y"], name="conv2")]
    return _save(path, nodes, {"w1": w1, "b1": b1, "w2": w2, "b2": b2, "lo": 0.5, "hi": -0.25})


def _negative_max_clip_opset10(path: Path) -> Path:
    """Opset-10 Clip with attributes min 0, max -1: every output is -1."""
    w1, b1, w2, b2 = _weights((4, 1, 3, 3), (4,), (4, 4, 1, 1), (4,))
    nodes = [node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1] * 4),
             node("Clip", ["c1"], ["k1"], name="clip1", min=0.0, max=-1.0),
             node("Conv", ["k1", "w2", "b2"], ["y"], name="conv2")]
    return _save(path, nodes, {"w1": w1, "b1": b1, "w2": w2, "b2": b2}, opset=10)


def _dilated_maxpool(path: Path) -> Path:
    """Conv (stride 4: 2x2) -> Relu -> MaxPool(kernel 2, dilation 3, pad 1): the one window's two taps (-1 and 2)
    both lie in the padding, so ORT's MaxPool outputs the lowest float although its input is >= 0."""
    w1, b1, w2, b2 = _weights((4, 1, 4, 4), (4,), (4, 4, 1, 1), (4,))
    nodes = [node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", strides=[4, 4]),
             node("Relu", ["c1"], ["r1"], name="relu1"),
             node("MaxPool", ["r1"], ["m"], name="pool", kernel_shape=[2, 2], dilations=[3, 3], pads=[1, 1, 1, 1]),
             node("Conv", ["m", "w2", "b2"], ["y"], name="conv2")]
    return _save(path, nodes, {"w1": w1, "b1": b1, "w2": w2, "b2": b2})


BUILDERS = {"inverted-clip": _inverted_clip, "negative-max-clip-opset10": _negative_max_clip_opset10,
            "dilated-maxpool": _dilated_maxpool}


@pytest.mark.parametrize("build", list(BUILDERS.values()), ids=list(BUILDERS))
def test_nonnegative_tensors_are_nonnegative_when_run(tmp_path, build):
    """Every tensor :func:`nonnegative_tensors` names is >= 0 when ORT runs the model (its GlobalMaxPool probe
    reports 0 as the minimum, so a negative value there would change the quantized model)."""
    import onnxruntime as ort

    model = onnx.load(str(build(tmp_path / "m.onnx")))
    names = sorted(nonnegative_tensors(model))
    probe = onnx.load(str(tmp_path / "m.onnx"))
    probe.graph.output.extend(helper.make_empty_tensor_value_info(t) for t in names)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    values = session.run(["y", *names], {"x": _digits()})[1:]
    negative = {t: float(v.min()) for t, v in zip(names, values, strict=True) if v.min() < 0}
    assert not negative


def test_nonnegative_tensors_still_finds_relus_and_plain_clips(tmp_path):
    """The checks above keep the shortcut where it holds: a Relu's output, a Clip(0) without max, an undilated
    MaxPool of a Relu."""
    model = onnx.load(str(_dilated_maxpool(tmp_path / "m.onnx")))
    assert nonnegative_tensors(model) == {"r1"}  # the dilated pool's output is not claimed
    for n in model.graph.node:
        if n.op_type == "MaxPool":
            del n.attribute[:]
            n.attribute.extend([helper.make_attribute("kernel_shape", [2, 2])])
    assert nonnegative_tensors(model) == {"r1", "m"}
    clip = onnx.load(str(_inverted_clip(tmp_path / "c.onnx")))
    clip.graph.node[1].input[2] = ""  # Clip(c1, 0.5): no max
    assert nonnegative_tensors(clip) == {"k1"}


@pytest.mark.parametrize("build", [_inverted_clip, _negative_max_clip_opset10], ids=["inverted-clip", "opset10-clip"])
def test_clip_with_negative_max_quantizes_as_orts_calibrators_ranges(tmp_path, build):
    """A Clip whose constant max is negative (alone or below its min) outputs negative values: the optimised graph's
    QDQ model must still have the unoptimised ranges' zero points and scales."""
    from quantbench.exporters.quantize import QuantSettings, quantize_qdq

    model = build(tmp_path / "m.onnx")
    built = {}
    for graph in ("unoptimised", "optimised"):
        out = tmp_path / f"{graph}.onnx"
        quantize_qdq(model, out, QuantSettings(calibration="minmax", calib_graph=graph), Reader([_digits()]))
        built[graph] = _qdq_params(out)
    assert_same_qdq(built)


def test_overflow_before_a_relu_is_checked_where_its_range_is_used(tmp_path):
    """Calibration data that overflows a Conv to -inf (then zeroed by its Relu): the unoptimised graph refuses it
    with a one-line error naming the Conv's output; the optimised graph never reads that tensor (it takes its Relu's
    range, as ORT's quantizer would) and checks only the ranges the quantizer uses, which are finite."""
    from quantbench.exporters.calibrate import CalibrationConfig, calibrate
    from quantbench.exporters.quantize import QuantSettings, quantize_qdq

    w2, b2 = _weights((4, 4, 1, 1), (4,))
    nodes = [node("Conv", ["x", "w1"], ["c1"], name="conv1"), node("Relu", ["c1"], ["r1"], name="relu1"),
             node("Conv", ["r1", "w2", "b2"], ["y"], name="conv2")]
    model = _save(tmp_path / "m.onnx", nodes, {"w1": -np.ones((4, 1, 3, 3)), "w2": w2, "b2": b2})
    x = (_digits() / 4 + 1) * np.float32(1e38)  # finite inputs, 0.8e38 .. 1.7e38: every 3x3 sum is below -3.4e38
    assert np.isfinite(x).all()
    with pytest.raises(ValueError, match="activation 'c1' has non-finite values"):
        quantize_qdq(model, tmp_path / "u.onnx", QuantSettings(calibration="minmax", calib_graph="unoptimised"),
                     Reader([x]))
    result = calibrate(model, CalibrationConfig("minmax", graph="optimised"), Reader([x]), tmp_path, floor=False)
    ranges = {t: tuple(float(v) for v in result.ranges[t].range_value) for t in result.ranges}
    assert ranges["c1"] == ranges["r1"] == (0.0, 0.0)  # the Relu zeroed every value: its range, finite


def _conv_model(w: np.ndarray, b: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph([node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1] * 4)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return with_lowest_ir_version(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _zero_point_arg(low: np.float32, high: np.float32) -> float:
    """qmin - rmin / scale of ORT's compute_scale_zp for QUInt8 (rounded, it is the zero point)."""
    rmin, rmax = min(float(low), 0.0), max(float(high), 0.0)
    return -rmin / ((rmax - rmin) / 255.0)


def test_zero_point_at_a_rounding_tie_moves_by_one_step_at_most(tmp_path):
    """A plain Conv whose output range puts its zero point within float32's last bits of a .5 tie: ORT's optimised
    Conv gives other last bits, so the two graphs' zero points may round apart, by one step and no more (the
    documented limit of "the same zero points"). The bias of the channel that holds the minimum is moved ulp by ulp
    until the two graphs' ranges round to different zero points; skipped where ORT's kernels agree to the bit."""
    import onnxruntime as ort

    from quantbench.exporters.quantize import QuantSettings, quantize_qdq

    rng = np.random.default_rng(11)
    w = (rng.standard_normal((16, 8, 3, 3)) * 0.3).astype(np.float32)
    b = (rng.standard_normal(16) * 0.1).astype(np.float32)
    x = rng.standard_normal((1, 8, 12, 12)).astype(np.float32)

    def outputs(bias: np.ndarray) -> list[np.ndarray]:
        out = []
        for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
            so = ort.SessionOptions()
            so.graph_optimization_level, so.log_severity_level = level, 3
            session = ort.InferenceSession(_conv_model(w, bias).SerializeToString(), so,
                                           providers=["CPUExecutionProvider"])
            out.append(session.run(None, {"x": x})[0])
        return out

    y, _ = outputs(b)
    channel = int(np.unravel_index(y.argmin(), y.shape)[1])
    tie = np.floor(_zero_point_arg(y.min(), y.max())) + 0.5  # move the minimum so that the argument is near the tie
    b[channel] += np.float32(-tie * y.max() / (255 - tie) - y.min())
    found = None
    for step in (s * sign for s in range(1500) for sign in (1, -1)):
        trial = b.copy()
        trial[channel] += np.float32(step) * np.spacing(b[channel])
        plain, optimised = outputs(trial)
        if step == 0 and np.array_equal(plain, optimised):
            pytest.skip("ORT's optimised and unoptimised Conv agree to the bit on this CPU")
        if (np.round(_zero_point_arg(plain.min(), plain.max()))
                != np.round(_zero_point_arg(optimised.min(), optimised.max()))):
            found = trial
            break
    if found is None:
        pytest.skip("no bias puts the zero point on a tie within the two graphs' last bits here")
    from quantbench.common.onnx_save import save_model

    save_model(_conv_model(w, found), tmp_path / "m.onnx")
    zeros = {}
    for graph in ("unoptimised", "optimised"):
        out = tmp_path / f"{graph}.onnx"
        quantize_qdq(tmp_path / "m.onnx", out, QuantSettings(calibration="minmax", calib_graph=graph), Reader([x]))
        zeros[graph] = {k: int(v[1]) for k, v in _qdq_params(out)[1].items() if k.startswith("y_")}
    if zeros["optimised"] == zeros["unoptimised"]:  # calibration's probes gave other bits than the plain sessions
        pytest.skip("the tie found with plain sessions does not reproduce through calibration here")
    assert zeros["optimised"].keys() == zeros["unoptimised"].keys()
    assert all(abs(zeros["optimised"][k] - zeros["unoptimised"][k]) <= 1 for k in zeros["optimised"])


def _decomposed_layernorm(path: Path) -> Path:
    """LayerNorm as opset-13 exporters write it (ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add), then a
    MatMul: ORT's optimised graph fuses the LayerNorm into one LayerNormalization kernel where its tensors are not
    calibrated (op_types = ["MatMul"])."""
    rng = np.random.default_rng(2)
    nodes = [node("ReduceMean", ["x"], ["mu"], name="mean", axes=[-1]),
             node("Sub", ["x", "mu"], ["d"], name="sub"),
             node("Pow", ["d", "two"], ["d2"], name="pow"),
             node("ReduceMean", ["d2"], ["var"], name="var", axes=[-1]),
             node("Add", ["var", "eps"], ["ve"], name="add_eps"),
             node("Sqrt", ["ve"], ["sd"], name="sqrt"),
             node("Div", ["d", "sd"], ["n"], name="div"),
             node("Mul", ["n", "gamma"], ["ng"], name="scale"),
             node("Add", ["ng", "beta"], ["ln"], name="shift"),
             node("MatMul", ["ln", "w"], ["y"], name="fc")]
    inits = {"two": 2.0, "eps": 1e-5, "gamma": 1 + 0.1 * rng.standard_normal(64), "beta": 0.1 * rng.standard_normal(64),
             "w": 0.2 * rng.standard_normal((64, 32))}
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_ranges_are_those_of_the_model_as_ort_runs_it_where_a_fused_kernel_differs(tmp_path):
    """Each row has mean 300 and a spread of 0.01 (the 8x8 digits as 64 features): ill-conditioned for a LayerNorm,
    so ORT's fused LayerNormalization (optimised graph) and the decomposed ops (unoptimised) give other values, far
    beyond float32's last bits. The optimised calibration's ranges are those of the FP32 model as ORT runs it by
    default (its tensors exposed, one sample per run), bit for bit."""
    import onnxruntime as ort

    from quantbench.exporters.calibrate import CalibrationConfig, calibrate

    model = _decomposed_layernorm(tmp_path / "m.onnx")
    x = (300 + 0.01 * _digits(64).reshape(64, 1, 64)).astype(np.float32)
    result = calibrate(model, CalibrationConfig("minmax", op_types=("MatMul",), graph="optimised"), Reader([x]),
                       tmp_path, floor=False)
    exposed = onnx.load(str(model))
    exposed.graph.output.extend([helper.make_empty_tensor_value_info("ln")])
    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(exposed.SerializeToString(), so, providers=["CPUExecutionProvider"])
    values = {"ln": [], "y": []}
    for i in range(len(x)):
        y, ln = session.run(["y", "ln"], {"x": x[i:i + 1]})
        values["ln"].append(ln)
        values["y"].append(y)
    for t in ("ln", "y"):
        v = np.concatenate([a.reshape(-1) for a in values[t]])
        assert tuple(np.float32(r) for r in result.ranges[t].range_value) == (v.min(), v.max()), t
    unoptimised = calibrate(model, CalibrationConfig("minmax", op_types=("MatMul",)), Reader([x]), tmp_path,
                            floor=False)
    lo_u, hi_u = (float(r) for r in unoptimised.ranges["ln"].range_value)
    lo_o, hi_o = (float(r) for r in result.ranges["ln"].range_value)
    assert abs(hi_o - hi_u) / abs(hi_u) > 1e-4 or abs(lo_o - lo_u) / abs(lo_u) > 1e-4  # the case is ill-conditioned


def test_decomposed_layernorm_with_matmul_only_on_well_conditioned_rows(tmp_path):
    """The same model on the digits as they are (rows of mean ~0, spread ~1): the fused kernel agrees."""
    _compare_layernorm(tmp_path, 0, 1)


def _compare_layernorm(tmp_path: Path, mean: float, spread: float) -> None:
    from quantbench.exporters.quantize import QuantSettings, quantize_qdq

    model = _decomposed_layernorm(tmp_path / "m.onnx")
    x = (mean + spread * _digits(64).reshape(64, 1, 64)).astype(np.float32)
    built = {}
    for graph in ("unoptimised", "optimised"):
        out = tmp_path / f"{graph}.onnx"
        quantize_qdq(model, out, QuantSettings(calibration="minmax", calib_graph=graph, op_types=("MatMul",)),
                     Reader([x]))
        built[graph] = _qdq_params(out)
    assert_same_qdq(built)


@pytest.mark.torch
def test_a_vision_transformer_whose_pre_processing_fails_is_quantized_with_a_note(tmp_path):
    """torchvision's VisionTransformer (opset 14, dynamic batch): ORT's symbolic shape inference asserts on its patch
    Reshape; quantize_qdq quantizes the original graph and says so in a note (README: pre-processing is an
    optimisation, not a requirement)."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from quantbench.exporters.quantize import QuantSettings, quantize_qdq

    torch.manual_seed(0)
    net = torchvision.models.VisionTransformer(image_size=8, patch_size=4, num_layers=1, num_heads=1, hidden_dim=8,
                                               mlp_dim=8, num_classes=2).eval()
    model = tmp_path / "vit.onnx"
    torch.onnx.export(net, torch.randn(1, 3, 8, 8), str(model), dynamo=False, opset_version=14, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "N"}})
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(model), str(tmp_path / "pre.onnx"), skip_symbolic_shape=False)
        pytest.skip("this ONNX Runtime pre-processes the graph")
    except Exception as exc:  # noqa: BLE001 - the case under test: any failure without a message
        if str(exc):
            pytest.skip(f"pre-processing fails with a message here: {exc}")
    x = np.repeat(_digits(16)[:, :, :, :], 3, axis=1)  # 8x8 digits as three-channel images
    notes = quantize_qdq(model, tmp_path / "q.onnx", QuantSettings(calibration="minmax"), Reader([x]))
    assert any(n.startswith("quant_pre_process failed") for n in notes)
    assert (tmp_path / "q.onnx").is_file()


def test_an_overflow_is_named_by_the_tensor_that_was_measured(tmp_path):
    """The optimised graph measures a Relu's output in place of its input (which only takes its range): an overflow
    there is reported under the Relu's output, whose values they are, not under the input."""
    from quantbench.exporters.calibrate import CalibrationConfig, calibrate

    w2, b2 = _weights((4, 4, 1, 1), (4,))
    nodes = [node("Conv", ["x", "w1"], ["c1"], name="conv1"), node("Relu", ["c1"], ["r1"], name="relu1"),
             node("Conv", ["r1", "w2", "b2"], ["y"], name="conv2")]
    model = _save(tmp_path / "m.onnx", nodes, {"w1": np.ones((4, 1, 3, 3)), "w2": w2, "b2": b2})
    x = (_digits() / 4 + 1) * np.float32(1e38)  # every 3x3 sum overflows to +inf, which the Relu keeps
    with pytest.raises(ValueError, match=r"^activation 'r1' has non-finite values \(min 0.0, max inf\)"):
        calibrate(model, CalibrationConfig("minmax", graph="optimised"), Reader([x]), tmp_path, floor=False)
