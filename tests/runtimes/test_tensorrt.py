"""TensorRT adapter: build decisions, cache keys, calibration feeding and Q/DQ checks run everywhere;
engine build/run tests run where TensorRT and a GPU exist (marker ``tensorrt``)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from quantbench.calibration_data import BatchReader, Preprocess, open_source
from quantbench.common.onnx_save import save_model
from quantbench.runtimes import Artifact, RuntimeFailure, create_runtime, get_runtime_class
from quantbench.runtimes.trt_calibrator import CalibrationFeed, calibration_fingerprint
from quantbench.runtimes.trt_inspect import schema_version, summarize_engine_layers, tensor_precision
from quantbench.runtimes.trt_plan import (
    TRT11_CALIBRATOR_REMOVED,
    PrecisionPlan,
    calibration_cache_key,
    choose_precision_path,
    engine_cache_key,
    fold_int32_bias,
    profile_shapes,
    qdq_problem,
    qdq_problems,
)

from .test_cuda_mem import FakeCuda, spans

FIXTURES = Path(__file__).parent / "fixtures"

FP32 = Artifact("onnx", "fp32", Path("/m/fp32.onnx"))
FP16 = Artifact("onnx", "fp16", Path("/m/fp16.onnx"), reference_path=Path("/m/fp32.onnx"))
INT8 = Artifact("onnx", "int8", Path("/m/int8.onnx"), reference_path=Path("/m/fp32.onnx"))
ENTROPY = Artifact("trt-calibrate", "int8", Path("/m/fp32.onnx"), settings={"calibrator": "entropy"})
MINMAX = Artifact("trt-calibrate", "int8", Path("/m/fp32.onnx"), settings={"calibrator": "minmax"})


# ---- helpers shared with test_ort_cuda ---------------------------------------------------------------
def fashion_model(path: Path, seed: int = 0) -> Path:
    """A tiny Conv-Relu-Gemm classifier for 1x28x28 Fashion-MNIST inputs, dynamic batch."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((4, 1, 3, 3)) * 0.5).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32) * 0.1
    g = (rng.standard_normal((10, 4 * 13 * 13)) * 0.05).astype(np.float32)
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["c"], strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "g"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, "fashion_tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [onnx.numpy_helper.from_array(a, n) for a, n in ((w, "w"), (b, "b"), (g, "g"))])
    save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def fashion_reader(n: int = 40, batch: int = 16) -> BatchReader:
    """Real Fashion-MNIST samples (the shipped subset), scaled to [0, 1]."""
    split = open_source("fashion-mnist-subset").calibration
    return BatchReader(split, Preprocess(), split.select(n, seed=0), batch, "input")


def quantize(fp32: Path, out: Path, **settings) -> Path:
    from quantbench.exporters.quantize import QuantSettings, quantize_qdq

    qs = QuantSettings(calib_samples=32, calib_batch=16, **settings)
    quantize_qdq(fp32, out, qs, fashion_reader(32, 16))
    return out


def host_reference(path: Path, x: np.ndarray) -> np.ndarray:
    with create_runtime("ort-cpu") as cpu:
        cpu.activate(Artifact("onnx", "fp32", path), batch=x.shape[0])
        return cpu.fetch(cpu.infer(cpu.stage(x)))


# ---- precision paths ---------------------------------------------------------------------------------------
def test_tensorrt10_paths_use_flags_or_calibrators():
    fp32 = choose_precision_path(10, FP32)
    assert fp32.flags == () and fp32.onnx_path == "/m/fp32.onnx" and fp32.calibrator is None
    fp16 = choose_precision_path(10, FP16)
    assert (fp16.flags, fp16.onnx_path, fp16.strongly_typed) == (("FP16",), "/m/fp32.onnx", False)
    typed16 = choose_precision_path(10, FP16, strongly_typed=True)
    assert (typed16.flags, typed16.onnx_path, typed16.strongly_typed) == ((), "/m/fp16.onnx", True)
    int8 = choose_precision_path(10, INT8)
    assert (int8.flags, int8.onnx_path, int8.calibrator) == (("INT8",), "/m/int8.onnx", None)
    for art, kind in ((ENTROPY, "entropy"), (MINMAX, "minmax")):
        cal = choose_precision_path(10, art)
        assert ((cal.flags, cal.onnx_path, cal.calibrator, cal.strongly_typed)
                == (("INT8",), "/m/fp32.onnx", kind, False))
    with pytest.raises(ValueError, match="unknown TensorRT calibrator 'percentile'"):
        choose_precision_path(10, Artifact("trt-calibrate", "int8", Path("x"), settings={"calibrator": "percentile"}))
    with pytest.raises(ValueError, match="cannot build a 'torch' artifact"):
        choose_precision_path(10, Artifact("torch", "fp32"))


