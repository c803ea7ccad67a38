"""OpenVINO adapter: compile and run, precision option, static batch, audit of what ran, bad input."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantbench.common.onnx_save import with_lowest_ir_version
from quantbench.runtimes import Artifact, RuntimeFailure, create_runtime
from quantbench.runtimes.audit import audit_warning

SHAPE = (3, 16, 16)


def conv_model(path, seed: int = 0):
    """Conv+ReLU, Conv+ReLU, Flatten, Gemm with a dynamic batch axis; returns the path."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n) for n, s in
             (("w1", (8, 3, 3, 3)), ("b1", (8,)), ("w2", (8, 8, 3, 3)), ("b2", (8,)), ("g", (10, 8 * 16 * 16)))]
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Flatten", ["r2"], ["f"]),
             helper.make_node("Gemm", ["f", "g"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "convnet",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *SHAPE])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    onnx.save(with_lowest_ir_version(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])), str(path))
    return path


def batch(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *SHAPE)).astype(np.float32)


def quantized(tmp_path, activation: str = "QUInt8"):
    """ORT static QDQ int8 of :func:`conv_model` (per-channel QInt8 weights, MinMax)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    src = conv_model(tmp_path / "m.onnx")
    data = iter([{"input": batch(4, seed)} for seed in range(4)])

    class Reader:
        def get_next(self):
            return next(data, None)

    out = tmp_path / f"q_{activation}.onnx"
    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=getattr(QuantType, activation), weight_type=QuantType.QInt8, per_channel=True)
    return out


def ort_output(path, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def device_default_precision() -> str:
    import openvino as ov

    return ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()


@pytest.mark.openvino
@pytest.mark.ort_cpu
def test_f32_matches_ort_and_settings_are_read_back(tmp_path):
    path = conv_model(tmp_path / "m.onnx")
    x = batch(2)
    with create_runtime("openvino", "cpu", {"precision": "f32", "threads": 1}) as rt:
        rt.activate(Artifact("onnx", "fp32", path), batch=2)
        y = rt.fetch(rt.infer(rt.stage(x)))
        settings, report = rt.settings_used(), rt.execution_report()
    np.testing.assert_allclose(y, ort_output(path, x), rtol=1e-4, atol=1e-4)
    assert settings["INFERENCE_PRECISION_HINT"] == "f32"
    assert settings["INFERENCE_NUM_THREADS"] == 1 and settings["PERFORMANCE_HINT"] == "LATENCY"
    assert settings["EXECUTION_DEVICES"] == ["CPU"] and settings["static_batch"] == 2
    assert set(settings["compile_ms"]) == {"2"} and settings["compile_ms"]["2"] > 0
    assert report["exec_precision"] == "fp32" and report["op_precisions"] == {"fp32": 3}
    assert report["int8_op_share"] == 0.0 and audit_warning("fp32", report) == ""


@pytest.mark.openvino
def test_default_precision_reports_what_the_device_ran(tmp_path):
    default = device_default_precision()  # "bf16" on AVX-512 BF16 / AMX CPUs, else "f32"
    with create_runtime("openvino", "cpu", {"threads": 1}) as rt:
        rt.activate(Artifact("onnx", "fp32", conv_model(tmp_path / "m.onnx")), batch=1)
        rt.fetch(rt.infer(rt.stage(batch(1))))
        settings, report = rt.settings_used(), rt.execution_report()
    assert settings["INFERENCE_PRECISION_HINT"] == default and settings["precision_requested"] == "default"
    ran = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}[default]
    assert report["op_precisions"].get(ran, 0) >= 2, report
    assert (audit_warning("fp32", report) == "") == (report["exec_precision"] == "fp32")


@pytest.mark.openvino
def test_static_batch_recompiles_for_another_batch(tmp_path):
    with create_runtime("openvino", "cpu", {"precision": "f32", "threads": 1}) as rt:
        rt.activate(Artifact("onnx", "fp32", conv_model(tmp_path / "m.onnx")))  # batch unknown: compile on stage
        assert rt.settings_used()["compile_ms"] == {}
        one = rt.fetch(rt.infer(rt.stage(batch(3)[:1].copy())))
        three = rt.fetch(rt.infer(rt.stage(batch(3))))
        settings = rt.settings_used()
    assert one.shape == (1, 10) and three.shape == (3, 10)
    np.testing.assert_allclose(one[0], three[0], rtol=1e-5, atol=1e-5)
    assert set(settings["compile_ms"]) == {"1", "3"} and settings["static_batch"] == 3


@pytest.mark.openvino
def test_staged_input_is_shared_not_copied(tmp_path):
    with create_runtime("openvino", "cpu", {"precision": "f32", "threads": 1}) as rt:
        rt.activate(Artifact("onnx", "fp32", conv_model(tmp_path / "m.onnx")), batch=2)
        x = batch(2)
        staged = rt.stage(x)
        assert np.shares_memory(staged.data, x)
        assert rt.stage(x) is staged  # same batch again: nothing to do
        before = rt.fetch(rt.infer(staged))
        x *= 2  # the request reads the caller's buffer
        after = rt.fetch(rt.infer(rt.stage(x)))
        # binding a host buffer is not a device copy: the harness reports h2d/d2h as null (n/a)
        assert rt.host_memory is True
    assert not np.allclose(before, after)


@pytest.mark.openvino
@pytest.mark.ort_cpu
def test_int8_qdq_runs_in_int8(tmp_path):
    path = quantized(tmp_path)
    x = batch(4)
    with create_runtime("openvino", "cpu", {"threads": 1}) as rt:
        rt.activate(Artifact("onnx", "int8", path), batch=4)
        y = rt.fetch(rt.infer(rt.stage(x)))
        report = rt.execution_report()
    assert report["op_precisions"].get("int8", 0) >= 2 and report["int8_op_share"] >= 0.5, report
    assert audit_warning("int8", report) == ""
    assert audit_warning("fp32", report) != ""
    # OpenVINO's int8 kernels agree with ORT on the same QDQ file up to a few quantisation steps.
    ref = ort_output(path, x)
    assert (y.argmax(1) == ref.argmax(1)).mean() >= 0.75
    assert np.abs(y - ref).max() < 0.1 * np.abs(ref).max()


@pytest.mark.openvino
def test_unknown_device_lists_available(tmp_path):
    art = Artifact("onnx", "fp32", conv_model(tmp_path / "m.onnx"))
    with pytest.raises(RuntimeFailure, match=r"unknown device 'npu\.7' \(available: .*cpu"):
        create_runtime("openvino", "npu.7").activate(art)


@pytest.mark.openvino
def test_bad_precision_option_and_model(tmp_path):
    import openvino as ov

    art = Artifact("onnx", "fp32", conv_model(tmp_path / "m.onnx"))
    with pytest.raises(RuntimeFailure, match="precision must be one of"):
        create_runtime("openvino", "cpu", {"precision": "int4"}).activate(art)
    with pytest.raises(RuntimeFailure, match="hint must be one of"):
        create_runtime("openvino", "cpu", {"hint": "fast"}).activate(art)
    with pytest.raises(RuntimeFailure, match="unknown option"):
        create_runtime("openvino", "cpu", {"nthreads": 2}).activate(art)
    caps = [str(c).upper() for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    lacking = [p for p, cap in (("bf16", "BF16"), ("f16", "FP16")) if cap not in caps]
    if lacking:
        with pytest.raises(RuntimeFailure, match=f"does not support precision {lacking[0]}"):
            create_runtime("openvino", "cpu", {"precision": lacking[0]}).activate(art)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"nope")
    with pytest.raises(RuntimeFailure, match="could not read"):
        create_runtime("openvino", "cpu").activate(Artifact("onnx", "fp32", bad))


@pytest.mark.openvino
def test_availability_and_devices():
    from quantbench.runtimes.openvino_rt import OpenVinoRuntime

    assert OpenVinoRuntime.availability().ok
    assert "cpu" in OpenVinoRuntime.devices()
    assert OpenVinoRuntime.versions()["openvino"]


def test_device_names_map_to_openvino():
    from quantbench.runtimes.openvino_rt import ov_device

    assert ov_device("cpu", ["CPU", "GPU"]) == "CPU"
    assert ov_device("gpu.0", ["CPU", "GPU"]) == "GPU"  # one GPU is listed without an index
    assert ov_device("gpu", ["CPU", "GPU.0", "GPU.1"]) == "GPU.0"
    assert ov_device("gpu.1", ["CPU", "GPU.0", "GPU.1"]) == "GPU.1"
    with pytest.raises(RuntimeFailure, match=r"unknown device 'npu' \(available: cpu, gpu\)"):
        ov_device("npu", ["CPU", "GPU"])


def test_missing_package_hint(monkeypatch):
    import importlib.util

    from quantbench.runtimes.openvino_rt import OpenVinoRuntime

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    avail = OpenVinoRuntime.availability()
    assert not avail.ok and "pip install .[openvino]" in avail.hint and "tox -e openvino" in avail.hint


def test_audit_warnings():
    assert audit_warning("int8", {"int8_op_share": 0.12, "exec_precision": "mixed"}) == \
        "INT8 row ran mostly in float (int8 share 12%)"
    assert audit_warning("int8", {"int8_op_share": 0.9, "exec_precision": "mixed"}) == ""
    assert (audit_warning("fp32", {"exec_precision": "bf16"})
            == "FP32 row ran in bf16 (set precision='f32' for true f32)")
    assert audit_warning("fp32", {"exec_precision": "fp32", "int8_op_share": 0.0}) == ""
    assert "mixed" in audit_warning("fp32", {"exec_precision": "mixed", "op_precisions": {"bf16": 50, "fp32": 4}})
    assert audit_warning("fp16", {"exec_precision": "fp32"}).startswith("FP16 row ran in fp32")
    assert audit_warning("fp16", {"exec_precision": "fp16"}) == ""
    assert audit_warning("int8", {}) == "" and audit_warning("fp32", {"audit_note": "n/a"}) == ""
    for warning in (audit_warning("int8", {"int8_op_share": 0.0}), audit_warning("fp32", {"exec_precision": "f16"})):
        assert warning and "\n" not in warning
