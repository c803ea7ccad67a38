"""OpenVINO adapter: compile, precision option, audit of what ran, bad input."""
from __future__ import annotations

import numpy as np
import pytest

from runtimes import Artifact, RuntimeFailure, create_runtime
from runtimes.audit import audit_warning

from .test_ort_cpu import reference, tiny_model

pytestmark = pytest.mark.openvino


def test_f32_matches_numpy_and_reports_what_ran(tmp_path):
    w, g = tiny_model(tmp_path / "m.onnx")
    x = np.random.default_rng(1).standard_normal((2, 1, 8, 8)).astype(np.float32)
    with create_runtime("openvino", "cpu", {"precision": "f32", "threads": 1}) as rt:
        rt.activate(Artifact("onnx", "fp32", tmp_path / "m.onnx"), batch=2)
        y = rt.fetch(rt.infer(rt.stage(x)))
        settings, report = rt.settings_used(), rt.execution_report()
    np.testing.assert_allclose(y, reference(x, w, g), rtol=1e-4, atol=1e-4)
    assert "f32" in settings["INFERENCE_PRECISION_HINT"].lower() or "float32" in settings["INFERENCE_PRECISION_HINT"]
    assert report["exec_precision"] == "fp32" and report["int8_op_share"] == 0.0
    assert audit_warning("fp32", report) == ""


@pytest.mark.ort_cpu
def test_int8_qdq_runs_in_int8(tmp_path):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    tiny_model(tmp_path / "m.onnx")
    data = [{"input": np.random.default_rng(i).standard_normal((4, 1, 8, 8)).astype(np.float32)} for i in range(4)]

    class Reader:
        def __init__(self):
            self.it = iter(data)

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(tmp_path / "m.onnx"), str(tmp_path / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    with create_runtime("openvino", "cpu") as rt:
        rt.activate(Artifact("onnx", "int8", tmp_path / "q.onnx"), batch=4)
        rt.fetch(rt.infer(rt.stage(data[0]["input"])))
        report = rt.execution_report()
    assert report["int8_op_share"] > 0.5 and report["op_precisions"].get("int8", 0) >= 1
    assert audit_warning("int8", report) == ""


def test_bad_device_precision_and_model(tmp_path):
    tiny_model(tmp_path / "m.onnx")
    art = Artifact("onnx", "fp32", tmp_path / "m.onnx")
    with pytest.raises(RuntimeFailure, match="unknown device 'npu.7'"):
        create_runtime("openvino", "npu.7").activate(art)
    with pytest.raises(RuntimeFailure, match="precision must be one of"):
        create_runtime("openvino", "cpu", {"precision": "int4"}).activate(art)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"nope")
    with pytest.raises(RuntimeFailure, match="could not read"):
        create_runtime("openvino", "cpu").activate(Artifact("onnx", "fp32", bad))


def test_audit_warnings():
    assert "mostly in float" in audit_warning("int8", {"int8_op_share": 0.1, "exec_precision": "mixed"})
    assert "ran in bf16" in audit_warning("fp32", {"exec_precision": "bf16"})
    assert audit_warning("int8", {"int8_op_share": 0.9}) == ""
