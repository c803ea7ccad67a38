"""ONNX Runtime dynamic quantization (``mode = "dynamic"``): weights quantized ahead of time,
activations quantized at run time from each batch's own range, so no calibration data is read.

ORT writes integer operators (``ConvInteger``/``MatMulInteger`` after ``DynamicQuantizeLinear``), not
QDQ; which of them a runtime can execute is that runtime's business and is recorded per row. ORT's
CPU kernels (checked on 1.32) load and run ``ConvInteger`` and ``MatMulInteger`` with int8 weights
(``weight_type = "QInt8"``, the default) as well as uint8 ones (``"QUInt8"``).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any


def quantize_dynamic_model(fp32_path: Path, out_path: Path, settings: Any) -> list[str]:
    """Quantize ``fp32_path`` dynamically to ``out_path`` as ``settings`` (a dynamic QuantSettings) say;
    returns notes worth recording."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from quantbench.common.onnx_save import lower_ir_version

    from .quantize import check_exclude_nodes, pre_processed

    if settings.mode != "dynamic":
        raise ValueError("quantize_dynamic_model needs mode = 'dynamic' settings")
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="qb-dyn-") as tmpdir:
        pre = pre_processed(Path(fp32_path), Path(tmpdir), notes)
        check_exclude_nodes(pre, settings.exclude_nodes)
        qtype = {"QUInt8": QuantType.QUInt8, "QInt8": QuantType.QInt8}[settings.weight_type]
        quantize_dynamic(
            str(pre), str(out_path), op_types_to_quantize=list(settings.op_types) if settings.op_types else None,
            per_channel=settings.per_channel, reduce_range=settings.reduce_range, weight_type=qtype,
            nodes_to_exclude=list(settings.exclude_nodes),
            extra_options={"WeightSymmetric": settings.symmetric_weight})
    lower_ir_version(out_path)  # ORT stamps onnx's newest IR, which older runtimes refuse
    if not integer_ops(out_path):
        notes.append("dynamic quantization changed no operator (nothing ORT quantizes dynamically matched "
                     f"op_types {list(settings.op_types) if settings.op_types else 'all'}): the model runs in float")
    return notes


def integer_ops(path: Path) -> dict[str, int]:
    """Count of ORT's dynamic-quantization operators in a model (what ``quantize_dynamic`` really changed)."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.op_type in ("ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul",
                            "QAttention", "DynamicQuantizeLSTM"):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
