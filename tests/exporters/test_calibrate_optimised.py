"""MinMax on ORT's optimised graph (``calib_graph = "optimised"``): the quantized model is the one the
unoptimised (ORT's calibrators') ranges give, whatever the settings that decide which ranges ORT's quantizer uses.

The model has what the shortcut depends on: a Conv -> Relu whose output two nodes read, a Conv -> Clip(0, 6), a
Conv into an Add (signed, probed in full), an Add -> Relu -> Relu chain, pooling and a Gemm. Data: scikit-learn's
8x8 digits (shipped with scikit-learn).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantbench.common.onnx_save import save_model
from quantbench.exporters.calibrate import (
    CalibrationConfig,
    adopted_ranges,
    calibrate,
    nonnegative_tensors,
)
from tests.exporters.test_calibrate_ranges import Reader

pytestmark = pytest.mark.ort_cpu


def _model(path: Path) -> Path:
    rng = np.random.default_rng(7)

    def w(name: str, *shape: int, scale: float = 0.4) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [w("w1", 8, 1, 3, 3), w("b1", 8), w("w2", 8, 8, 3, 3), w("b2", 8), w("w3", 16, 8, 1, 1), w("b3", 16),
             w("ws", 16, 8, 1, 1), w("bs", 16), w("wg", 10, 16), w("bg", 10),
             numpy_helper.from_array(np.array(0, np.float32), "lo"),
             numpy_helper.from_array(np.array(6, np.float32), "hi")]
    node = helper.make_node
    nodes = [node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             node("Relu", ["c1"], ["r1"], name="relu1"),
             node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             node("Clip", ["c2", "lo", "hi"], ["k2"], name="relu6"),
             node("Conv", ["k2", "w3", "b3"], ["c3"], name="conv3"),
             node("Conv", ["r1", "ws", "bs"], ["s"], name="shortcut"),
             node("Add", ["c3", "s"], ["a"], name="add"),
             node("Relu", ["a"], ["ra"], name="relu_a"),
             node("Relu", ["ra"], ["rb"], name="relu_b"),
             node("MaxPool", ["rb"], ["m"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             node("GlobalAveragePool", ["m"], ["g"], name="gap"),
             node("Flatten", ["g"], ["f"], name="flatten"),
             node("Gemm", ["f", "wg", "bg"], ["logits"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _digits(n: int = 40) -> np.ndarray:
    from sklearn.datasets import load_digits

    x = load_digits().images[:n].astype(np.float32) / 16.0
    return ((x - 0.3) / 0.4)[:, None]  # normalised as a data set would be: signed inputs


def _qdq_params(path: Path) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The QDQ model's node op types in order and each Q/DQ node's (scale, zero point) by its input tensor."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    params = {n.name: (inits[n.input[1]], inits[n.input[2]]) for n in model.graph.node
              if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[1] in inits}
    return [n.op_type for n in model.graph.node], params


@pytest.mark.parametrize("extra", [{}, {"per_channel": False}, {"exclude_nodes": ("relu1", "relu6")},
                                   {"op_types": ("Conv",)}, {"op_types": ("Conv", "Relu", "Add")},
                                   {"symmetric_activation": True, "activation_type": "QInt8"}],
                         ids=["default", "per-tensor", "relus-excluded", "conv-only", "conv-relu-add", "symmetric"])
def test_optimised_minmax_quantizes_as_orts_calibrators_ranges(tmp_path, extra):
    """Every Q/DQ node gets the zero point and (to float32's last bits) the scale of the unoptimised calibration,
    and the graphs have the same nodes: the shortcut only skips ranges ORT's quantizer would replace."""
    from quantbench.exporters.quantize import QuantSettings, quantize_qdq

    model = _model(tmp_path / "m.onnx")
    x = _digits()
    built = {}
    for graph in ("unoptimised", "optimised"):
        out = tmp_path / f"{graph}.onnx"
        quantize_qdq(model, out, QuantSettings(calibration="minmax", calib_graph=graph, **extra), Reader([x]))
        built[graph] = _qdq_params(out)
    assert_same_qdq(built)


def assert_same_qdq(built: dict[str, tuple[list[str], dict]]) -> None:
    """The "unoptimised" and "optimised" models of ``built`` (:func:`_qdq_params`): the same nodes and zero points,
    scales to float32's last bits."""
    (ops_u, params_u), (ops_o, params_o) = built["unoptimised"], built["optimised"]
    assert ops_u == ops_o
    assert params_u.keys() == params_o.keys() and params_u
    for name, (scale, zero) in params_u.items():
        np.testing.assert_array_equal(params_o[name][1], zero, err_msg=name)
        np.testing.assert_allclose(params_o[name][0], scale, rtol=1e-5, err_msg=name)


def _config(**kw) -> CalibrationConfig:
    from quantbench.exporters.quantize import QuantSettings, calibration_config

    return calibration_config(QuantSettings(calibration="minmax", **kw))


def test_adopted_ranges_are_those_orts_quantizer_replaces(tmp_path):
    """A Relu/Clip's sole input takes its output's range; not where that node stays float, where activations are
    quantized symmetrically, where the node's op type is not quantized, nor along a Relu -> Relu chain."""
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    from quantbench.exporters.calibrate import tensors_to_calibrate

    model = load_model_with_shape_infer(_model(tmp_path / "m.onnx"))

    def adopted(**kw) -> dict[str, str]:
        config = _config(**kw)
        return adopted_ranges(model, tensors_to_calibrate(model, config.op_types)[0], config)

    # r1 is read twice (not a Relu's sole input: c1 -> r1 still qualifies, r1 itself is not adopted); a -> ra -> rb
    # is a chain (ORT adjusts ra before rb is known)
    assert adopted() == {"c1": "r1", "c2": "k2"}
    assert adopted(exclude_nodes=("relu1",)) == {"c2": "k2"}
    assert adopted(symmetric_activation=True) == {}
    assert adopted(op_types=("Conv",)) == {}
    # Percentile's range is symmetric by default, its activations are not: ORT's quantizer still adjusts
    from quantbench.exporters.quantize import QuantSettings, calibration_config

    config = calibration_config(QuantSettings(calibration="percentile"))
    assert config.symmetric and not config.activation_symmetric
    assert adopted_ranges(model, tensors_to_calibrate(model, config.op_types)[0], config) == {"c1": "r1", "c2": "k2"}


def test_nonnegative_tensors(tmp_path):
    model = onnx.load(str(_model(tmp_path / "m.onnx")))
    assert nonnegative_tensors(model) == {"r1", "k2", "ra", "rb", "m", "g", "f"}
    for init in model.graph.initializer:
        if init.name == "lo":
            init.CopyFrom(numpy_helper.from_array(np.array(-1, np.float32), "lo"))
    assert "k2" not in nonnegative_tensors(model)


def test_optimised_ranges_of_probed_tensors_match_and_adopted_take_their_outputs(tmp_path):
    """Probed tensors' ranges are the unoptimised calibration's to float32's last bits (a tensor >= 0 reports 0 as
    its minimum: the quantizer widens every range to hold 0); an adopted input has its Relu/Clip's range."""
    model = _model(tmp_path / "m.onnx")
    x = _digits()
    ranges = {}
    for graph in ("unoptimised", "optimised"):
        result = calibrate(model, _config(calib_graph=graph), Reader([x]), tmp_path, floor=False)
        ranges[graph] = {t: tuple(float(v) for v in result.ranges[t].range_value) for t in result.ranges}
    exact, fast = ranges["unoptimised"], ranges["optimised"]
    assert exact.keys() == fast.keys()
    assert fast["c1"] == fast["r1"] and fast["c2"] == fast["k2"]
    assert exact["c1"][0] < 0  # the shortcut did change what is recorded for c1
    for t in ("x", "s", "c3", "a", "ra", "rb", "m", "g", "f", "logits", "r1", "k2"):
        low = min(exact[t][0], 0.0)  # what the quantizer takes
        assert fast[t][0] == pytest.approx(low, rel=1e-5, abs=1e-7), t
        assert fast[t][1] == pytest.approx(exact[t][1], rel=1e-5), t


def test_optimised_ranges_do_not_depend_on_batching_or_threads(tmp_path):
    """Incidental knobs: how the reader batches and how many threads ORT uses leave every range bit-equal."""
    model = _model(tmp_path / "m.onnx")
    x = _digits()
    runs = []
    for batches, threads in (([x], 1), ([x[:3], x[3:17], x[17:]], 2), ([x[i:i + 1] for i in range(len(x))], 3)):
        config = CalibrationConfig("minmax", op_types=_config().op_types, graph="optimised", threads=threads)
        result = calibrate(model, config, Reader(batches), tmp_path, floor=False)
        runs.append({t: tuple(np.float32(v) for v in result.ranges[t].range_value) for t in result.ranges})
    assert runs[0] == runs[1] == runs[2]


def test_optimised_calibration_measures_its_floor(tmp_path):
    result = calibrate(_model(tmp_path / "m.onnx"), _config(), Reader([_digits()]), tmp_path)
    assert result.floor_s and result.floor_probes > 0
    assert result.time_ratio == pytest.approx(result.time_s / result.floor_s)


def test_calib_graph_setting():
    from quantbench.exporters.quantize import QuantSettings

    assert QuantSettings().to_dict()["calib_graph"] == "optimised"  # the default
    assert QuantSettings().effective_calib_graph == "optimised"
    # absent where the unoptimised graph runs (as in rows from before the key): their fingerprints hold
    assert "calib_graph" not in QuantSettings(calib_graph="unoptimised").to_dict()
    assert QuantSettings(calibration="entropy").to_dict()["calib_graph"] == "optimised"  # every method's default
    assert "calib_graph" not in QuantSettings(calibration="entropy", calib_graph="unoptimised").to_dict()
    assert "calib_graph" not in QuantSettings(mode="dynamic").to_dict()
    assert _config(calib_graph="unoptimised").graph == "unoptimised"
    assert _config(exclude_nodes=("relu1",)).exclude_nodes == ("relu1",)
    assert QuantSettings(calibration="entropy", calib_graph="optimised").to_dict()["calib_graph"] == "optimised"
    with pytest.raises(ValueError, match="calib_graph must be one of optimised, unoptimised"):
        QuantSettings(calib_graph="fast")
    with pytest.raises(ValueError, match="does not apply to mode = 'dynamic'"):
        QuantSettings(mode="dynamic", calib_graph="optimised")


HISTOGRAMS = [("entropy", {}), ("entropy", {"exclude_nodes": ("relu1", "relu6")}), ("distribution", {}),
              ("percentile", {}), ("percentile", {"symmetric_activation": True, "activation_type": "QInt8"}),
              ("mse", {}), ("entropy", {"op_types": ("Conv",)})]


@pytest.mark.parametrize("method, extra", HISTOGRAMS, ids=["entropy", "entropy-relus-excluded", "distribution",
                                                            "percentile", "percentile-symmetric", "mse", "conv-only"])
def test_optimised_histograms_quantize_as_orts_calibrators_ranges(tmp_path, method, extra):
    """Both passes on the optimised graph (adopted tensors neither probed nor binned): the same QDQ model as the
    unoptimised calibration, whose thresholds are ORT's calibrators' bit for bit."""
    from quantbench.exporters.quantize import QuantSettings, quantize_qdq

    model = _model(tmp_path / "m.onnx")
    x = _digits(120)
    built = {}
    for graph in ("unoptimised", "optimised"):
        out = tmp_path / f"{graph}.onnx"
        quantize_qdq(model, out, QuantSettings(calibration=method, calib_graph=graph, **extra), Reader([x]))
        built[graph] = _qdq_params(out)
    assert_same_qdq(built)


@pytest.mark.parametrize("graph", ["optimised", "unoptimised"])
def test_histogram_thresholds_do_not_depend_on_batching_threads_or_numba(tmp_path, monkeypatch, graph):
    """Incidental knobs: the reader's batches, ORT's threads and whether numba or numpy counts the bins leave every
    threshold bit-equal."""
    from quantbench.exporters import calibrate as cal
    from quantbench.exporters import compiled_binning

    model = _model(tmp_path / "m.onnx")
    x = _digits()
    kernel, count = compiled_binning._kernel, compiled_binning.count
    calls = []
    monkeypatch.setattr(compiled_binning, "count", lambda *a, **k: calls.append(1) or count(*a, **k))
    runs = []
    for batches, threads, compiled in (([x], 1, True), ([x[:3], x[3:17], x[17:]], 2, False),
                                       ([x[i:i + 1] for i in range(len(x))], 3, None)):
        # True: numba counts even this small model's values; False: numba absent; None: the size rule (numpy here)
        monkeypatch.setattr(compiled_binning, "_kernel", kernel if compiled is not False else (lambda: None))
        monkeypatch.setattr(cal, "COMPILED_MIN_VALUES", 0 if compiled else 200_000_000)
        calls.clear()
        config = CalibrationConfig("entropy", num_bins=512, op_types=_config().op_types, graph=graph, threads=threads)
        result = calibrate(model, config, Reader(batches), tmp_path, floor=False)
        assert bool(calls) == (compiled is True and compiled_binning.available())
        runs.append({t: tuple(np.float32(v) for v in result.ranges[t].range_value) for t in result.ranges})
    assert runs[0] == runs[1] == runs[2]


def _op_then_conv(path: Path, op: str, constant: float, activation: str, out: str, w: np.ndarray) -> Path:
    """x -> ``op``(x, ``constant``) -> ``activation`` (output ``out``) -> Conv with weights ``w`` -> y."""
    channels = w.shape[0]
    inits = [numpy_helper.from_array(np.array(constant, np.float32), "k"), numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.zeros(channels, np.float32), "b")]
    node = helper.make_node
    nodes = [node(op, ["x", "k"], ["pre"], name="first"), node(activation, ["pre"], [out], name="act"),
             node("Conv", [out, "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", channels, 8, 8])], inits)
    save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _shifted_relu_model(path: Path) -> Path:
    """x + 5 -> Relu -> Conv: the Relu's output is >= 0 by construction but never 0 on data in [-1, 1]."""
    w = (np.random.default_rng(3).standard_normal((4, 1, 3, 3)) * 0.3).astype(np.float32)
    return _op_then_conv(path, "Add", 5, "Relu", "r", w)


