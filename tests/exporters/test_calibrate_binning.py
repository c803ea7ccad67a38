"""Pass 2 bins activations in numpy exactly as ``numpy.histogram`` (hence ORT's calibrators) does, and the
pipelined passes see each sample's own activations."""
from __future__ import annotations

import threading
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantbench.common.onnx_save import save_model, with_lowest_ir_version
from quantbench.exporters import calibrate as cal
from quantbench.exporters.calibrate import CalibrationConfig, calibrate

pytestmark = pytest.mark.ort_cpu


def _probe_values(edges: np.ndarray, rng: np.random.Generator, size: int = 3000) -> np.ndarray:
    """Every edge, one float32 step either side of it, and random values, all inside [first, last] edge."""
    lo, hi = edges[0], edges[-1]
    up, down = np.nextafter(edges, np.float32(np.inf)), np.nextafter(edges, np.float32(-np.inf))
    x = np.concatenate([edges, up, down, rng.uniform(lo, hi, size).astype(np.float32), [lo, hi, 0.0, -0.0]])
    return x[(x >= lo) & (x <= hi)].astype(np.float32)


@pytest.fixture(params=[pytest.param("compiled", marks=pytest.mark.numba), "numpy"])
def counter(request, monkeypatch) -> str:
    """Each binning test runs with numba's kernel and with numpy's counting (numba absent): the same counts."""
    from quantbench.exporters import compiled_binning

    if request.param == "numpy":
        monkeypatch.setattr(compiled_binning, "_kernel", lambda: None)
    return request.param


def _counts(x: np.ndarray, low: float, high: float, bins: int, absolute: bool = False) -> tuple[np.ndarray, bool]:
    hists = cal._Histograms({"x": (np.float32(low), np.float32(high))}, bins, absolute)
    from quantbench.exporters.compiled_binning import available

    assert hists.compiled == available()
    for part in np.array_split(x, 3):  # several calls add up
        hists.add_values("x", part)
    return hists.counts["x"], hists.fast["x"] is not None


@pytest.mark.parametrize("bins, low, high", [
    (2048, -3.7, 11.25), (512, -0.001, 0.001), (7, 0.0, 1.0), (2048, 0.013, 5.5), (512, -6.5, 6.5),
    (128, 2.0, 2.0),  # an empty range: numpy widens it to +-0.5
    (65535, -1.0, 3.0), (3, -1e-30, 1e-30), (2048, -1e4, 1e4),
])
@pytest.mark.usefixtures("counter")
def test_counts_equal_numpy_histogram_on_every_edge(bins, low, high):
    edges = np.histogram_bin_edges(np.zeros(0, np.float32), bins, range=(np.float32(low), np.float32(high)))
    x = _probe_values(edges, np.random.default_rng(bins))
    ref, ref_edges = np.histogram(x, bins, range=(np.float32(low), np.float32(high)))
    counts, fast = _counts(x, low, high, bins)
    np.testing.assert_array_equal(counts, ref)
    assert fast, "ordinary ranges take the checked float32 estimate"


@pytest.mark.usefixtures("counter")
def test_counts_equal_numpy_histogram_over_random_ranges():
    """Ranges and bin counts drawn at random (wide, narrow, off-centre, huge and tiny magnitudes)."""
    rng = np.random.default_rng(7)
    for _ in range(150):
        bins = int(rng.choice([2, 3, 7, 128, 512, 2048, 4099]))
        scale = 10.0 ** rng.uniform(-42, 37)
        low = np.float32(rng.uniform(-2, 1) * scale)
        high = np.float32(low + abs(rng.uniform(0.01, 3)) * scale)
        try:
            edges = np.histogram_bin_edges(np.zeros(0, np.float32), bins, range=(low, high))
        except ValueError:  # more bins than float32 values in the range: numpy (and ORT's calibrators) refuse
            continue
        x = _probe_values(edges, rng, 500)
        counts, _ = _counts(x, low, high, bins)
        ref = np.histogram(x, bins, range=(low, high))[0]
        np.testing.assert_array_equal(counts, ref, err_msg=f"{bins} {low} {high}")


@pytest.mark.parametrize("bins, low, high", [(2048, -1e-38, 1e-38), (128, -1.9718134e-36, -1.9692775e-36),
                                             (7, -5.4e-40, 1.87e-39), (4096, -7.7e-41, -4.2e-41)])
