"""ONNX Runtime on the CPU execution provider."""
from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .base import Artifact, Availability, Runtime, RuntimeFailure, missing_package

# Compute nodes (convolutions, matrix products) as they appear in ORT 1.32 optimized CPU graphs.
# Integer kernels come from the QDQ fusions (com.microsoft QLinearConv, QGemm, ...); float ones may
# be renamed by fusions (FusedConv) or the NCHWc layout pass (domain com.microsoft.nchwc, op "Conv").
INTEGER_OPS = {
    "QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul", "QAttention", "QLinearConvTranspose",
}
FLOAT_COMPUTE_OPS = {"Conv", "MatMul", "Gemm", "FusedConv", "FusedMatMul", "FusedGemm", "ConvTranspose",
                     "NhwcFusedConv", "NhwcConv", "Attention"}
# Integer element-wise / pooling ops: reported in the note, not counted as compute layers (the share
# compares like with like across runtimes: convolutions and matrix products only).
INTEGER_OTHER_OPS = {
    "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearConcat",
    "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax", "QLinearReduceMean", "QLinearWhere",
}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


def summarize_optimized_graph(path: Path) -> dict[str, Any]:
    """Count integer vs float (fp32/fp16) compute nodes in an ORT-optimised ONNX graph.

    Only convolutions and matrix products count. A float compute node left between Q/DQ pairs (ORT
    found no integer kernel for it, e.g. many signed-int8-activation convolutions on x86) counts as
    float: that is what ran. A float node counts as fp16 when its weight is float16; ORT CPU has few
    fp16 kernels and inserts Casts to run the rest in fp32, which then shows here as fp32.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    weight_types = {i.name: i.data_type for i in model.graph.initializer}
    counts: Counter[str] = Counter()
    other_int = qdq = 0
    for node in model.graph.node:
        op = node.op_type
        if op in INTEGER_OPS:
            counts["int8"] += 1
        elif op in FLOAT_COMPUTE_OPS:
            wtype = weight_types.get(node.input[1]) if len(node.input) > 1 else None
            counts["fp16" if wtype == onnx.TensorProto.FLOAT16 else "fp32"] += 1
        elif op in INTEGER_OTHER_OPS:
            other_int += 1
        elif op in QDQ_OPS:
            qdq += 1
    total = sum(counts.values())
    if total == 0:
        precision = "unknown"
    elif len(counts) == 1:
        precision = next(iter(counts))
    else:
        precision = "mixed"
    floats = counts["fp32"] + counts["fp16"]
    note = (f"ORT optimized graph, compute nodes: {counts['int8']} integer, {counts['fp32']} fp32, "
            f"{counts['fp16']} fp16; {other_int} other integer nodes; {qdq} Q/DQ nodes left unfused")
    if counts["int8"] and floats and qdq:
        note += f" ({floats} compute nodes stayed float between Q/DQ pairs)"
    return {
        "int8_op_share": round(counts["int8"] / total, 4) if total else 0.0,
        "exec_precision": precision,
        "op_precisions": {k: v for k, v in counts.items() if v},
        "audit_note": note,
    }


class OrtCpuRuntime(Runtime):
    """ONNX Runtime, CPUExecutionProvider. Options: threads, inter_threads, graph_optimization."""

    name = "ort-cpu"
    extra = "ort"
    tox_env = "ort-cpu"

    @classmethod
    def availability(cls) -> Availability:
        missing = missing_package("onnxruntime", cls.extra, cls.tox_env)
        if missing:
            return missing
        import onnxruntime as ort

        if "CPUExecutionProvider" not in ort.get_available_providers():
            return Availability(False, "onnxruntime has no CPUExecutionProvider", "pip install .[ort]")
        return Availability(True)

    @classmethod
    def versions(cls) -> dict[str, str]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__}

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return ("threads", "inter_threads", "graph_optimization")

    def _session_options(self) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3  # errors only: saving the optimized graph warns about NCHWc every time
        threads = self.options.get("threads")
        if threads:
            so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = int(self.options.get("inter_threads", 1))
        level = str(self.options.get("graph_optimization", "all")).lower()
        levels = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        if level not in levels:
            raise RuntimeFailure(f"ort-cpu: graph_optimization must be one of {sorted(levels)}, not '{level}'")
        so.graph_optimization_level = levels[level]
        self._tmpdir = tempfile.TemporaryDirectory(prefix="qb-ort-")
        # Ask ORT to write the graph it will really execute: the audit reads it.
        so.optimized_model_filepath = os.path.join(self._tmpdir.name, "optimized.onnx")
        return so

    def _activate_impl(self, artifact: Artifact) -> None:
        import onnxruntime as ort

        if self.device != "cpu":
            raise RuntimeFailure(f"ort-cpu runs on device 'cpu', not '{self.device}'")
        so = self._session_options()
        try:
            self.session = ort.InferenceSession(str(artifact.path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises several exception types; keep one line
            raise RuntimeFailure(f"ort-cpu could not load {artifact.path}: {str(exc).splitlines()[0]}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self._applied = {
            "threads": so.intra_op_num_threads or "default",
            "inter_threads": so.inter_op_num_threads,
            "graph_optimization": str(self.options.get("graph_optimization", "all")),
            "providers": self.session.get_providers(),
        }

    def _infer_impl(self, staged: np.ndarray) -> Any:
        try:
            return self.session.run([self.output_name], {self.input_name: staged})[0]
        except Exception as exc:  # noqa: BLE001 - as above
            raise RuntimeFailure(f"ort-cpu inference failed: {str(exc).splitlines()[0]}") from None

    def settings_used(self) -> dict[str, Any]:
        return dict(getattr(self, "_applied", self.options))

    def execution_report(self) -> dict[str, Any]:
        path = Path(self._tmpdir.name) / "optimized.onnx"
        if not path.exists():
            return {"audit_note": "ORT did not write its optimized graph"}
        return summarize_optimized_graph(path)

    def _deactivate_impl(self) -> None:
        self.session = None
        self._tmpdir.cleanup()
