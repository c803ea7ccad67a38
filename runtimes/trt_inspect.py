"""What precision TensorRT engine layers ran in, from the engine inspector's JSON (no GPU needed to parse).

Two schemas (``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)`` with
detailed profiling verbosity):

- TensorRT 10.x: each layer tensor has one ``"Format/Datatype"`` string, short ("Half", "Int8")
  or long ("Row major linear FP16 format", "Thirty-two wide channel vectorized row major Int8
  format"); the engine's I/O are listed under ``"Bindings"`` as names.
- TensorRT 11.x: each layer tensor has separate ``"Datatype"`` and ``"Format"`` fields (the format
  string alone can name another type, e.g. "Row major linear FP32 format (kLINEAR)"), and the
  engine's I/O are objects under ``"I/O Tensors"``.

A layer's precision is its datatype fields, never a substring search of the whole JSON (a long
format string of any layer would otherwise count for every precision).
"""
from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

# Layers that only move, reinterpret or (de)quantize data: not counted.
SKIP_LAYER_TYPES = {"reformat", "noop", "shuffle", "constant", "slice", "concatenation", "identity", "cast",
                    "quantize", "dequantize", "shape_call"}
COMPUTE_HINTS = ("convolution", "gemm", "matrixmultiply", "fullyconnected", "deconvolution")
COMPUTE_NAME = re.compile(r"(^|[/_.\s+])(conv|gemm|matmul|fc)", re.IGNORECASE)
ORDER = ("int8", "fp8", "int4", "fp16", "bf16", "fp32")

# Datatype names as TensorRT prints them (DataType enum names and the short/long format words).
_DTYPES = {
    "int8": "int8", "fp8": "fp8", "int4": "int4", "fp4": "fp4", "half": "fp16", "fp16": "fp16",
    "bfloat16": "bf16", "bf16": "bf16", "float": "fp32", "fp32": "fp32", "float32": "fp32",
    "int32": None, "int64": None, "uint8": None, "bool": None, "double": None,
}


def tensor_precision(fmt: str) -> str | None:
    """The precision a datatype or 10.x "Format/Datatype" string names (None for integer indices, bool, unknown)."""
    words = re.findall(r"[a-z0-9]+", str(fmt).lower())
    for word in words:
        if word in _DTYPES:
            return _DTYPES[word]
    return None


def tensor_datatype(tensor: dict[str, Any]) -> str | None:
    """A layer input/output's precision: 11.x ``Datatype`` (or ``DataType``), else 10.x ``Format/Datatype``."""
    for key in ("Datatype", "DataType"):
        if tensor.get(key):
            return tensor_precision(str(tensor[key]))
    if tensor.get("Format/Datatype"):
        return tensor_precision(str(tensor["Format/Datatype"]))
    return None


def layer_precision(layer: dict[str, Any]) -> str | None:
    """A layer's compute precision: its weights' type, else its first typed input, else its outputs.

    Like TensorRT's engine explorer, the input decides: a convolution that reads int8 ran in int8
    even when it writes fp32, and an fp32 layer whose output is quantized ran in fp32.
    """
    weights = layer.get("Weights")
    if isinstance(weights, dict) and weights.get("Type"):
        prec = tensor_precision(str(weights["Type"]))
        if prec:
            return prec
    for key in ("Inputs", "Outputs"):
        for tensor in layer.get(key) or []:
            if isinstance(tensor, dict):
                prec = tensor_datatype(tensor)
                if prec:
                    return prec
    tactic = str(layer.get("TacticName", "")).lower()
    if "i8i8" in tactic or "int8" in tactic:
        return "int8"
    return None


def is_compute_layer(layer: dict[str, Any]) -> bool:
    """Convolutions and matrix products, by layer/parameter type or, for fused kernels, by ONNX node name."""
    kinds = (str(layer.get("LayerType", "")) + " " + str(layer.get("ParameterType", ""))).lower()
    return any(h in kinds for h in COMPUTE_HINTS) or bool(COMPUTE_NAME.search(str(layer.get("Name", ""))))


def schema_version(info: dict[str, Any]) -> str:
    """"10.x" (``Bindings``), "11.x" (``I/O Tensors``) or "unknown"."""
    if "I/O Tensors" in info:
        return "11.x"
    if "Bindings" in info:
        return "10.x"
    return "unknown"


def summarize_engine_layers(info: dict[str, Any] | str, requested: str = "") -> dict[str, Any]:
    """Count engine layers by precision; the int8 share counts convolutions/matrix products when present.

    ``info`` is the inspector's JSON (parsed or not). Engines built without detailed profiling
    verbosity list only layer names: then report ``requested`` as what was asked for, not what ran.
    """
    if isinstance(info, str):
        info = json.loads(info)
    layers = [layer for layer in info.get("Layers", []) if isinstance(layer, dict)]
    counts: Counter[str] = Counter()
    compute: Counter[str] = Counter()
    for layer in layers:
        if str(layer.get("LayerType", "")).lower() in SKIP_LAYER_TYPES:
            continue
        prec = layer_precision(layer)
        if prec is None:
            continue
        counts[prec] += 1
        if is_compute_layer(layer):
            compute[prec] += 1
    if not counts:
        note = "engine inspector reported no layer precisions (built without detailed profiling verbosity?)"
        return {"exec_precision": requested or None, "audit_note": f"{note}; requested {requested or 'unknown'}"}
    share_of = compute or counts
    total = sum(share_of.values())
    precision = next(iter(counts)) if len(counts) == 1 else "mixed"
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], ORDER.index(kv[0]) if kv[0] in ORDER else 99))
    note = f"engine layers ({schema_version(info)} inspector): " + ", ".join(f"{k} {v}" for k, v in ordered)
    if compute:
        note += "; convolutions/matrix products: " + ", ".join(f"{k} {v}" for k, v in compute.most_common())
    return {"exec_precision": precision, "int8_op_share": round(share_of.get("int8", 0) / total, 4),
            "op_precisions": dict(counts), "audit_note": note}