def test_tensorrt11_is_strongly_typed_from_the_file_and_refuses_calibrators():
    for art in (FP32, FP16, INT8):
        plan = choose_precision_path(11, art)
        assert plan.strongly_typed and plan.flags == () and plan.calibrator is None
        assert plan.onnx_path == str(art.path)  # fp16 from the fp16 ONNX, int8 from the QDQ ONNX
    for art in (ENTROPY, MINMAX):
        with pytest.raises(ValueError) as err:
            choose_precision_path(11, art)
        assert str(err.value) == TRT11_CALIBRATOR_REMOVED
    assert "IInt8EntropyCalibrator2" in TRT11_CALIBRATOR_REMOVED and "tox -e tensorrt10" in TRT11_CALIBRATOR_REMOVED


def test_only_tensorrt_accepts_trt_calibrate_artifacts():
    rt = get_runtime_class("tensorrt")("cuda:0")
    assert rt.supports(ENTROPY) is None  # the format is accepted; the TensorRT version decides at activate
    assert "tensorrt runs onnx/trt-calibrate artifacts, not torch" == rt.supports(Artifact("torch", "fp32"))
    for other in ("ort-cpu", "openvino", "ort-cuda"):
        assert "not trt-calibrate" in get_runtime_class(other)("cpu").supports(ENTROPY)


# ---- cache keys --------------------------------------------------------------------------------------------
def test_engine_cache_key_is_stable_and_changes_with_everything_that_changes_the_engine():
    plan = PrecisionPlan("/a.onnx", False, ("FP16",))
    base = dict(model_bytes_sha256="abc", plan=plan, options={"workspace_mb": 1024}, trt_version="10.9.0",
                gpu_name="NVIDIA H100", compute_capability=(9, 0), batch=1, artifact_settings={})
    key = engine_cache_key(**base)
    assert key == engine_cache_key(**base) and len(key) == 32
    assert key == engine_cache_key(**{**base, "plan": PrecisionPlan("/moved/a.onnx", False, ("FP16",))})
    changes = ({"model_bytes_sha256": "abd"}, {"plan": PrecisionPlan("/a.onnx", False, ())},
               {"plan": PrecisionPlan("/a.onnx", True, ("FP16",))},
               {"plan": PrecisionPlan("/a.onnx", False, ("INT8",), "minmax")},
               {"options": {"workspace_mb": 2048}}, {"trt_version": "10.9.1"}, {"gpu_name": "NVIDIA H200"},
               {"compute_capability": (8, 9)}, {"batch": 8}, {"artifact_settings": {"calibrator": "minmax"}})
    keys = {engine_cache_key(**{**base, **change}) for change in changes}
    assert key not in keys and len(keys) == len(changes)


def test_calibration_cache_key_ignores_gpu_and_batch_but_not_model_data_or_version():
    key = calibration_cache_key("abc", "entropy", "10.9.0", {"calibrator": "entropy"})
    assert key == calibration_cache_key("abc", "entropy", "10.9.0", {"calibrator": "entropy"})
    others = {calibration_cache_key("abd", "entropy", "10.9.0", {"calibrator": "entropy"}),
              calibration_cache_key("abc", "minmax", "10.9.0", {"calibrator": "entropy"}),
              calibration_cache_key("abc", "entropy", "10.10.0", {"calibrator": "entropy"}),
              calibration_cache_key("abc", "entropy", "10.9.0", {"calibrator": "entropy", "samples": 512})}
    assert key not in others and len(others) == 4


