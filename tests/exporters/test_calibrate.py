"""Calibration thresholds depend on the data and the method, not on batching, order or memory."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import onnx
import pytest

from quantbench.calibration_data import BatchReader, Preprocess, open_source
from quantbench.exporters.calibrate import (
    CalibrationConfig,
    calibrate,
    tensors_to_calibrate,
)
from quantbench.exporters.registry import ASSETS, resolve_model

pytestmark = pytest.mark.ort_cpu

MODEL = ASSETS / "fashion_cnn.onnx"
N = 256


@pytest.fixture(scope="module")
def data():
    source = resolve_model("fashion_cnn")
    split = open_source("fashion-mnist").calibration
    return split, Preprocess.from_dict(source.preprocess), split.select(N, seed=0)


def _run(data, tmp_path, config, batch, reverse=False):
    split, pre, idx = data
    reader = BatchReader(split, pre, idx[::-1] if reverse else idx, batch, "input")
    out = tmp_path / f"{config.method}-{config.symmetric}-b{batch}{'r' if reverse else ''}"
    out.mkdir()
    result = calibrate(MODEL, config, reader, out)
    assert result.samples == N
    return result.ranges


def _same(a, b):
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].range_value == b[name].range_value, name  # exact, not approx
        if hasattr(a[name], "hist"):
            assert np.array_equal(a[name].hist, b[name].hist), name


CONFIGS = {
    "minmax": CalibrationConfig("minmax"),
    "entropy": CalibrationConfig("entropy", num_bins=512),
    "percentile-symmetric": CalibrationConfig("percentile", symmetric=True, num_bins=2048, percentile=99.99),
    "percentile": CalibrationConfig("percentile", symmetric=False, num_bins=2048, percentile=99.9),
    "mse": CalibrationConfig("mse", num_bins=2048),
}


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.slow
def test_thresholds_do_not_depend_on_batch_size_or_order(data, tmp_path, name):
    config = CONFIGS[name]
    one_batch = _run(data, tmp_path, config, batch=N)
    for batch, reverse in ((8, False), (32, True), (7, False), (1, True)):
        _same(one_batch, _run(data, tmp_path, config, batch=batch, reverse=reverse))


def _all_activations(data, tensors):
    """Every calibrated tensor's values on the N samples, from a plain ORT run of the model."""
    import onnxruntime as ort

    split, pre, idx = data
    model = onnx.load(str(MODEL))
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in tensors
                              if t not in {o.name for o in model.graph.output} and t != "input")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = pre.apply(split.read(idx))
    values = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": x}), strict=True))
    values["input"] = x
    return {t: values[t].reshape(-1) for t in tensors}


def test_histogram_methods_are_orts_algorithms(data, tmp_path):
    """Thresholds equal ORT's HistogramCollector fed with numpy histograms of all the data over the
    same range (to within one bin: a value on a bin edge may fall on either side)."""
    from onnxruntime.quantization.calibrate import HistogramCollector
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    tensors, _ = tensors_to_calibrate(load_model_with_shape_infer(MODEL), None)
    values = _all_activations(data, tensors)
    for method, bins, pct in (("percentile", 2048, 99.9), ("entropy", 512, None)):
        ours = _run(data, tmp_path, CalibrationConfig(method, num_bins=bins, percentile=pct), batch=32)
        collector = HistogramCollector(method, False, bins, 128, pct or 99.99, "same")
        for t, v in values.items():
            top = np.float32(np.abs(v).max())
            hist, edges = np.histogram(v, bins, range=(-top, top))
            collector.histogram_dict[t] = (hist, edges, v.min(), v.max(), np.array(top, np.float32))
        with contextlib.redirect_stdout(io.StringIO()):
            ref = collector.compute_collection_result()
        for t in tensors:
            width = 2 * float(np.abs(values[t]).max()) / bins
            lo, hi = (float(v) for v in ours[t].range_value)
            assert lo == pytest.approx(float(ref[t][0]), abs=width * 1.01), (method, t)
            assert hi == pytest.approx(float(ref[t][1]), abs=width * 1.01), (method, t)