def _shifted_relu_bin_passes(tmp_path, monkeypatch, method: str,
                             symmetric: bool) -> tuple[list[list[str]], dict[str, dict[str, tuple]]]:
    """Calibrate :func:`_shifted_relu_model` on each graph: (the tensors each of the optimised graph's pass-2 runs
    binned, each graph's ranges)."""
    from quantbench.exporters import calibrate as cal

    model = _shifted_relu_model(tmp_path / "m.onnx")
    x = np.clip(_digits(60), -1, 1)
    passes: list[list[str]] = []
    bin_pass = cal._bin_pass
    monkeypatch.setattr(cal, "_bin_pass", lambda *a, **k: passes.append(a[1]) or bin_pass(*a, **k))
    ranges = {}
    for graph in ("unoptimised", "optimised"):
        passes.clear()
        config = CalibrationConfig(method, symmetric=symmetric, num_bins=256, percentile=99.9, graph=graph)
        result = calibrate(model, config, Reader([x]), tmp_path, floor=False)
        ranges[graph] = {t: tuple(np.float32(v) for v in result.ranges[t].range_value) for t in result.ranges}
    return passes, ranges


@pytest.mark.parametrize("method, symmetric", [("mse", False), ("percentile", True)])
def test_a_nonnegative_tensor_without_zeros_is_binned_over_its_true_range(tmp_path, monkeypatch, method, symmetric):
    """Pass 1 takes a GlobalMaxPool-probed tensor's minimum as 0; where bins start at the minimum (mse's [min, max],
    Percentile's |x|) pass 2 finds the true one and bins that tensor again: the unoptimised graph's thresholds."""
    passes, ranges = _shifted_relu_bin_passes(tmp_path, monkeypatch, method, symmetric)
    assert passes[-1] == ["r"], "the optimised graph bins the Relu's output again over its true range"
    assert ranges["optimised"]["r"] == ranges["unoptimised"]["r"]
    assert ranges["optimised"]["r"][0] > 0 if method == "mse" else True