# ---- calibration feed ----------------------------------------------------------------------------------------
def test_calibration_feed_batches_pads_and_counts_real_samples(tmp_path):
    reader = fashion_reader(40, 16)  # 16 + 16 + 8 real samples
    reader.get_next()  # the feed must rewind a reader that was used before
    expected = [x for x, _, _ in reader]
    copied: list[np.ndarray] = []

    def to_device(arr: np.ndarray) -> int:
        copied.append(arr.copy())
        return 0x1000 * len(copied)

    feed = CalibrationFeed(reader, 16, tmp_path / "c.calib", to_device, sample_shape=(1, 28, 28))
    ptrs = []
    while (p := feed.get_batch(["input"])) is not None:
        ptrs.append(p)
    assert ptrs == [[0x1000], [0x2000], [0x3000]]
    assert (feed.batches_fed, feed.samples_fed) == (3, 40)
    assert all(c.shape == (16, 1, 28, 28) and c.dtype == np.float32 and c.flags.c_contiguous for c in copied)
    np.testing.assert_array_equal(copied[0], expected[0])
    np.testing.assert_array_equal(copied[2][:8], expected[2])
    np.testing.assert_array_equal(copied[2][8:], np.repeat(expected[2][-1:], 8, axis=0))
    assert 0.0 <= copied[0].min() and copied[0].max() <= 1.0 and copied[0].std() > 0.1  # real images


def test_calibration_feed_cuts_long_batches_and_rejects_wrong_shapes(tmp_path):
    feed = CalibrationFeed(fashion_reader(32, 16), 8, tmp_path / "c.calib", lambda a: a.shape[0])
    assert feed.get_batch(["input"]) == [8] and feed.samples_fed == 8
    wrong = CalibrationFeed(fashion_reader(32, 16), 16, tmp_path / "c.calib", lambda a: 1, sample_shape=(3, 28, 28))
    with pytest.raises(RuntimeFailure, match=r"shape \(1, 28, 28\), the model takes \(3, 28, 28\)"):
        wrong.get_batch(["input"])
    renamed = CalibrationFeed(fashion_reader(16, 16), 16, tmp_path / "c.calib", lambda a: 7)
    assert renamed.get_batch(["images"]) == [7]  # single input under another name: still fed

    class TwoInputs:
        def get_next(self):
            return {"a": np.zeros((2, 3)), "b": np.zeros((2, 3))}

    with pytest.raises(RuntimeFailure, match="has no input 'c' \\(it has a, b\\)"):
        CalibrationFeed(TwoInputs(), 2, tmp_path / "c.calib", lambda a: 1).get_batch(["c"])


def test_calibration_cache_is_written_atomically_and_reused(tmp_path):
    cache = tmp_path / "engines" / "k.calib"
    feed = CalibrationFeed(fashion_reader(16, 16), 16, cache, lambda a: 1)
    assert feed.read_cache() is None and not feed.cache_read
    table = b"TRT-1001-EntropyCalibration2\ninput: 3c010a14\n"
    feed.write_cache(memoryview(table))  # TensorRT hands the table over as a buffer
    assert cache.read_bytes() == table and feed.cache_written
    assert list(cache.parent.iterdir()) == [cache]  # no temporary file left behind
    again = CalibrationFeed(fashion_reader(16, 16), 16, cache, lambda a: 1)
    assert again.read_cache() == table and again.cache_read


# ---- Q/DQ compatibility ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def qdq_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("qdq")
    fp32 = fashion_model(d / "fp32.onnx")
    return {"fp32": fp32, "uint8": quantize(fp32, d / "u8.onnx"),
            "int8": quantize(fp32, d / "s8.onnx", activation_type="QInt8", symmetric_activation=True)}


@pytest.mark.ort_cpu
def test_qdq_check_rejects_ort_default_uint8_and_int32_bias(qdq_models):
    problem = qdq_problem(qdq_models["uint8"])
    assert problem and "uint8" in problem and "activation_type = 'QInt8'" in problem and "\n" not in problem
    assert qdq_problems(qdq_models["uint8"])["uint8"] > 0
    # symmetric QInt8 from the exporter: zero points fine, but ORT quantized the bias to int32
    assert dict(qdq_problems(qdq_models["int8"])) == {"int32 bias": 1}
    assert "QuantizeBias = False" in qdq_problem(qdq_models["int8"])
    assert qdq_problem(qdq_models["int8"], allow_int32_bias=True) is None
    assert qdq_problem(qdq_models["fp32"]) is None
    for name in ("tensorrt", "ort-trt"):
        rt = get_runtime_class(name)("cuda:0")
        assert rt.supports(Artifact("onnx", "int8", qdq_models["uint8"])) == qdq_problem(qdq_models["uint8"], True)
        assert "activation_type = 'QInt8'" in rt.supports(Artifact("onnx", "int8", qdq_models["uint8"]))
        assert rt.supports(Artifact("onnx", "int8", qdq_models["int8"])) is None  # tensorrt folds int32 biases
        assert rt.supports(Artifact("onnx", "int8")) is None  # the harness probes without a path


