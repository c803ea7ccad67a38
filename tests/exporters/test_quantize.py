"""ORT static QDQ quantization of the shipped CNN with real Fashion-MNIST calibration data."""
from __future__ import annotations

import re

import numpy as np
import onnx
import pytest

from quantbench.calibration_data import BatchReader, Preprocess, open_source
from quantbench.exporters.artifacts import ArtifactStore, VariantSpec, identical_groups
from quantbench.exporters.quantize import QuantSettings
from quantbench.exporters.registry import resolve_model

pytestmark = pytest.mark.ort_cpu


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


@pytest.mark.slow
def test_methods_really_differ_keep_accuracy_and_shrink(store, source):
    fp32 = store.fp32(source)
    built = {m: _build(store, source, m, calibration=m) for m in ("minmax", "entropy", "percentile", "mse")}
    shas = {a.sha256 for a in built.values()}
    assert len(shas) == 4, "each calibration method must produce its own ranges"
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


@pytest.mark.slow
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


@pytest.mark.parametrize("settings, match", [
    ({"per_channel": "false"}, "per_channel must be true or false, not str 'false'"),
    ({"op_types": "Conv"}, "op_types must be a list of names"),
    ({"exclude_nodes": "conv1"}, "exclude_nodes must be a list of names"),
    ({"op_types": []}, "op_types must name at least one"),
    ({"calib_samples": 12.5}, "calib_samples must be an integer, not float 12.5"),
    ({"calib_samples": "256"}, "calib_samples must be an integer"),
    ({"calib_batch": True}, "calib_batch must be an integer, not bool"),
    ({"calib_samples": 0}, "calib_samples must be >= 1"),
    ({"num_bins": 64.0, "calibration": "entropy"}, "num_bins must be an integer"),
    ({"num_bins": 64, "calibration": "entropy"}, r"num_bins must be in \[128, 65535\] for entropy"),
    ({"num_bins": 256, "calibration": "distribution"}, r"num_bins must be in \[512"),
    ({"percentile": True}, "percentile must be a number, not bool"),
    ({"percentile": "99.9"}, "percentile must be a number"),
    ({"percentile": 40}, r"percentile must be in \(50, 100\]"),
    ({"symmetric_activation": 1}, "symmetric_activation must be true or false"),
    ({"activation_type": "qint8"}, "did you mean 'QInt8'"),
    ({"weight_type": "int4"}, "weight_type must be QUInt8 or QInt8"),
    ({"calib_classes": [0, "cat"]}, "calib_classes must be a list of class indices"),
    ({"calibration": 3}, "unknown calibration method"),
])
def test_from_dict_rejects_wrong_types_naming_the_key(settings, match):
    with pytest.raises(ValueError, match=match) as err:
        QuantSettings.from_dict(settings)
    assert "\n" not in str(err.value)


def test_round_trip_and_recorded_settings():
    s = QuantSettings.from_dict({"calibration": "percentile", "op_types": ["Conv"], "calib_classes": [1, 2]})
    assert QuantSettings.from_dict(s.to_config()) == s
    d = s.to_dict()
    # ORT's own Percentile default: a symmetric calibrated range, asymmetric activation quantization.
    assert ((d["num_bins"], d["percentile"], d["calib_symmetric"], d["symmetric_activation"])
            == (2048, 99.99, True, False))
    d = QuantSettings(calibration="percentile", symmetric_activation=False, percentile=99.9).to_dict()
    assert (d["calib_symmetric"], d["symmetric_activation"], d["percentile"]) == (False, False, 99.9)
    d = QuantSettings(calibration="entropy", symmetric_activation=True).to_dict()
    assert (d["num_bins"], d["percentile"], d["calib_symmetric"], d["symmetric_activation"]) == (512, None, True, True)
    assert QuantSettings().to_dict()["num_bins"] is None


@pytest.mark.slow
def test_percentile_symmetry_changes_the_artifact(store, source):
    default = _build(store, source, "p-default", calibration="percentile", calib_samples=64)
    asym = _build(store, source, "p-asym", calibration="percentile", calib_samples=64, symmetric_activation=False)
    assert default.sha256 != asym.sha256