def _saturated_sigmoid_model(path: Path) -> Path:
    """Sigmoid(x * 1e-7) -> Conv: the Sigmoid's outputs span a few float32 values around 0.5."""
    return _op_then_conv(path, "Mul", 1e-7, "Sigmoid", "s", np.full((2, 1, 3, 3), 0.1, np.float32))


@pytest.mark.parametrize("graph", ["optimised", "optimised-read-out", "unoptimised"])
@pytest.mark.parametrize("method, symmetric", [("mse", False), ("percentile", True)])  # bins over [min, max], |x|
def test_a_range_too_narrow_for_its_bins_takes_its_min_and_max_with_a_note(tmp_path, monkeypatch, graph, method,
                                                                            symmetric):
    """numpy.histogram (hence ORT's calibrators) refuses 2048 bins over a range of a few float32 values; such a
    tensor gets its exact min and max (MinMax's range) and the row a note naming it, instead of numpy's bare error.
    Read out, pass 2 counts the others from pass 1's outputs, the narrow one among them: the same thresholds."""
    from quantbench.exporters import calibrate as cal

    if graph.endswith("read-out"):
        pytest.importorskip("numba")
        monkeypatch.setattr(cal, "COMPILED_MIN_VALUES", 0)
        graph = "optimised"
    model = _saturated_sigmoid_model(tmp_path / "m.onnx")
    x = _digits(30)
    config = CalibrationConfig(method, symmetric=symmetric, num_bins=2048, percentile=99.99, graph=graph)
    result = calibrate(model, config, Reader([x]), tmp_path, floor=False)
    minmax = calibrate(model, CalibrationConfig("minmax", graph="unoptimised"), Reader([x]), tmp_path, floor=False)
    assert tuple(result.ranges["s"].range_value) == tuple(minmax.ranges["s"].range_value)
    low, high = (float(v) for v in result.ranges["s"].range_value)
    assert 0.49 < low < high <= 0.51
    assert len(result.notes) == 1 and "'s'" in result.notes[0] and "2048 bins" in result.notes[0]
    assert tuple(result.ranges["y"].range_value) != tuple(minmax.ranges["y"].range_value)  # the others: binned
    monkeypatch.setattr(cal, "COMPILED_MIN_VALUES", 10 ** 18)  # pass 1 probed in the graph, pass 2 its own model
    again = calibrate(model, config, Reader([x]), tmp_path, floor=False)
    assert {t: tuple(r.range_value) for t, r in again.ranges.items()} == {t: tuple(r.range_value)
                                                                          for t, r in result.ranges.items()}


