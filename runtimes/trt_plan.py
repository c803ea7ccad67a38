"""TensorRT build decisions that need no GPU: precision path by TensorRT generation, engine cache key."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .base import Artifact

TRT11_CALIBRATOR_REMOVED = (
    "TensorRT 11 removed implicit INT8 calibration (IInt8EntropyCalibrator2/IInt8MinMaxCalibrator): use an "
    "ONNX Runtime QDQ int8 variant (explicit quantization), or TensorRT 10.x (tox -e tensorrt10)")


@dataclass(frozen=True)
class PrecisionPlan:
    """How to build an engine for one artifact on one TensorRT generation."""

    onnx_path: str
    strongly_typed: bool
    flags: tuple[str, ...] = ()  # builder flags: FP16, INT8
    calibrator: str | None = None  # entropy | minmax (TensorRT 10 only)
    note: str = ""
    options: dict[str, Any] = field(default_factory=dict)


def choose_precision_path(trt_major: int, artifact: Artifact) -> PrecisionPlan:
    """Pick the build recipe for ``artifact``; raise ValueError when this TensorRT cannot build it.

    TensorRT 10: FP16 from the fp32 ONNX with the FP16 builder flag; INT8 from a QDQ file (explicit
    quantization, INT8 flag allowed) or from the fp32 ONNX with a calibrator (``trt-calibrate``).
    TensorRT 11+: no precision flags and no calibrators: strongly typed networks only, so the
    precision is the ONNX file's (fp16 ONNX for FP16, QDQ ONNX for INT8).
    """
    path = str(artifact.path)
    if artifact.format == "trt-calibrate":
        if trt_major >= 11:
            raise ValueError(TRT11_CALIBRATOR_REMOVED)
        calibrator = str(artifact.settings.get("calibrator", "entropy"))
        if calibrator not in ("entropy", "minmax"):
            raise ValueError(f"unknown TensorRT calibrator '{calibrator}' (entropy, minmax)")
        return PrecisionPlan(path, False, ("INT8", "FP16"), calibrator,
                             f"TensorRT {trt_major}: implicit INT8 with the {calibrator} calibrator (FP16 fallback)")
    if artifact.format != "onnx":
        raise ValueError(f"tensorrt cannot build a '{artifact.format}' artifact")
    if trt_major >= 11:
        return PrecisionPlan(path, True, (), None, f"TensorRT {trt_major}: strongly typed, precision from the ONNX file")
    if artifact.precision == "fp16":
        src = str(artifact.reference_path or artifact.path)
        return PrecisionPlan(src, False, ("FP16",), None, "TensorRT 10: fp32 ONNX built with the FP16 flag")
    if artifact.precision == "int8":
        return PrecisionPlan(path, False, ("INT8", "FP16"), None, "TensorRT 10: explicit Q/DQ from the ONNX file")
    return PrecisionPlan(path, False, (), None, "TensorRT 10: fp32 (TF32 allowed by default)")


def engine_cache_key(model_bytes_sha256: str, plan: PrecisionPlan, options: dict[str, Any], trt_version: str,
                     gpu_name: str, compute_capability: tuple[int, int], batch: int | None) -> str:
    """Everything that changes the engine's bytes, hashed."""
    payload = {"model": model_bytes_sha256, "plan": asdict(plan), "options": options, "trt": trt_version,
               "gpu": gpu_name, "cc": list(compute_capability), "batch": batch}
    payload["plan"].pop("onnx_path", None)  # the content hash covers it; the path may move
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]