@pytest.mark.usefixtures("counter")
def test_tiny_ranges_fall_back_to_numpys_own_binning(bins, low, high):
    """Where the float32 estimate cannot be trusted (subnormal steps, a scale that overflows), numpy.histogram
    itself counts: the same counts."""
    edges = np.histogram_bin_edges(np.zeros(0, np.float32), bins, range=(np.float32(low), np.float32(high)))
    x = _probe_values(edges, np.random.default_rng(1))
    counts, fast = _counts(x, low, high, bins)
    np.testing.assert_array_equal(counts, np.histogram(x, bins, range=(np.float32(low), np.float32(high)))[0])
    assert not fast


@pytest.mark.usefixtures("counter")
def test_absolute_values_are_binned_over_their_own_range():
    x = np.random.default_rng(3).standard_normal(10000).astype(np.float32)
    a = np.abs(x)
    counts, _ = _counts(x, a.min(), a.max(), 2048, absolute=True)
    np.testing.assert_array_equal(counts, np.histogram(a, 2048)[0])


@pytest.mark.usefixtures("counter")
def test_a_tensor_known_nonnegative_bins_as_its_absolute_values_and_alone_keeps_its_minimum():
    """|x| bins of a tensor >= 0 are x's (-0.0 shares 0's bin), counted without taking |x|; only such tensors'
    smallest values are read when the nonnegative ones are named."""
    rng = np.random.default_rng(8)
    x = np.maximum(rng.standard_normal(9000), 0).astype(np.float32)
    x[::7] = np.float32(-0.0)
    y = rng.standard_normal(9000).astype(np.float32)
    top = np.float32(max(x.max(), np.abs(y).max()))
    ranges = {"x": (np.float32(0), top), "y": (np.float32(np.abs(y).min()), top)}
    named = cal._Histograms(ranges, 2048, True, nonnegative={"x"})
    plain = cal._Histograms(ranges, 2048, True)
    for hists in (named, plain):
        hists.add_values("x", x)
        hists.add_values("y", y)
    for t, values in (("x", np.abs(x)), ("y", np.abs(y))):
        expected = np.histogram(values, 2048, range=(ranges[t][0], top))[0]
        np.testing.assert_array_equal(named.counts[t], expected)
        np.testing.assert_array_equal(plain.counts[t], expected)
    assert named.minimum["x"] == plain.minimum["x"] == 0.0
    assert plain.minimum["y"] == np.abs(y).min()


@pytest.mark.parametrize("bad", [np.float32(-1.5), np.float32(1.0000001), np.float32(np.nan), np.float32(np.inf)])
@pytest.mark.usefixtures("counter")
def test_a_value_outside_the_pass_1_range_is_an_error(bad):
    hists = cal._Histograms({"x": (np.float32(-1), np.float32(1))}, 512, False)
    x = np.linspace(-1, 1, 1000, dtype=np.float32)
    x[500] = bad
    with pytest.raises(ValueError, match="left the range measured in pass 1"):
        hists.add_values("x", x)


def _conv_relu_model(path, width=None):
    """x -> Conv(3x3, 4 ch) -> Relu -> Conv(1x1) with a dynamic width when ``width`` is None."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((2, 4, 1, 1)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
             helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, width or "W"])
    graph = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    save_model(with_lowest_ir_version(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])), path)
    return path


class _Reader:
    def __init__(self, samples):
        self.samples, self.i = samples, 0

    def rewind(self):
        self.i = 0

    def get_next(self):
        if self.i >= len(self.samples):
            return None
        self.i += 1
        return {"x": self.samples[self.i - 1]}


def _direct(model_path, samples, tensors):
    """Each tensor's values on every sample from a plain ORT session (one sample per run)."""
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    del model.graph.output[:]
    model.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in tensors if t != "x")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    values = {t: [] for t in tensors}
    for s in samples:
        for i in range(len(s)):
            out = dict(zip(names, sess.run(None, {"x": s[i:i + 1]}), strict=True))
            out["x"] = s[i:i + 1]
            for t in tensors:
                values[t].append(out[t].reshape(-1))
    return {t: np.concatenate(v) for t, v in values.items()}