@pytest.mark.ort_cpu
def test_qdq_check_catches_a_nonzero_int8_zero_point(tmp_path):
    w = onnx.numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["d"]),
             helper.make_node("MatMul", ["d", "w"], ["y"])]
    inits = [w, onnx.numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             onnx.numpy_helper.from_array(np.array(3, np.int8), "zp")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], inits)
    save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "zp.onnx")
    assert dict(qdq_problems(tmp_path / "zp.onnx")) == {"non-zero zero point": 2}
    assert "symmetric_activation = true" in qdq_problem(tmp_path / "zp.onnx")


@pytest.mark.ort_cpu
def test_int32_bias_folding_is_exact_and_leaves_nothing_tensorrt_rejects(qdq_models, tmp_path):
    folded = tmp_path / "folded.onnx"
    assert fold_int32_bias(qdq_models["int8"], folded) == 1
    assert not qdq_problems(folded) and qdq_problem(folded) is None
    x = next(iter(fashion_reader(16, 16)))[0]
    np.testing.assert_allclose(host_reference(folded, x), host_reference(qdq_models["int8"], x), rtol=1e-5, atol=1e-5)


# ---- engine inspector -----------------------------------------------------------------------------------------
def _layer(ltype, inputs, outputs, name="L", **extra):
    return {"Name": name, "LayerType": ltype, "Inputs": [{"Name": "i", "Format/Datatype": f} for f in inputs],
            "Outputs": [{"Name": "o", "Format/Datatype": f} for f in outputs], **extra}


def test_engine_layer_precisions_from_short_and_long_format_strings():
    info = {"Layers": [
        _layer("Reformat", ["Row major linear FP32"], ["Thirty-two wide channel vectorized row major Int8 format"]),
        _layer("CaskConvolution", ["Int8"], ["Int8"], name="conv1", TacticName="sm90_xmma_fprop_i8i8_i8i32_f32"),
        _layer("CaskConvolution", ["Thirty-two wide channel vectorized row major Int8 format"],
               ["Row major linear FP32"], name="conv2"),
        _layer("CaskPooling", ["Half"], ["Half"], name="pool"),
        _layer("CaskGemmMatrixMultiply", ["Float"], ["Float"], name="fc"),
    ], "Bindings": ["input", "logits"]}
    report = summarize_engine_layers(json.dumps(info), "int8")
    assert report["op_precisions"] == {"int8": 2, "fp16": 1, "fp32": 1}
    assert report["exec_precision"] == "mixed"
    assert report["int8_op_share"] == pytest.approx(2 / 3, abs=1e-4)  # 2 of 3 convolutions/matrix products
    assert "convolutions/matrix products: int8 2, fp32 1" in report["audit_note"]
    fp16 = summarize_engine_layers({"Layers": [_layer("CaskConvolution",
                                                      ["Channel major FP16 format where channel % 8 == 0"],
                                                      ["Half"], name="c")]}, "fp16")
    assert fp16["exec_precision"] == "fp16" and fp16["int8_op_share"] == 0.0


def test_engine_without_detailed_verbosity_reports_what_was_requested():
    report = summarize_engine_layers({"Layers": ["conv1 + relu", "fc"], "Bindings": ["input", "logits"]}, "fp16")
    assert report["exec_precision"] == "fp16" and "int8_op_share" not in report
    assert "no layer precisions" in report["audit_note"]


def test_tensorrt_unavailable_here_says_why():
    avail = get_runtime_class("tensorrt").availability()
    if avail.ok:
        pytest.skip("tensorrt is available here")
    assert "\n" not in str(avail) and avail.reason
    assert ("tensorrt" in avail.reason and "pip install .[tensorrt]" in avail.hint) or "driver" in avail.reason \
        or "CUDA" in avail.reason


# ---- on a GPU -------------------------------------------------------------------------------------------------
def _run(rt, x):
    clock = rt.clock()
    staged, h2d = clock.time(rt.stage, x)
    out, compute = clock.time(rt.infer, staged)
    host, d2h = clock.time(rt.fetch, out)
    assert clock.kind == "cuda-events" and min(h2d, compute, d2h) > 0
    return host