def test_methods_measure_different_things(data, tmp_path):
    minmax = _run(data, tmp_path, CONFIGS["minmax"], batch=64)
    entropy = _run(data, tmp_path, CONFIGS["entropy"], batch=64)
    narrower = [t for t in minmax if entropy[t].range_value[1] < minmax[t].range_value[1]]
    assert narrower, "Entropy should clip some activation ranges that MinMax keeps whole"


def test_empty_reader_and_bad_bins(data, tmp_path):
    split, pre, idx = data

    class Empty:
        def rewind(self):
            pass

        def get_next(self):
            return None

    with pytest.raises(ValueError, match="no batches"):
        calibrate(MODEL, CONFIGS["minmax"], Empty(), tmp_path)
    with pytest.raises(ValueError, match="num_bins"):
        calibrate(MODEL, CalibrationConfig("entropy", num_bins=None), BatchReader(split, pre, idx[:4], 4), tmp_path)


class _OneSampleReader:
    """The N calibration samples one at a time (the run size calibrate() uses, so the activations are
    bit-identical), for ORT's own calibrators."""

    def __init__(self, data):
        split, pre, idx = data
        self.x = pre.apply(split.read(idx))
        self.i = 0

    def get_next(self):
        if self.i >= len(self.x):
            return None
        self.i += 1
        return {"input": self.x[self.i - 1:self.i]}

    def rewind(self):
        self.i = 0