ALL_METHODS = [("entropy", False), ("distribution", False), ("percentile", True), ("percentile", False),
               ("mse", False)]
METHOD_IDS = [f"{m}-{'sym' if s else 'asym'}" for m, s in ALL_METHODS]


def _ranges_by_pass_one(tmp_path, monkeypatch, model: Path, x: np.ndarray, method: str, symmetric: bool,
                        bins: int = 512) -> dict[str, dict[str, tuple]]:
    """Each tensor's range with pass 1 read out to numba and with pass 1 reduced in ORT's graph (probes); asserts
    the path each run took."""
    from quantbench.exporters import calibrate as cal

    taken = []
    for name in ("_read_out_pass", "_probe_pass"):
        real = getattr(cal, name)
        monkeypatch.setattr(cal, name, lambda *a, _real=real, _name=name, **k: taken.append(_name) or _real(*a, **k))
    monkeypatch.setattr(cal, "COMPILED_MIN_VALUES", 0)  # numba even for this small model's values
    out = {}
    for how, read_out in (("read-out", True), ("probes", False)):
        monkeypatch.setattr(cal, "READ_OUT", read_out)
        taken.clear()
        config = CalibrationConfig(method, symmetric=symmetric, num_bins=bins, percentile=99.9, graph="optimised",
                                   op_types=_config().op_types)
        result = calibrate(model, config, Reader([x]), tmp_path, floor=False)
        assert taken == ["_read_out_pass" if read_out else "_probe_pass"]
        out[how] = {t: tuple(np.float32(v) for v in result.ranges[t].range_value) for t in result.ranges}
    return out