@pytest.mark.tensorrt
def test_fp32_engine_builds_caches_and_matches_ort_cpu(tmp_path):
    path = fashion_model(tmp_path / "m.onnx")
    x = next(iter(fashion_reader(8, 8)))[0]
    ref = host_reference(path, x)
    opts = {"cache_dir": str(tmp_path / "engines"), "tf32": False}
    for expected in ("miss", "hit"):
        with create_runtime("tensorrt", "cuda:0", opts) as rt:
            rt.activate(Artifact("onnx", "fp32", path), batch=8)
            out = _run(rt, x)
            used = rt.settings_used()
            assert used["engine_cache"] == expected and used["engine_bytes"] > 0
            assert (used["build_s"] > 0) == (expected == "miss")
            small = rt.fetch(rt.infer(rt.stage(x[:3])))  # profile covers batch 1..8
            report = rt.execution_report()
        np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(small, ref[:3], rtol=1e-3, atol=1e-3)
        assert report["exec_precision"] == "fp32" and report["int8_op_share"] == 0.0
    assert len(list((tmp_path / "engines").glob("*.engine"))) == 1
    with create_runtime("tensorrt", "cuda:0", opts) as rt:
        rt.activate(Artifact("onnx", "fp32", path), batch=4)
        with pytest.raises(RuntimeFailure, match="built for batch <= 4"):
            rt.stage(x)
    with pytest.raises(RuntimeFailure, match="runs on cuda devices"):
        create_runtime("tensorrt", "cpu").activate(Artifact("onnx", "fp32", path))


@pytest.mark.tensorrt
def test_engine_is_built_for_the_first_staged_batch_without_a_batch(tmp_path):
    path = fashion_model(tmp_path / "m.onnx")
    x = next(iter(fashion_reader(4, 4)))[0]
    with create_runtime("tensorrt", "cuda:0", {"cache_dir": str(tmp_path)}) as rt:
        rt.activate(Artifact("onnx", "fp32", path))
        out = rt.fetch(rt.infer(rt.stage(x)))
        assert rt.settings_used()["profile_batch"] == [1, 4, 4]
    np.testing.assert_allclose(out, host_reference(path, x), rtol=1e-3, atol=1e-3)


@pytest.mark.tensorrt
def test_fp16_and_explicit_int8_engines_report_their_precision(tmp_path, qdq_models):
    from quantbench.exporters.fp16 import convert_fp16

    fp32 = qdq_models["fp32"]
    x = next(iter(fashion_reader(16, 16)))[0]
    ref = host_reference(fp32, x)
    fp16 = convert_fp16(fp32, tmp_path / "fp16.onnx")
    cases = [(Artifact("onnx", "fp16", fp16, reference_path=fp32), "fp16"),
             (Artifact("onnx", "int8", qdq_models["int8"], reference_path=fp32), "int8")]
    for art, precision in cases:
        with create_runtime("tensorrt", "cuda:0", {"cache_dir": str(tmp_path / "engines")}) as rt:
            rt.activate(art, batch=16)
            out = _run(rt, x)
            report = rt.execution_report()
        assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.9, precision
        assert np.abs(out - ref).max() < 0.25 * np.abs(ref).max(), precision
        assert precision in report["op_precisions"], report
        if precision == "int8":
            assert report["int8_op_share"] > 0
    with create_runtime("tensorrt", "cuda:0", {"cache_dir": str(tmp_path / "engines")}) as rt:
        with pytest.raises(RuntimeFailure, match="symmetric signed INT8"):
            rt.activate(Artifact("onnx", "int8", qdq_models["uint8"]), batch=16)


@pytest.mark.tensorrt
def test_calibrators_on_tensorrt10_and_their_removal_on_11(tmp_path):
    import tensorrt as trt

    path = fashion_model(tmp_path / "m.onnx")
    x = next(iter(fashion_reader(16, 16)))[0]
    ref = host_reference(path, x)
    for kind in ("entropy", "minmax"):
        art = Artifact("trt-calibrate", "int8", path, settings={"calibrator": kind},
                       calibration=lambda: fashion_reader(64, 16))
        rt = create_runtime("tensorrt", "cuda:0", {"cache_dir": str(tmp_path / "engines")})
        if int(trt.__version__.split(".")[0]) >= 11:
            with pytest.raises(RuntimeFailure) as err:
                rt.activate(art, batch=16)
            assert str(err.value) == TRT11_CALIBRATOR_REMOVED
            continue
        with rt:
            rt.activate(art, batch=16)
            out = rt.fetch(rt.infer(rt.stage(x)))
            used = rt.settings_used()
            report = rt.execution_report()
        assert used["calibrator"] == kind and used["calibration_samples"] == 64 and used["calibration_cache"] == "miss"
        assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.8
        assert report["int8_op_share"] > 0
        assert len(list((tmp_path / "engines").glob("*.calib"))) == (1 if kind == "entropy" else 2)


