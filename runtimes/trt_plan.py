"""TensorRT build decisions that need no GPU: precision path by TensorRT generation, cache keys, Q/DQ checks."""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .base import Artifact

TRT11_CALIBRATOR_REMOVED = (
    "TensorRT 11 removed implicit INT8 calibration (IInt8EntropyCalibrator2/IInt8MinMaxCalibrator): use an "
    "ONNX Runtime QDQ int8 variant (explicit quantization), or TensorRT 10.x (tox -e tensorrt10)")
CALIBRATORS = ("entropy", "minmax")


@dataclass(frozen=True)
class PrecisionPlan:
    """How to build an engine for one artifact on one TensorRT generation."""

    onnx_path: str
    strongly_typed: bool
    flags: tuple[str, ...] = ()  # builder flags: FP16, INT8 (TensorRT 10 only)
    calibrator: str | None = None  # entropy | minmax (TensorRT 10 only)
    note: str = ""
    options: dict[str, Any] = field(default_factory=dict)


def choose_precision_path(trt_major: int, artifact: Artifact, strongly_typed: bool = False) -> PrecisionPlan:
    """Pick the build recipe for ``artifact``; raise ValueError when this TensorRT cannot build it.

    TensorRT 10: FP16 from the fp32 ONNX with the FP16 builder flag (or, with ``strongly_typed``,
    from the fp16 ONNX as typed); INT8 from a QDQ file (explicit quantization, with the INT8 flag
    that weakly typed Q/DQ networks need) or from the fp32 ONNX with a calibrator
    (``trt-calibrate``). Unquantized layers of INT8 plans stay fp32 (no FP16 fallback), so an
    "int8" row measures INT8 against FP32 as on TensorRT 11. TensorRT 11+: no precision flags and
    no calibrators: strongly typed networks only, the precision is the ONNX file's.
    """
    path = str(artifact.path)
    if artifact.format == "trt-calibrate":
        if trt_major >= 11:
            raise ValueError(TRT11_CALIBRATOR_REMOVED)
        calibrator = str(artifact.settings.get("calibrator", "entropy"))
        if calibrator not in CALIBRATORS:
            raise ValueError(f"unknown TensorRT calibrator '{calibrator}' ({', '.join(CALIBRATORS)})")
        return PrecisionPlan(path, False, ("INT8",), calibrator,
                             f"TensorRT {trt_major}: implicit INT8 with the {calibrator} calibrator, other layers fp32")
    if artifact.format != "onnx":
        raise ValueError(f"tensorrt cannot build a '{artifact.format}' artifact")
    if trt_major >= 11:
        return PrecisionPlan(path, True, (), None, f"TensorRT {trt_major}: strongly typed, precision from the ONNX file")
    if artifact.precision == "fp16":
        if strongly_typed:
            return PrecisionPlan(path, True, (), None, "TensorRT 10: strongly typed from the fp16 ONNX")
        src = str(artifact.reference_path or artifact.path)
        return PrecisionPlan(src, False, ("FP16",), None, "TensorRT 10: fp32 ONNX built with the FP16 flag")
    if artifact.precision == "int8":
        if strongly_typed:
            return PrecisionPlan(path, True, (), None, "TensorRT 10: strongly typed explicit Q/DQ")
        return PrecisionPlan(path, False, ("INT8",), None, "TensorRT 10: explicit Q/DQ (INT8 flag), other layers fp32")
    return PrecisionPlan(path, strongly_typed, (), None, "TensorRT 10: fp32")


def engine_cache_key(model_bytes_sha256: str, plan: PrecisionPlan, options: dict[str, Any], trt_version: str,
                     gpu_name: str, compute_capability: tuple[int, int], batch: int | None,
                     artifact_settings: dict[str, Any] | None = None) -> str:
    """Everything that changes the engine's bytes, hashed."""
    payload = {"model": model_bytes_sha256, "plan": asdict(plan), "options": options, "trt": trt_version,
               "gpu": gpu_name, "cc": list(compute_capability), "batch": batch,
               "settings": dict(artifact_settings or {})}
    payload["plan"].pop("onnx_path", None)  # the content hash covers it; the path may move
    return _hash(payload)


def calibration_cache_key(model_bytes_sha256: str, calibrator: str, trt_version: str,
                          artifact_settings: dict[str, Any] | None = None) -> str:
    """The calibration table depends on the model, calibrator, data and TensorRT, not on the GPU or batch."""
    return _hash({"model": model_bytes_sha256, "calibrator": calibrator, "trt": trt_version,
                  "settings": dict(artifact_settings or {})})


def _hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


def qdq_problem(path: Path) -> str | None:
    """Why TensorRT cannot build this Q/DQ ONNX file, or None.

    TensorRT quantizes symmetrically to signed INT8: every QuantizeLinear/DequantizeLinear needs an
    int8 zero point equal to 0. ONNX Runtime's default QDQ activations (QUInt8, asymmetric) fail to
    parse, so say how to quantize instead of showing the parser's error.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name: i for i in model.graph.initializer}
    consts = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant" and n.output}
    problems: Counter[str] = Counter()
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3 or not node.input[2]:
            continue
        zp = node.input[2]
        if zp in inits:
            arr = numpy_helper.to_array(inits[zp])
        elif zp in consts:
            arr = numpy_helper.to_array(consts[zp].attribute[0].t)
        else:
            continue
        if arr.dtype.kind == "u" and arr.dtype.itemsize == 1:
            problems["uint8"] += 1
        elif arr.any():
            problems["non-zero zero point"] += 1
    if not problems:
        return None
    found = ", ".join(f"{n} {k}" for k, n in sorted(problems.items()))
    return (f"TensorRT needs symmetric signed INT8 Q/DQ, {Path(path).name} has {found} Q/DQ nodes: quantize with "
            "activation_type = 'QInt8', symmetric_activation = true (weight_type 'QInt8', symmetric_weight = true)")