@pytest.mark.numba
@pytest.mark.parametrize("method, symmetric", ALL_METHODS, ids=METHOD_IDS)
def test_pass_one_read_out_or_reduced_in_the_graph_gives_the_same_ranges(tmp_path, monkeypatch, method, symmetric):
    """Whether pass 1 reads every tensor out to numba (one read for min, max and min |x|) or ORT reduces each in the
    graph is an incidental knob: every range is bit-equal, for every histogram method (MinMax always reduces in the
    graph), on a network whose tensors >= 0 all hold a 0 (the next tests: one that does not)."""
    pytest.importorskip("numba")
    ranges = _ranges_by_pass_one(tmp_path, monkeypatch, _model(tmp_path / "m.onnx"), _digits(), method, symmetric)
    assert ranges["read-out"] == ranges["probes"]
    assert len(ranges["probes"]) >= 10


@pytest.mark.numba
@pytest.mark.parametrize("method, symmetric", [("mse", False), ("percentile", True)])
def test_read_out_pass_one_knows_a_nonnegative_tensors_true_minimum_and_bins_once(tmp_path, monkeypatch, method,
                                                                                   symmetric):
    """Read out, pass 1 measures the minimum of a Relu's output that is never 0 (a probe would take it as 0), so
    pass 2 bins it once, over its true range: the unoptimised graph's thresholds."""
    pytest.importorskip("numba")
    from quantbench.exporters import calibrate as cal

    monkeypatch.setattr(cal, "COMPILED_MIN_VALUES", 0)
    passes, ranges = _shifted_relu_bin_passes(tmp_path, monkeypatch, method, symmetric)
    assert len(passes) == 1 and "r" in passes[0]
    assert ranges["optimised"]["r"] == ranges["unoptimised"]["r"]
    assert ranges["optimised"] == ranges["unoptimised"] if method == "percentile" else True