# ---- GPU-free checks of the fixes from issue 10 -----------------------------------------------------------------
@pytest.mark.parametrize("fixture, schema, counts, compute_int8, precision", [
    ("trt10_int8_qdq", "10.x", {"int8": 3, "fp32": 2}, 2 / 3, "mixed"),
    ("trt10_fp16_flag", "10.x", {"fp16": 4, "fp32": 1}, 0.0, "mixed"),
    ("trt11_int8_qdq", "11.x", {"int8": 3, "fp32": 2}, 2 / 3, "mixed"),
    ("trt11_fp16_typed", "11.x", {"fp16": 3}, 0.0, "fp16"),
])
def test_engine_inspector_fixtures_of_both_schemas(fixture, schema, counts, compute_int8, precision):
    """Per-layer datatype fields of TensorRT 10.x ("Format/Datatype") and 11.x ("Datatype" + "Format")."""
    text = (FIXTURES / f"{fixture}.json").read_text()
    info = json.loads(text)
    assert schema_version(info) == schema
    report = summarize_engine_layers(text, "int8" if "int8" in fixture else "fp16")
    assert report["op_precisions"] == counts
    assert report["int8_op_share"] == pytest.approx(compute_int8, abs=1e-4)
    assert report["exec_precision"] == precision and f"({schema} inspector)" in report["audit_note"]


def test_tensor_precision_reads_the_datatype_word_not_substrings():
    assert tensor_precision("Row major linear FP16 format") == "fp16"
    assert tensor_precision("Thirty-two wide channel vectorized row major Int8 format") == "int8"
    assert tensor_precision("Row major linear FP32 format (kLINEAR)") == "fp32"
    assert tensor_precision("BFloat16") == "bf16" and tensor_precision("Half") == "fp16"
    assert tensor_precision("Row major linear UInt8 format") is None  # not "int8"
    assert tensor_precision("Row major linear Int32") is None and tensor_precision("Unknown format") is None


def test_calibration_data_changes_the_engine_and_table_keys():
    """Issue 10 item 7: a different calibration set (samples, seed, classes, preprocessing, batch) is another key."""
    def fp(n=32, batch=16, seed=0, classes=None, scale=1.0):
        split = open_source("fashion-mnist-subset").calibration
        return calibration_fingerprint(BatchReader(split, Preprocess(scale=scale) if scale != 1.0 else Preprocess(),
                                                   split.select(n, seed=seed, classes=classes), batch, "input"))

    base = fp()
    assert base == fp()  # deterministic
    variants = {fp(n=48), fp(batch=8), fp(seed=1), fp(classes=[0, 1]), fp(scale=0.5)}
    assert base not in variants and len(variants) == 5
    plan = PrecisionPlan("/a.onnx", False, ("INT8",), "entropy")
    args = ("abc", plan, {}, "10.13.0", "GPU", (9, 0), 16, {"calibrator": "entropy"})
    assert engine_cache_key(*args, calibration=base) != engine_cache_key(*args, calibration=fp(seed=1))
    assert (calibration_cache_key("abc", "entropy", "10.13", {}, base)
            != calibration_cache_key("abc", "entropy", "10.13", {}, fp(n=48)))


def test_profile_shapes_for_dynamic_and_static_batches():
    assert profile_shapes((-1, 1, 28, 28), 8) == ((1, 1, 28, 28), (8, 1, 28, 28), (8, 1, 28, 28))
    assert profile_shapes((8, 1, 28, 28), 8) == ((8, 1, 28, 28),) * 3  # no profile from 1 for a fixed batch
    with pytest.raises(ValueError, match="fixed batch of 8, cannot run batch 4"):
        profile_shapes((8, 1, 28, 28), 4)
    with pytest.raises(ValueError, match="static non-batch"):
        profile_shapes((-1, 1, -1, 28), 4)


