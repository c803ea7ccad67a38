"""mode = "dynamic": ORT quantize_dynamic on the shipped Fashion-MNIST CNN, in the contained worker."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from quantbench.calibration_data import BatchReader, Preprocess, open_source
from quantbench.exporters.artifacts import VariantSpec
from quantbench.exporters.dynamic import integer_ops
from quantbench.exporters.quantize import QuantSettings

pytestmark = pytest.mark.ort_cpu


def _build(store, source, data="fashion-mnist", **kw):
    return store.build(source, VariantSpec("dyn", "int8", QuantSettings(mode="dynamic", **kw)), data,
                       source.preprocess, timeout_s=300)


def _accuracy(path, source, n=500):
    import onnxruntime as ort

    split = open_source(source.dataset).evaluation
    idx = split.select(n, seed=2)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reader = BatchReader(split, Preprocess.from_dict(source.preprocess), idx, 250, "input")
    return sum(int((sess.run(None, {"input": x})[0].argmax(1) == y).sum()) for x, y, _ in reader) / len(idx)


@pytest.mark.slow
def test_dynamic_quantizes_every_conv_and_matmul_and_keeps_accuracy(store, source):
    fp32 = store.fp32(source)
    art = _build(store, source)
    ops = integer_ops(art.path)
    assert ops["ConvInteger"] == 2 and ops["MatMulInteger"] == 2 and ops["DynamicQuantizeLinear"] >= 1
    model = onnx.load(str(art.path))
    assert not [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "Conv")]
    # QInt8 (the default) ConvInteger weights: ORT's CPU kernel loads and runs them (accuracy below)
    inits = {i.name: i.data_type for i in model.graph.initializer}
    assert {inits[n.input[1]] for n in model.graph.node if n.op_type == "ConvInteger"} == {onnx.TensorProto.INT8}
    assert art.size_bytes < 0.3 * fp32.size_bytes and art.packed_size_bytes == art.size_bytes
    assert art.quant_time_s > 0 and art.quant_peak_mem_mb > 0
    assert abs(_accuracy(art.path, source) - _accuracy(fp32.path, source)) <= 0.02


@pytest.mark.slow
def test_no_calibration_data_is_read(store, source, tmp_path):
    """The data spec cannot change a dynamic artifact: not even a missing folder is opened."""
    a = _build(store, source)
    b = _build(store, source, data=f"folder:{tmp_path / 'no-such-dir'}")
    assert a.sha256 == b.sha256 and a.path == b.path


@pytest.mark.slow
def test_knobs_reach_ort(store, source):
    base = _build(store, source)
    per_tensor = _build(store, source, per_channel=False)
    assert per_tensor.sha256 != base.sha256
    uint8 = _build(store, source, weight_type="QUInt8", symmetric_weight=False)
    w = next(i for i in onnx.load(str(uint8.path)).graph.initializer if i.name.endswith("_quantized"))
    assert w.data_type == onnx.TensorProto.UINT8
    first_conv = next(n.name for n in onnx.load(str(store.fp32(source).path)).graph.node if n.op_type == "Conv")
    kept = _build(store, source, exclude_nodes=(first_conv,))
    assert integer_ops(kept.path)["ConvInteger"] == 1
    dense = _build(store, source, op_types=("MatMul",))
    assert "ConvInteger" not in integer_ops(dense.path) and integer_ops(dense.path)["MatMulInteger"] == 2
    nothing = _build(store, source, op_types=("LSTM",))
    assert any("changed no operator" in n for n in nothing.notes)


@pytest.mark.slow
def test_a_typo_in_exclude_nodes_is_one_line(store, source):
    with pytest.raises(ValueError, match="is not a node of the graph") as err:
        _build(store, source, exclude_nodes=("/features/features.0/Convv",))
    assert "\n" not in str(err.value)


def test_settings_record_what_ran():
    s = QuantSettings.from_dict({"mode": "dynamic", "per_channel": False})
    d = s.to_dict()
    assert d["mode"] == "dynamic" and d["per_channel"] is False
    assert all(d[k] is None for k in ("calibration", "calib_samples", "num_bins", "calib_symmetric", "activation_type"))
    assert QuantSettings.from_dict(s.to_config()) == s
    for bad, match in [({"mode": "dynamic", "calibration": "entropy"},
                        "calibration does not apply to mode = 'dynamic'"),
                       ({"mode": "dynamic", "calib_samples": 64}, "calib_samples does not apply"),
                       ({"mode": "dynamic", "weight_bits": 4}, "mode = 'dynamic' quantizes weights to 8 bits"),
                       ({"mode": "dynamc"}, "mode must be 'static', 'dynamic' or 'qat'")]:
        with pytest.raises(ValueError, match=match):
            QuantSettings.from_dict(bad)


@pytest.mark.slow
def test_outputs_agree_with_fp32_on_real_images(store, source):
    """On 1000 real test images the dynamic model's logits are finite, close to FP32's and pick the same class."""
    import onnxruntime as ort

    split = open_source(source.dataset).evaluation
    idx = split.select(1000, seed=3)
    x = Preprocess.from_dict(source.preprocess).apply(split.read(idx))
    labels = np.asarray(split.labels)[idx]
    fp32, dyn = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
                 for p in (store.fp32(source).path, _build(store, source).path))
    assert np.isfinite(dyn).all()
    assert (dyn.argmax(1) == fp32.argmax(1)).mean() >= 0.98  # measured 0.998
    assert np.abs(dyn - fp32).max() <= 0.05 * np.abs(fp32).max()  # measured 0.13 of 17
    assert (dyn.argmax(1) == labels).mean() >= 0.85  # FP32: 0.91