def test_minmax_reduces_in_the_graph_even_where_numba_would_repay(tmp_path, monkeypatch):
    """MinMax has no pass 2 to share pass 1's session with: its pass 1 keeps ORT's in-graph reductions."""
    from quantbench.exporters import calibrate as cal

    taken = []
    for name in ("_read_out_pass", "_probe_pass"):
        real = getattr(cal, name)
        monkeypatch.setattr(cal, name, lambda *a, _real=real, _name=name, **k: taken.append(_name) or _real(*a, **k))
    monkeypatch.setattr(cal, "COMPILED_MIN_VALUES", 0)
    calibrate(_model(tmp_path / "m.onnx"), CalibrationConfig("minmax", graph="optimised"), Reader([_digits()]),
              tmp_path, floor=False)
    assert taken == ["_probe_pass"]


def test_a_small_histogram_calibration_does_not_import_numba(tmp_path):
    """Below COMPILED_MIN_VALUES numba's start (0.2-0.3 s, 60 MB) would cost more than it saves: neither pass
    imports it (a fresh process, so nothing else has)."""
    import subprocess
    import sys

    model = _model(tmp_path / "m.onnx")
    script = ("import sys, numpy as np\n"
              "from pathlib import Path\n"
              "from quantbench.exporters.calibrate import CalibrationConfig, calibrate\n"
              "from tests.exporters.test_calibrate_ranges import Reader\n"
              "class Known(Reader):\n"
              "    indices = range(40)\n"
              "x = np.random.default_rng(0).standard_normal((40, 1, 8, 8)).astype(np.float32)\n"
              f"calibrate(Path({str(model)!r}), CalibrationConfig('percentile', symmetric=True, num_bins=512, "
              f"graph='optimised'), Known([x]), Path({str(tmp_path)!r}), floor=False)\n"
              "print('numba' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout
    assert out.strip().splitlines()[-1] == "False"


@pytest.mark.numba
def test_read_out_gives_a_nonnegative_tensor_its_true_minimum_and_the_same_quantized_model(tmp_path, monkeypatch):
    """Entropy's threshold stops at the tensor's minimum: the in-graph probes take a tensor >= 0 to start at 0,
    read out its range starts at its true minimum, as the unoptimised graph's (ORT's calibrators'). Every quantizer
    widens a range to hold 0, so the quantized models are the same to the last bit."""
    method = "entropy"
    pytest.importorskip("numba")
    from quantbench.exporters import calibrate as cal
    from quantbench.exporters.quantize import QuantSettings, quantize_qdq

    model = _shifted_relu_model(tmp_path / "m.onnx")
    x = np.clip(_digits(60), -1, 1)
    ranges = _ranges_by_pass_one(tmp_path, monkeypatch, model, x, method, False, bins=512)
    unoptimised = calibrate(model, CalibrationConfig(method, num_bins=512, graph="unoptimised",
                                                     op_types=_config().op_types), Reader([x]), tmp_path, floor=False)
    assert ranges["probes"]["r"][0] == 0 < ranges["read-out"]["r"][0]
    assert ranges["read-out"]["r"] == tuple(np.float32(v) for v in unoptimised.ranges["r"].range_value)
    assert ranges["read-out"]["pre"] == ranges["read-out"]["r"]  # the Relu's input takes its range (adopted)
    others = set(ranges["probes"]) - {"r", "pre"}
    assert others and all(ranges["read-out"][t] == ranges["probes"][t] for t in others)
    built = {}
    for how, read_out in (("read-out", True), ("probes", False)):
        monkeypatch.setattr(cal, "READ_OUT", read_out)
        out = tmp_path / f"{how}.onnx"
        quantize_qdq(model, out, QuantSettings(calibration=method, num_bins=512), Reader([x]))
        built[how] = _qdq_params(out)
    assert built["read-out"][0] == built["probes"][0]
    assert {k: (s.tobytes(), z.tobytes()) for k, (s, z) in built["read-out"][1].items()} == \
        {k: (s.tobytes(), z.tobytes()) for k, (s, z) in built["probes"][1].items()}