# ---- GPU-free: the adapter through its public interface, over a fake tensorrt module and CUDA backend ---------
@pytest.fixture
def fake_trt(monkeypatch):
    """``tensorrt`` replaced by :mod:`fake_tensorrt` (one process-wide logger, enqueueV3's address check, a
    real ORT computation as the engine) and CUDA by ``FakeCuda``; yields (trt module, cuda)."""
    import sys

    from quantbench.runtimes import tensorrt_rt

    from .fake_tensorrt import make_fake_tensorrt

    cuda = FakeCuda()
    trt = make_fake_tensorrt(cuda)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(tensorrt_rt, "load_backend", lambda: cuda)
    monkeypatch.setattr(tensorrt_rt, "_LOGGER", None, raising=False)  # a fresh process as far as the logger goes
    return trt, cuda


def _tensorrt(tmp_path, path, batch=4, precision="fp32", **options):
    from quantbench.runtimes.tensorrt_rt import TensorRTRuntime

    rt = TensorRTRuntime("cuda:0", {"cache_dir": str(tmp_path / "engines"), **options})
    rt.activate(Artifact("onnx", precision, path), batch=batch)
    return rt


def _two_output_model(path: Path) -> Path:
    """fashion_model with a second graph output (the ReLU activations), listed after the logits."""
    model = onnx.load(str(fashion_model(path)))
    model.graph.output.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, ["N", 4, 13, 13]))
    save_model(model, path)
    return path


def _half_io_model(path: Path) -> Path:
    """y = Relu(x) with float16 input and output."""
    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "half",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT16, ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT16, ["N", 1, 28, 28])])
    save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_fake_engine_runs_the_model_and_reports_what_ran(tmp_path, fake_trt):
    """The fixture itself: a build, a cache hit, and outputs equal to ONNX Runtime's."""
    trt, cuda = fake_trt
    path = fashion_model(tmp_path / "m.onnx")
    x = next(iter(fashion_reader(4, 4)))[0]
    for cache in ("miss", "hit"):
        rt = _tensorrt(tmp_path, path)
        np.testing.assert_allclose(rt.fetch(rt.infer(rt.stage(x))), host_reference(path, x), rtol=1e-5, atol=1e-5)
        used = rt.settings_used()
        assert used["engine_cache"] == cache and used["profile_batch"] == [1, 4, 4]
        assert used["tf32"] is True and used["h2d_host_memory"] == "pinned"
        assert rt.execution_report()["exec_precision"] == "fp32"
        rt.deactivate()
    assert trt._state["builds"] == 1
    rt = _tensorrt(tmp_path, path, inspector_dir=str(tmp_path / "inspector"))
    report = rt.execution_report()
    saved, = (tmp_path / "inspector").glob("fp32-*.json")  # benchmarks/gpu_check.sh keeps these next to the rows
    assert json.loads(saved.read_text())["Layers"][0]["LayerType"] == "CaskConvolution"
    assert report["op_precisions"] == {"fp32": 1} and "inspector_dir" not in rt.settings_used()
    rt.deactivate()


def test_every_output_is_bound_and_the_first_is_fetched(tmp_path, fake_trt):
    """Issue 18 item 7: enqueueV3 fails unless every I/O tensor has an address."""
    path = _two_output_model(tmp_path / "two.onnx")
    x = next(iter(fashion_reader(4, 4)))[0]
    rt = _tensorrt(tmp_path, path)
    out = rt.fetch(rt.infer(rt.stage(x)))
    np.testing.assert_allclose(out, host_reference(path, x), rtol=1e-5, atol=1e-5)  # the logits, not "r"
    assert out.shape == (4, 10) and rt.settings_used()["outputs"] == ["logits", "r"]
    rt.deactivate()


def test_each_engine_reports_its_own_error_through_the_one_logger(tmp_path, fake_trt):
    """Issue 18 item 8: TensorRT logs to the first logger it was given; a second engine's error (two are
    alive during an interleaved speed-up) must still reach that engine's message, and an older error must
    not be reported as a newer failure's."""
    trt, _ = fake_trt
    first = _tensorrt(tmp_path, fashion_model(tmp_path / "a.onnx"))
    trt._state["fail_build"] = "Error Code 4: Internal Error (could not find any implementation for node conv)"
    with pytest.raises(RuntimeFailure) as err:
        _tensorrt(tmp_path, fashion_model(tmp_path / "b.onnx", seed=1))
    assert str(err.value).endswith("Error Code 4: Internal Error (could not find any implementation for node conv)")
    trt._state["fail_build"] = None
    trt._state["fail_execute"] = "Error Code 1: Cuda Runtime (an illegal memory access was encountered)"
    with pytest.raises(RuntimeFailure, match=r"execute_async_v3 failed: .*illegal memory access"):
        first.infer(first.stage(np.zeros((4, 1, 28, 28), np.float32)))
    first.deactivate()