@pytest.mark.slow
def test_exclude_nodes_are_checked_on_the_quantized_graph(store, source):
    first_conv = next(n.name for n in onnx.load(str(store.fp32(source).path)).graph.node if n.op_type == "Conv")
    with pytest.raises(ValueError) as err:
        _build(store, source, "typo", exclude_nodes=(first_conv + "x",), calib_samples=16)
    msg = str(err.value)
    assert "after quant_pre_process" in msg and f"close matches: {first_conv}" in msg and "\n" not in msg


def test_timeout_kills_the_quantization(tmp_path, store, source):
    from quantbench.exporters.artifacts import run_quantize_worker

    fp32 = store.fp32(source)
    log = re.escape(str(tmp_path / "quantize.log"))  # the worker's log, beside the artifact it was making
    with pytest.raises(ValueError, match=rf"^quantization timed out after 1 s \(log: {log}\)$"):
        run_quantize_worker(fp32.path, tmp_path / "slow.onnx",
                            QuantSettings(calibration="entropy", calib_samples=20000),
                            "fashion-mnist", source.preprocess, timeout_s=1)
    assert not (tmp_path / "slow.onnx").exists()


@pytest.mark.slow
def test_dict_data_spec_is_passed_through(tmp_path, source):
    """A {spec = ...} table calibrates on the data it names: the same file as the plain spec string, and a
    different one from other data."""
    rng = np.random.default_rng(0)

    def npz(name: str, top: int):
        path = tmp_path / f"{name}.npz"
        np.savez(path, x_train=rng.integers(0, top, (32, 28, 28), dtype=np.uint8), y_train=np.arange(32) % 10,
                 x_test=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), y_test=np.arange(10))
        return path

    bright, dark = npz("bright", 256), npz("dark", 40)
    variant = VariantSpec("d", "int8", QuantSettings(calib_samples=32))
    from_dict = ArtifactStore(tmp_path / "a").build(source, variant, {"spec": f"npz:{bright}"}, source.preprocess,
                                                    timeout_s=300)
    from_text = ArtifactStore(tmp_path / "b").build(source, variant, f"npz:{bright}", source.preprocess, timeout_s=300)
    other = ArtifactStore(tmp_path / "a").build(source, variant, {"spec": f"npz:{dark}"}, source.preprocess,
                                                timeout_s=300)
    assert from_dict.sha256 == from_text.sha256
    assert other.sha256 != from_dict.sha256


def test_mse_method_settings_are_recorded():
    """calibration = "mse" (torch HistogramObserver's L2 search): its bins and range symmetry resolved
    in rows like the other histogram methods; percentile does not apply."""
    d = QuantSettings.from_dict({"calibration": "mse"}).to_dict()
    assert d["calibration"] == "mse" and d["num_bins"] == 2048 and d["percentile"] is None
    assert d["calib_symmetric"] is False and d["symmetric_activation"] is False
    mse = QuantSettings(calibration="mse", num_bins=256, symmetric_activation=True)
    assert mse.to_dict()["calib_symmetric"] is True
    with pytest.raises(ValueError, match="did you mean 'mse'"):
        QuantSettings.from_dict({"calibration": "mes"})


def test_settings_take_python_lists_as_toml_does():
    """``QuantSettings(op_types=["Conv"])`` was refused ("must be a list of names ... not list ['Conv']"): the Python
    API's lists are the TOML tables' lists, stored as tuples (hashable, equal to from_dict's)."""
    given = QuantSettings(op_types=["Conv"], exclude_nodes=["conv1"], calib_classes=[0, 3])
    assert given == QuantSettings.from_dict({"op_types": ["Conv"], "exclude_nodes": ["conv1"], "calib_classes": [0, 3]})
    assert given.op_types == ("Conv",) and hash(given) == hash(QuantSettings.from_dict(given.to_config()))
