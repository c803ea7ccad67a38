"""What precision TensorRT engine layers ran in, from the engine inspector's JSON (no GPU needed to parse)."""
from __future__ import annotations

import json
from collections import Counter
from typing import Any

# Layers that only move or reinterpret data: not counted.
SKIP_LAYER_TYPES = {"Reformat", "NoOp", "Shuffle", "Constant", "Slice", "Concatenation", "Identity", "Cast",
                    "Quantize", "Dequantize"}
COMPUTE_HINTS = ("convolution", "gemm", "matrixmultiply", "fullyconnected", "deconvolution")


def tensor_precision(fmt: str) -> str | None:
    """Precision named by an inspector "Format/Datatype" string, short ("Half") or long ("... FP16 format")."""
    f = fmt.lower()
    if "int8" in f:
        return "int8"
    if "fp8" in f:
        return "fp8"
    if "bf16" in f or "bfloat" in f:
        return "bf16"
    if "fp16" in f or "half" in f:
        return "fp16"
    if "fp32" in f or "float" in f:
        return "fp32"
    return None


def layer_precision(layer: dict[str, Any]) -> str | None:
    """A layer's compute precision: the lowest precision among its inputs, weights, outputs and tactic."""
    fmts = [str(t.get("Format/Datatype", "")) for key in ("Inputs", "Outputs") for t in layer.get(key) or []
            if isinstance(t, dict)]
    weights = layer.get("Weights")
    if isinstance(weights, dict) and weights.get("Type"):
        fmts.append(str(weights["Type"]))
    precs = {p for p in (tensor_precision(f) for f in fmts) if p}
    tactic = str(layer.get("TacticName", "")).lower()
    if "i8i8" in tactic or "int8" in tactic:
        precs.add("int8")
    for p in ("int8", "fp8", "fp16", "bf16", "fp32"):
        if p in precs:
            return p
    return None


def summarize_engine_layers(info: dict[str, Any] | str, requested: str = "") -> dict[str, Any]:
    """Count engine layers by precision; the int8 share counts convolutions/matrix products when present.

    ``info`` is ``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)`` (parsed or
    not). Engines built without detailed profiling verbosity list only layer names: then report
    ``requested`` as what was asked for, not what ran.
    """
    if isinstance(info, str):
        info = json.loads(info)
    layers = [layer for layer in info.get("Layers", []) if isinstance(layer, dict)]
    counts: Counter[str] = Counter()
    compute: Counter[str] = Counter()
    for layer in layers:
        ltype = str(layer.get("LayerType", ""))
        if ltype in SKIP_LAYER_TYPES:
            continue
        prec = layer_precision(layer)
        if prec is None:
            continue
        counts[prec] += 1
        name = (ltype + " " + str(layer.get("Name", ""))).lower()
        if any(h in name for h in COMPUTE_HINTS):
            compute[prec] += 1
    if not counts:
        note = "engine inspector reported no layer precisions (built without detailed profiling verbosity?)"
        return {"exec_precision": requested or None, "audit_note": f"{note}; requested {requested or 'unknown'}"}
    share_of = compute or counts
    total = sum(share_of.values())
    precision = next(iter(counts)) if len(counts) == 1 else "mixed"
    note = "engine layers: " + ", ".join(f"{k} {v}" for k, v in counts.most_common())
    if compute:
        note += "; convolutions/matrix products: " + ", ".join(f"{k} {v}" for k, v in compute.most_common())
    return {"exec_precision": precision, "int8_op_share": round(share_of.get("int8", 0) / total, 4),
            "op_precisions": dict(counts), "audit_note": note}
