"""ORT static QDQ quantization of the shipped CNN with real Fashion-MNIST calibration data."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from quantbench.calibration_data import BatchReader, Preprocess, open_source
from quantbench.exporters.artifacts import ArtifactStore, VariantSpec, identical_groups
from quantbench.exporters.quantize import QuantSettings
from quantbench.exporters.registry import resolve_model

pytestmark = pytest.mark.ort_cpu


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return ArtifactStore(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="module")
def source():
    return resolve_model("fashion_cnn")


def _accuracy(path, source, n=2000):
    import onnxruntime as ort

    split = open_source(source.dataset).evaluation
    idx = split.select(n, seed=1)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reader = BatchReader(split, Preprocess.from_dict(source.preprocess), idx, 250, "input")
    correct = sum(int((sess.run(None, {"input": x})[0].argmax(1) == y).sum()) for x, y, _ in reader)
    return correct / len(idx)


def _build(store, source, name, **quant):
    return store.build(source, VariantSpec(name, "int8", QuantSettings(**quant)), "fashion-mnist", source.preprocess)


def test_methods_really_differ_keep_accuracy_and_shrink(store, source):
    fp32 = store.fp32(source)
    built = {m: _build(store, source, m, calibration=m) for m in ("minmax", "entropy", "percentile")}
    shas = {a.sha256 for a in built.values()}
    assert len(shas) == 3, "each calibration method must produce its own ranges"
    assert identical_groups(list(built.values())) == {}
    base = _accuracy(fp32.path, source)
    assert base > 0.85
    for method, art in built.items():
        assert art.size_bytes <= 0.30 * fp32.size_bytes, method
        assert abs(_accuracy(art.path, source) - base) <= 0.005, method
        assert art.quant_time_s > 0 and art.quant_peak_mem_mb > 50
        assert art.param_count == pytest.approx(fp32.param_count, rel=0.01)


def test_cache_hit_and_identical_detection(store, source):
    a = _build(store, source, "a", calib_samples=64)
    b = _build(store, source, "b", calib_samples=64)
    assert a.path == b.path
    assert identical_groups([a, b]) == {"b": "a"}


def _ops(path):
    return [(n.op_type, n.name, list(n.input)) for n in onnx.load(str(path)).graph.node]


def test_conv_only_dense_only_and_excluded_nodes(store, source):
    def quantized_ops(path):
        """Compute nodes whose weight input comes out of a DequantizeLinear (i.e. were quantized)."""
        nodes = _ops(path)
        dq_out = {n.output[0] for n in onnx.load(str(path)).graph.node if n.op_type == "DequantizeLinear"}
        return sorted(op for op, _, ins in nodes if op in ("Conv", "Gemm") and len(ins) > 1 and ins[1] in dq_out)

    assert quantized_ops(_build(store, source, "all", calib_samples=32).path) == ["Conv", "Conv", "Gemm", "Gemm"]
    assert quantized_ops(_build(store, source, "conv", op_types=("Conv",), calib_samples=32).path) == ["Conv", "Conv"]
    assert quantized_ops(_build(store, source, "dense", op_types=("Gemm",), calib_samples=32).path) == ["Gemm", "Gemm"]
    first_conv = next(n.name for n in onnx.load(str(store.fp32(source).path)).graph.node if n.op_type == "Conv")
    mixed = _build(store, source, "mixed", exclude_nodes=(first_conv,), calib_samples=32)
    assert quantized_ops(mixed.path) == ["Conv", "Gemm", "Gemm"]
    kept = next(ins for op, name, ins in _ops(mixed.path) if name == first_conv)
    assert kept[1] in {i.name for i in onnx.load(str(mixed.path)).graph.initializer}  # float weight, no DQ


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ValueError, match="did you mean 'entropy'"):
        QuantSettings(calibration="entropie")
    with pytest.raises(ValueError, match="did you mean 'per_channel'"):
        QuantSettings.from_dict({"perchannel": True})
    with pytest.raises(ValueError, match="QUInt8 or QInt8"):
        QuantSettings(activation_type="int4")


def test_corrupt_onnx_and_registry_errors(tmp_path, store):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01 definitely not protobuf")
    with pytest.raises(ValueError) as err:
        store.fp32(resolve_model(str(bad)))
    assert "not a valid ONNX model" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="did you mean 'resnet50'"):
        resolve_model("resnet05")
    with pytest.raises(ValueError, match="weights='random'"):
        resolve_model("resnet18")
    assert resolve_model("resnet18", weights="random").weights_label() == "random-init"