@pytest.mark.parametrize("beside", [True, False], ids=["counting-beside-forward", "counting-after-forward"])
def test_slow_consumer_still_reads_each_samples_own_activations(tmp_path, monkeypatch, beside):
    """ORT writes the next sample while numpy reads the last (where cores are free): a consumer slower than ORT must
    not see a buffer being overwritten. Pass 2 sees every sample's own values (their max per tensor equals a plain
    session's, sample by sample), in a worker thread, and the thresholds equal a fast consumer's, counting beside
    the forward passes or after each."""
    monkeypatch.setattr(cal, "counting_beside_forward", lambda threads: beside)
    model = _conv_relu_model(tmp_path / "m.onnx", width=8)
    rng = np.random.default_rng(5)
    samples = [rng.standard_normal((3, 1, 8, 8)).astype(np.float32) * (k + 1) for k in range(4)]
    config = CalibrationConfig("entropy", num_bins=128, op_types=("Conv", "Relu"))
    (tmp_path / "fast").mkdir()
    fast = calibrate(model, config, _Reader(samples), tmp_path / "fast")
    seen: list[tuple[str, float]] = []
    add = cal._Histograms.add_values
    consumers = set()

    def slow_add(self, name, values):
        consumers.add(threading.get_ident())
        time.sleep(0.002)
        seen.append((name, float(values.max())))
        add(self, name, values)

    monkeypatch.setattr(cal._Histograms, "add_values", slow_add)
    slow = calibrate(model, config, _Reader(samples), tmp_path)
    tensors = sorted(slow.ranges)
    values = _direct(model, samples, tensors)
    per_sample = {t: np.split(values[t], 12) for t in tensors}
    binned = sorted({name for name, _ in seen})  # a Relu's histogram may follow from its input's
    assert set(binned) <= set(tensors) and "c1" in binned
    k = len(binned)  # a sample's tensors (binned by two threads, in any order), then the next sample's
    assert [sorted(seen[i * k:(i + 1) * k]) for i in range(12)] == \
        [sorted((t, float(per_sample[t][i].max())) for t in binned) for i in range(12)]
    assert threading.get_ident() not in consumers  # numpy read them beside ORT, in workers
    for t in tensors:
        assert [float(v) for v in slow.ranges[t].range_value] == [float(v) for v in fast.ranges[t].range_value]