def test_a_failure_without_a_message_does_not_borrow_an_older_one(tmp_path, fake_trt):
    trt, _ = fake_trt
    trt._state["fail_build"] = "Error Code 2: out of memory"
    with pytest.raises(RuntimeFailure, match="out of memory"):
        _tensorrt(tmp_path, fashion_model(tmp_path / "a.onnx"))
    trt._state["fail_build"] = None
    rt = _tensorrt(tmp_path, fashion_model(tmp_path / "b.onnx", seed=1))
    trt._state["fail_execute"] = ""  # fails, logs nothing
    with pytest.raises(RuntimeFailure) as err:
        rt.infer(rt.stage(np.zeros((4, 1, 28, 28), np.float32)))
    assert "out of memory" not in str(err.value) and str(err.value).endswith("no error message")
    rt.deactivate()


def test_tensorrt_events_bracket_the_enqueued_work_not_the_host_wait(tmp_path, fake_trt):
    """Issue 10 item 6: start/end events around each copy/execute, the stream wait after the end event."""
    _, cuda = fake_trt
    rt = _tensorrt(tmp_path, fashion_model(tmp_path / "m.onnx"))
    clock = rt.clock()
    x = next(iter(fashion_reader(4, 4)))[0]
    staged, _ = clock.time(rt.stage, x)
    out, _ = clock.time(rt.infer, staged)
    host, _ = clock.time(rt.fetch, out)
    assert spans(cuda.timeline, clock) == [["htod"], ["execute"], ["dtoh"]]
    for i, entry in enumerate(cuda.timeline):
        if entry[0] == "sync":
            assert cuda.timeline[i - 1] == ("record", clock.stop)  # every wait comes right after the end event
    np.testing.assert_allclose(host, host_reference(tmp_path / "m.onnx", x), rtol=1e-5, atol=1e-5)
    cuda.timeline.clear()
    rt.fetch(rt.infer(rt.stage(x)))  # outside the clock (warm-up, accuracy): still synchronised, no events
    assert [e[0] for e in cuda.timeline] == ["htod", "sync", "execute", "sync", "dtoh", "sync"]
    rt.deactivate()


def test_deactivating_one_engine_keeps_another_engines_pinned_buffers(tmp_path, fake_trt):
    """Issue 10 item 2: the FP32 reference deactivating must not free the variant's host buffers (FakeCuda
    poisons freed pinned memory, so a freed buffer would show as NaN outputs)."""
    path = fashion_model(tmp_path / "m.onnx")
    x = next(iter(fashion_reader(4, 4)))[0]
    variant, reference = _tensorrt(tmp_path, path), _tensorrt(tmp_path, path)
    variant.fetch(variant.infer(variant.stage(x)))
    reference.fetch(reference.infer(reference.stage(x)))
    reference.deactivate()
    staged = variant.stage(x)
    out = variant.fetch(variant.infer(staged))
    np.testing.assert_allclose(out, host_reference(path, x), rtol=1e-5, atol=1e-5)
    variant.deactivate()


def test_rejected_input_shape_and_engine_io_dtypes(tmp_path, fake_trt):
    """Issue 10 item 10: set_input_shape's result is checked; host buffers take the engine's I/O dtype."""
    static = onnx.load(str(fashion_model(tmp_path / "m.onnx")))
    static.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4
    save_model(static, tmp_path / "static.onnx")
    rt = _tensorrt(tmp_path, tmp_path / "static.onnx")
    with pytest.raises(RuntimeFailure,
                       match=r"input shape \(2, 1, 28, 28\) is outside the engine's profile \(batch 4..4\)"):
        rt.stage(np.ones((2, 1, 28, 28), np.float32))
    with pytest.raises(RuntimeFailure, match="built for batch <= 4, got 8"):
        rt.stage(np.ones((8, 1, 28, 28), np.float32))
    rt.deactivate()
    half = _tensorrt(tmp_path, _half_io_model(tmp_path / "half.onnx"), batch=2)
    x = np.full((2, 1, 28, 28), 0.5, np.float32)
    x[0, 0, 0, 0] = -1.0
    out = half.fetch(half.infer(half.stage(x)))
    assert out.dtype == np.float32 and out[0, 0, 0, 0] == 0.0 and (out.reshape(-1)[1:] == 0.5).all()
    half.deactivate()