@pytest.mark.parametrize("method, symmetric, bins, pct", [
    ("percentile", True, 2048, 99.99),    # |x| binned over [min|x|, max|x|]
    ("percentile", False, 2048, 99.9),
    ("entropy", False, 512, None),
    ("distribution", False, 2048, None),
])
def test_thresholds_equal_orts_own_calibrator(data, tmp_path, method, symmetric, bins, pct):
    """Exactly (not to within a bin) the thresholds of ORT's PercentileCalibrater/EntropyCalibrater run
    over the same samples: same histogram range and the same counts as numpy's binning."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    kind = {"percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy,
            "distribution": CalibrationMethod.Distribution}[method]
    options = {"symmetric": symmetric, "num_bins": bins}
    if pct is not None:
        options["percentile"] = pct
    calibrator = create_calibrator(MODEL, None, augmented_model_path=str(tmp_path / "aug.onnx"),
                                   calibrate_method=kind, extra_options=options)
    with contextlib.redirect_stdout(io.StringIO()):
        calibrator.collect_data(_OneSampleReader(data))
        ref = calibrator.compute_data()
    ours = _run(data, tmp_path, CalibrationConfig(method, symmetric=symmetric, num_bins=bins, percentile=pct), batch=32)
    assert sorted(ours) == sorted(ref)
    for t in ref:
        assert [float(v) for v in ours[t].range_value] == [float(v) for v in ref[t].range_value], t


@pytest.mark.torch
@pytest.mark.slow
def test_mse_ranges_are_torchs_histogram_observer(data, tmp_path):
    """calibration = "mse" on the shipped CNN: each tensor's range is the one torch's HistogramObserver
    (2048 bins, one call over all the activations) picks, to within one bin (torch.histc bins the values
    itself); symmetric makes it (-m, m)."""
    import torch
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    tensors, _ = tensors_to_calibrate(load_model_with_shape_infer(MODEL), None)
    values = _all_activations(data, tensors)
    ours = _run(data, tmp_path, CalibrationConfig("mse", num_bins=2048), batch=32)
    clipped = 0
    for t in tensors:
        obs = torch.ao.quantization.HistogramObserver(bins=2048)
        obs(torch.from_numpy(values[t]))
        ref = [float(v) for v in obs._non_linear_param_search()]
        width = float(values[t].max() - values[t].min()) / 2048
        lo, hi = (float(v) for v in ours[t].range_value)
        assert abs(lo - ref[0]) <= 1.01 * width and abs(hi - ref[1]) <= 1.01 * width, (t, (lo, hi), ref)
        clipped += hi < float(values[t].max()) - width
    assert clipped, "the search should clip some tensor's range"
    sym = _run(data, tmp_path, CalibrationConfig("mse", symmetric=True, num_bins=2048), batch=32)
    for t in tensors:
        lo, hi = (float(v) for v in ours[t].range_value)
        assert [float(v) for v in sym[t].range_value] == [-max(abs(lo), abs(hi)), max(abs(lo), abs(hi))]


@pytest.mark.parametrize("bins, low, high, absolute", [
    (2048, -3.7, 11.25, False), (512, -0.001, 0.001, False), (7, 0.0, 1.0, False), (2048, 0.013, 5.5, True),
    (128, 2.0, 2.0, False),  # an empty range: numpy widens it to +-0.5
])
def test_bin_model_counts_are_numpys_histogram(tmp_path, bins, low, high, absolute):
    """The pass-2 model's counts equal numpy.histogram's (ORT's calibrators' histograms) even for values
    on the bin edges and one float32 step either side of them."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from quantbench.common.onnx_save import with_lowest_ir_version
    from quantbench.exporters.calibrate import _Histograms, write_bin_model

    lo, hi = np.float32(low), np.float32(high)
    edges = np.histogram_bin_edges(np.zeros(0, np.float32), bins, range=(lo, hi))
    inner = edges[(edges >= lo) & (edges <= hi)]
    x = np.concatenate([edges, np.nextafter(edges, np.float32(np.inf)), np.nextafter(edges, np.float32(-np.inf)),
                        np.random.default_rng(0).uniform(lo, hi, 5000).astype(np.float32), [lo, hi]])
    x = x[(x >= edges[0]) & (x <= edges[-1])].astype(np.float32)
    assert inner.size and x.size
    if absolute:  # |x| binned over [min|x|, max|x|] as ORT's symmetric Percentile does
        x = np.concatenate([x, -x[::3]])
        ref, ref_edges = np.histogram(np.abs(x), bins)
        rng = (np.abs(x).min(), np.abs(x).max())
    else:
        ref, ref_edges = np.histogram(x, bins, range=(lo, hi))
        rng = (lo, hi)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, len(x)])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, len(x)])])
    model = with_lowest_ir_version(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    hists = _Histograms({"x": rng}, bins, absolute)
    np.testing.assert_array_equal(hists.edges["x"], ref_edges)
    # the edges the bin model computes: numpy.linspace's i * step + first, in float32
    step = (ref_edges[-1] - ref_edges[0]) / np.float32(bins)
    np.testing.assert_array_equal(np.arange(bins, dtype=np.float32) * step + ref_edges[0], ref_edges[:-1])
    outs = write_bin_model(model, ["x"], {"x"}, hists, tmp_path / "bins.onnx")
    sess = ort.InferenceSession(str(tmp_path / "bins.onnx"), providers=["CPUExecutionProvider"])
    hists.add("x", sess.run(outs, {"x": x[None, :]})[0])
    np.testing.assert_array_equal(hists.counts["x"], ref)



@pytest.mark.parametrize("symmetric", [False, True])
def test_minmax_equals_orts_own_calibrator_with_relu_ranges_derived(data, tmp_path, symmetric):
    """MinMax ranges are ORT's MinMaxCalibrater's exactly, also for the Relu outputs pass 1 does not probe (their
    min and max are their input's clipped at 0)."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    from quantbench.exporters.calibrate import relu_ranges_from_inputs

    model = onnx.load(str(MODEL))
    tensors, _ = tensors_to_calibrate(model, None)
    relus = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Relu"}
    assert relu_ranges_from_inputs(relus, tensors)  # the model exercises the derivation
    calibrator = create_calibrator(MODEL, None, augmented_model_path=str(tmp_path / "aug.onnx"),
                                   calibrate_method=CalibrationMethod.MinMax, extra_options={"symmetric": symmetric})
    with contextlib.redirect_stdout(io.StringIO()):
        calibrator.collect_data(_OneSampleReader(data))
        ref = calibrator.compute_data()
    ours = _run(data, tmp_path, CalibrationConfig("minmax", symmetric=symmetric), batch=32)
    assert sorted(ours) == sorted(ref)
    for t in ref:
        assert [float(np.ravel(v)[0]) for v in ours[t].range_value] == \
               [float(np.ravel(v)[0]) for v in ref[t].range_value], t