@pytest.mark.parametrize("method", ["entropy", "mse", "percentile"])
def test_inputs_of_changing_shape_are_calibrated_whole(tmp_path, method):
    """Samples of two widths (buffers re-learnt per input shape): the histogram thresholds equal those of
    the same samples fed in another order and batching."""
    model = _conv_relu_model(tmp_path / "m.onnx")
    rng = np.random.default_rng(2)
    a = [rng.standard_normal((2, 1, 8, 8)).astype(np.float32), rng.standard_normal((2, 1, 8, 5)).astype(np.float32),
         rng.standard_normal((3, 1, 8, 8)).astype(np.float32)]
    b = [a[2][2:], a[1], a[0], a[2][:2]]
    config = CalibrationConfig(method, num_bins=256, percentile=99.9 if method == "percentile" else None,
                               symmetric=method == "percentile", op_types=("Conv", "Relu"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ra = calibrate(model, config, _Reader(a), tmp_path / "a")
    rb = calibrate(model, config, _Reader(b), tmp_path / "b")
    assert ra.samples == rb.samples == 7
    for t in ra.ranges:
        assert [float(v) for v in ra.ranges[t].range_value] == [float(v) for v in rb.ranges[t].range_value], t


def test_histograms_equal_the_in_graph_bin_models_on_real_data(tmp_path):
    """Before vs after on real images: the numpy binning of each calibrated tensor of the shipped CNN on
    Fashion-MNIST equals the counts of the ORT bin model the previous pass 2 ran, and numpy.histogram's."""
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    from quantbench.calibration_data import BatchReader, Preprocess, open_source
    from quantbench.exporters.registry import ASSETS, resolve_model

    model_path = ASSETS / "fashion_cnn.onnx"
    split = open_source("fashion-mnist").calibration
    reader = BatchReader(split, Preprocess.from_dict(resolve_model("fashion_cnn").preprocess),
                         split.select(64, seed=0), 16, "input")
    model = load_model_with_shape_infer(model_path)
    tensors, _ = cal.tensors_to_calibrate(model, None)
    outputs = cal.write_activation_model(model, tensors, {"input"}, tmp_path / "acts.onnx")
    runs = cal._ActivationRuns(tmp_path / "acts.onnx", outputs, 0)
    values = {t: [] for t in tensors}
    for feed in cal.one_sample_feeds(reader):
        arrays, _ = runs.run(feed)
        for t, v in zip(tensors, arrays, strict=True):
            values[t].append(v.copy())
    values = {t: np.concatenate(v) for t, v in values.items()}
    for absolute, bins in ((False, 2048), (True, 2048), (False, 512)):
        data = {t: np.abs(v) if absolute else v for t, v in values.items()}
        if absolute:
            ranges = {t: (v.min(), v.max()) for t, v in data.items()}
        else:
            ranges = {t: (-np.abs(v).max(), np.abs(v).max()) for t, v in data.items()}
        ours = cal._Histograms(ranges, bins, absolute)
        theirs = cal._Histograms(ranges, bins, absolute)
        bin_outputs = cal.write_bin_model(onnx.load(str(model_path)), tensors, {"input"}, theirs,
                                          tmp_path / "bins.onnx")
        sess = cal.calibration_session(tmp_path / "bins.onnx", 0)  # unoptimised, as calibration runs it
        for feed in cal.one_sample_feeds(reader):
            for t, b in zip(tensors, sess.run(bin_outputs, feed), strict=True):
                theirs.add(t, b)
        for t in tensors:
            ours.add_values(t, values[t])
            np.testing.assert_array_equal(ours.counts[t], theirs.counts[t], err_msg=t)
            np.testing.assert_array_equal(ours.counts[t], np.histogram(data[t], bins, range=ranges[t])[0], err_msg=t)
        assert all(p is not None for p in ours.fast.values())


@pytest.mark.parametrize("low, high, bins", [(-2.5, 2.5, 512), (-1.0, 3.0, 7), (-0.3, 0.3, 2048), (0.0, 1.0, 64)])
def test_relu_histogram_follows_from_its_inputs(low, high, bins):
    """max(x, 0) binned over x's range: every negative value (those in 0's own bin too) counts in 0's bin."""
    rng = np.random.default_rng(bins)
    edges = np.histogram_bin_edges(np.zeros(0, np.float32), bins, range=(np.float32(low), np.float32(high)))
    x = np.concatenate([_probe_values(edges, rng), [0.0, -0.0, -1e-30, 1e-30]]).astype(np.float32)
    x = x[(x >= edges[0]) & (x <= edges[-1])]
    counts = np.histogram(x, bins, range=(edges[0], edges[-1]))[0]
    expected = np.histogram(np.maximum(x, np.float32(0)), bins, range=(edges[0], edges[-1]))[0]
    np.testing.assert_array_equal(cal.relu_counts(counts, edges), expected)


def test_only_relus_over_their_inputs_range_are_derived():
    f = np.float32
    r = {"y": (f(-2), f(2)), "r": (f(-2), f(2)), "r2": (f(-1), f(1)), "z": (f(1), f(2)), "rz": (f(1), f(2)),
         "rr": (f(-2), f(2))}
    relus = {"r": "y", "r2": "y", "rz": "z", "rr": "r", "gone": "y"}
    assert cal.relu_outputs_from_inputs(relus, r) == {"r": "y"}  # other range, 0 outside, a Relu's Relu, not calibrated


@pytest.mark.parametrize("method", ["entropy", "distribution", "percentile", "mse"])
def test_derived_relu_histograms_give_the_thresholds_of_binning_them(tmp_path, monkeypatch, method):
    """A net whose Relu output shares its input's range: the thresholds with the Relu's histogram derived
    equal those with it binned from its own values."""
    rng = np.random.default_rng(9)
    # conv1's output reaches further above 0 than below (a positive bias), so max|c1| = max|r1|
    inits = [numpy_helper.from_array(np.abs(rng.standard_normal((4, 1, 3, 3))).astype(np.float32), "w1"),
             numpy_helper.from_array(np.array([3.0, 2.0, 1.0, 2.5], np.float32), "b1")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]), helper.make_node("Mul", ["r1", "r1"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = tmp_path / "m.onnx"
    save_model(with_lowest_ir_version(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])), model)
    samples = [rng.standard_normal((4, 1, 8, 8)).astype(np.float32) for _ in range(3)]
    config = CalibrationConfig(method, num_bins=512, percentile=99.9 if method == "percentile" else None,
                               op_types=("Conv", "Relu", "Mul"))
    seen = []
    derive = cal.relu_outputs_from_inputs
    monkeypatch.setattr(cal, "relu_outputs_from_inputs", lambda *a: seen.append(derive(*a)) or seen[-1])
    (tmp_path / "d").mkdir()
    (tmp_path / "b").mkdir()
    derived = calibrate(model, config, _Reader(samples), tmp_path / "d")
    if method != "mse":
        assert seen[-1] == {"r1": "c1"}, "the test net should exercise the derivation"
    monkeypatch.setattr(cal, "relu_outputs_from_inputs", lambda *a: {})
    binned = calibrate(model, config, _Reader(samples), tmp_path / "b")
    for t in binned.ranges:
        assert [float(v) for v in derived.ranges[t].range_value] == [float(v) for v in binned.ranges[t].range_value], t


def test_binning_shares_are_balanced_and_cover_every_tensor():
    sizes = [802816, 100, 401408, 401408, 2048, 200704, 5]
    shares = cal._balanced_shares(sizes, 2)
    assert sorted(k for share in shares for k in share) == list(range(len(sizes)))
    totals = [sum(sizes[k] for k in share) for share in shares]
    assert max(totals) - min(totals) <= max(sizes) and cal._balanced_shares([7], 2) == [[0]]


def test_float16_activations_are_binned_as_pass_1_saw_them(tmp_path):
    """Float16 tensors reach numpy as float16 (a Cast to float32 in the graph let ORT skip the float16
    rounding of the Conv it runs in float32, so pass 2 saw values pass 1 never did). The thresholds are
    within one bin of ORT's own EntropyCalibrater's, which bins the float16 values with float16 edges."""
    import contextlib
    import io

    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array(rng.standard_normal((2, 1, 3, 3)).astype(np.float16), "w")]
    nodes = [helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16),
             helper.make_node("Conv", ["x16", "w"], ["c16"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c16"], ["r16"]),
             helper.make_node("Cast", ["r16"], ["y"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 6, 6])], inits)
    model = tmp_path / "m16.onnx"
    save_model(with_lowest_ir_version(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])), model)
    samples = [rng.standard_normal((1, 1, 6, 6)).astype(np.float32) for _ in range(6)]
    ours = calibrate(model, CalibrationConfig("entropy", num_bins=512, op_types=("Conv", "Relu")), _Reader(samples),
                     tmp_path)
    assert {"c16", "r16"} <= set(ours.ranges)
    calibrator = create_calibrator(model, ["Conv", "Relu"], augmented_model_path=str(tmp_path / "aug.onnx"),
                                   calibrate_method=CalibrationMethod.Entropy, extra_options={"num_bins": 512})
    with contextlib.redirect_stdout(io.StringIO()):
        calibrator.collect_data(_Reader(samples))
        ref = calibrator.compute_data()
    assert sorted(ours.ranges) == sorted(ref)
    for t in ref:
        width = 2 * max(abs(float(v)) for v in ours.ranges[t].range_value) / 512 + 1e-6
        for a, b in zip(ours.ranges[t].range_value, ref[t].range_value, strict=True):
            assert abs(float(a) - float(b)) <= 2 * width, t


def test_counting_goes_beside_the_forward_only_where_cores_are_free(monkeypatch):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    assert cal.counting_beside_forward(2)  # 2 ORT threads + 2 binning threads on 4 cores
    assert not cal.counting_beside_forward(3)
    assert not cal.counting_beside_forward(0)  # ORT's default: a thread per core
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert not cal.counting_beside_forward(2)


def test_without_pipelining_one_buffer_set_is_reused(tmp_path):
    model = _conv_relu_model(tmp_path / "m.onnx", width=8)
    outputs = cal.write_activation_model(onnx.load(str(model)), ["c1"], {"x"}, tmp_path / "acts.onnx")
    x = np.ones((1, 1, 8, 8), np.float32)
    for pipeline, sets in ((True, 2), (False, 1)):
        runs = cal._ActivationRuns(tmp_path / "acts.onnx", outputs, 0, pipeline=pipeline)
        slots = [runs.run({"x": x})[1] for _ in range(4)]
        assert len(runs.buffers) == sets and set(slots) == set(range(sets))
