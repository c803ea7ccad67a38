"""ONNX Runtime CPU audit: what the optimized graph says really ran (real QDQ models and crafted graphs)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantbench.common.onnx_save import with_lowest_ir_version
from quantbench.runtimes import Artifact, create_runtime
from quantbench.runtimes.audit import audit_warning
from quantbench.runtimes.ort_cpu import summarize_optimized_graph

from .test_openvino import batch, conv_model, quantized

pytestmark = pytest.mark.ort_cpu


def report_for(path, precision: str) -> dict:
    with create_runtime("ort-cpu", "cpu", {"threads": 1}) as rt:
        rt.activate(Artifact("onnx", precision, path), batch=2)
        rt.fetch(rt.infer(rt.stage(batch(2))))
        return rt.execution_report()


def test_fp32_model_shows_float(tmp_path):
    report = report_for(conv_model(tmp_path / "m.onnx"), "fp32")
    assert report["exec_precision"] == "fp32" and report["op_precisions"] == {"fp32": 3}
    assert report["int8_op_share"] == 0.0 and audit_warning("fp32", report) == ""


def test_quint8_qdq_model_shows_integer_nodes(tmp_path):
    report = report_for(quantized(tmp_path, "QUInt8"), "int8")
    # Both convolutions become QLinearConv and the Gemm QGemm; Q/DQ pairs are fused away.
    assert report["op_precisions"] == {"int8": 3} and report["int8_op_share"] == 1.0, report
    assert "integer" in report["audit_note"]
    assert audit_warning("int8", report) == ""


def test_qint8_activation_model_counts_every_compute_node(tmp_path):
    report = report_for(quantized(tmp_path, "QInt8"), "int8")
    # Which signed-int8 convolutions get integer kernels depends on the CPU; the audit must account
    # for all three compute nodes either way, and call float survivors by name.
    assert sum(report["op_precisions"].values()) == 3, report
    if report["op_precisions"].get("fp32"):
        assert report["exec_precision"] in ("mixed", "fp32") and "stayed float" in report["audit_note"]


def _save(tmp_path, nodes, inits, name="opt.onnx"):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4, 4])], inits)
    path = tmp_path / name
    # an ORT-optimized graph need not pass the checker
    onnx.save(with_lowest_ir_version(helper.make_model(graph)), str(path))
    return path


def test_optimized_graph_qint8_float_survivors(tmp_path):
    """A graph shaped like ORT 1.32's optimized QInt8 output: QLinearConv/QGemm plus an NCHWc Conv between Q/DQ."""
    w = numpy_helper.from_array(np.zeros((8, 8, 1, 1), np.float32), "w")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("QLinearConv", ["xq", "s", "z", "wq", "s", "z", "s", "z"], ["c1"], domain="com.microsoft"),
        helper.make_node("DequantizeLinear", ["c1", "s", "z"], ["d1"]),
        helper.make_node("ReorderInput", ["d1"], ["r1"], domain="com.microsoft.nchwc"),
        helper.make_node("Conv", ["r1", "w"], ["c2"], domain="com.microsoft.nchwc"),
        helper.make_node("ReorderOutput", ["c2"], ["o2"], domain="com.microsoft.nchwc"),
        helper.make_node("QuantizeLinear", ["o2", "s", "z"], ["q2"]),
        helper.make_node("QLinearAdd", ["q2", "s", "z", "c1", "s", "z", "s", "z"], ["a"], domain="com.microsoft"),
        helper.make_node("QGemm", ["a", "s", "z", "wq", "s", "z"], ["g"], domain="com.microsoft"),
        helper.make_node("DequantizeLinear", ["g", "s", "z"], ["y"]),
    ]
    report = summarize_optimized_graph(_save(tmp_path, nodes, [w]))
    assert report["op_precisions"] == {"int8": 2, "fp32": 1}
    assert report["exec_precision"] == "mixed" and report["int8_op_share"] == pytest.approx(0.6667)
    assert "1 other integer" in report["audit_note"] and "4 Q/DQ" in report["audit_note"]
    assert "1 compute nodes stayed float" in report["audit_note"]


def test_optimized_graph_fp16_weights_and_empty(tmp_path):
    w16 = numpy_helper.from_array(np.zeros((8, 8, 1, 1), np.float16), "w16")
    report = summarize_optimized_graph(_save(tmp_path, [helper.make_node("FusedConv", ["x", "w16"], ["y"],
                                                                         domain="com.microsoft")], [w16]))
    assert report["exec_precision"] == "fp16" and report["op_precisions"] == {"fp16": 1}
    assert audit_warning("fp16", report) == "" and audit_warning("fp32", report) != ""
    empty = summarize_optimized_graph(_save(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], [], "relu.onnx"))
    assert empty["exec_precision"] == "unknown" and empty["op_precisions"] == {} and empty["int8_op_share"] == 0.0


def test_every_label_is_checked_against_what_ran(tmp_path):
    """A prebuilt file labelled fp16 (or bf16) that is really an INT8 QDQ model is flagged, as fp32 is."""
    report = report_for(quantized(tmp_path, "QUInt8"), "fp16")
    assert report["exec_precision"] == "int8"
    assert audit_warning("fp16", report) == "FP16 row ran in int8 (int8 share 100%)"
    assert audit_warning("fp32", report) == "FP32 row ran in int8 (int8 share 100%)"
    assert audit_warning("bf16", report) == "BF16 row ran in int8 (int8 share 100%)"
    assert audit_warning("int8", report) == ""
    fp32 = report_for(conv_model(tmp_path / "m.onnx"), "fp32")
    assert audit_warning("int8", fp32) == "INT8 row ran mostly in float (int8 share 0%)"
    assert audit_warning("fp16", fp32) == "FP16 row ran in fp32 (the runtime upcast the model)"
    assert audit_warning("int8", {"exec_precision": "bf16"}) == "INT8 row ran in bf16"  # no share reported
    assert audit_warning("fp16", {"exec_precision": "mixed", "op_precisions": {"fp16": 2, "int8": 1},
                                  "int8_op_share": 0.33}) == "FP16 row ran partly in int8 (int8 share 33%)"
