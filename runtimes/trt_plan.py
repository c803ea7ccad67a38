"""TensorRT build decisions that need no GPU: precision path by TensorRT generation, cache keys, Q/DQ checks."""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .base import Artifact

TRT11_CALIBRATOR_REMOVED = (
    "TensorRT 11 removed implicit INT8 calibration (IInt8EntropyCalibrator2/IInt8MinMaxCalibrator): use an "
    "ONNX Runtime QDQ int8 variant (explicit quantization), or TensorRT 10.x (tox -e tensorrt10)")
CALIBRATORS = ("entropy", "minmax")
# The TensorRT wheels by the CUDA major they are built for (cuda_mem.installed_cuda_major's argument).
TENSORRT_DISTS = {12: ("tensorrt-cu12", "tensorrt-cu12-libs"), 13: ("tensorrt-cu13", "tensorrt-cu13-libs")}


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
        return PrecisionPlan(path, True, (), None,
                             f"TensorRT {trt_major}: strongly typed, precision from the ONNX file")
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
                     artifact_settings: dict[str, Any] | None = None, calibration: str | None = None) -> str:
    """Everything that changes the engine's bytes, hashed.

    ``calibration`` is the fingerprint of the calibration data an implicit-INT8 engine was
    calibrated with (:func:`runtimes.trt_calibrator.calibration_fingerprint`): other data, another
    engine.
    """
    payload = {"model": model_bytes_sha256, "plan": asdict(plan), "options": options, "trt": trt_version,
               "calibration": calibration,
               "gpu": gpu_name, "cc": list(compute_capability), "batch": batch,
               "settings": dict(artifact_settings or {})}
    payload["plan"].pop("onnx_path", None)  # the content hash covers it; the path may move
    return _hash(payload)


def calibration_cache_key(model_bytes_sha256: str, calibrator: str, trt_version: str,
                          artifact_settings: dict[str, Any] | None = None, data_fingerprint: str | None = None) -> str:
    """The calibration table depends on the model, calibrator, data and TensorRT, not on the GPU or engine batch."""
    return _hash({"model": model_bytes_sha256, "calibrator": calibrator, "trt": trt_version,
                  "settings": dict(artifact_settings or {}), "data": data_fingerprint})


def profile_shapes(input_shape: tuple[int, ...], batch: int) -> tuple[tuple[int, ...], ...]:
    """(min, opt, max) optimisation-profile shapes for running ``batch`` on an input of ``input_shape``.

    A dynamic batch axis (-1) gets batch 1..``batch``; a static one must equal ``batch`` and then
    min = opt = max (a profile from 1 would contradict the fixed dimension). Other axes must be static.
    Raises ValueError with a one-line reason.
    """
    if not input_shape:
        raise ValueError("the input has no batch axis")
    sample = tuple(input_shape[1:])
    if any(d < 0 for d in sample):
        raise ValueError(f"needs static non-batch dimensions, the input is {tuple(input_shape)}")
    static = input_shape[0]
    if static > 0:
        if static != batch:
            raise ValueError(f"the input has a fixed batch of {static}, cannot run batch {batch}")
        fixed = (static, *sample)
        return fixed, fixed, fixed
    return (1, *sample), (batch, *sample), (batch, *sample)


def _hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


QDQ_FIX = ("quantize with activation_type = 'QInt8', symmetric_activation = true "
           "(weight_type 'QInt8', symmetric_weight = true)")
BIAS_FIX = "quantize with ORT's QuantizeBias = False (biases stay float)"


def qdq_problems(path: Path) -> Counter[str]:
    """Q/DQ nodes TensorRT's ONNX parser rejects, counted by kind.

    TensorRT quantizes symmetrically to signed INT8 (or FP8/INT4): every QuantizeLinear and
    DequantizeLinear needs a zero point of 0 and a quantized side of one of those types. ONNX
    Runtime's defaults break both: QUInt8 asymmetric activations ("uint8", "non-zero zero point")
    and biases quantized to int32 ("int32 bias").
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    consts = {i.name: i for i in model.graph.initializer}
    consts.update({n.output[0]: n.attribute[0].t for n in model.graph.node
                   if n.op_type == "Constant" and n.output and n.attribute})

    def dtype_of(name: str) -> np.dtype | None:
        return numpy_helper.to_array(consts[name]).dtype if name in consts else None

    problems: Counter[str] = Counter()
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zp = node.input[2] if len(node.input) > 2 and node.input[2] else None
        zp_arr = numpy_helper.to_array(consts[zp]) if zp in consts else None
        quantized = dtype_of(node.input[0]) if node.op_type == "DequantizeLinear" else None
        kind = zp_arr.dtype if zp_arr is not None else quantized
        if kind is not None and kind == np.int32:
            problems["int32 bias"] += 1
        elif kind is not None and kind == np.uint8:
            problems["uint8"] += 1
        elif zp_arr is not None and zp_arr.any():
            problems["non-zero zero point"] += 1
    return problems


def qdq_problem(path: Path, allow_int32_bias: bool = False) -> str | None:
    """Why TensorRT cannot build this Q/DQ ONNX file (one line that says how to quantize instead), or None.

    ``allow_int32_bias`` is for ONNX Runtime's TensorRT EP, which leaves int32 bias
    DequantizeLinear nodes (constants) to the CUDA EP and still runs the network in INT8.
    """
    problems = qdq_problems(path)
    if allow_int32_bias:
        problems.pop("int32 bias", None)
    if not problems:
        return None
    found = ", ".join(f"{n} {k}" for k, n in sorted(problems.items()))
    fixes = [fix for fix, kinds in ((QDQ_FIX, ("uint8", "non-zero zero point")), (BIAS_FIX, ("int32 bias",)))
             if any(k in problems for k in kinds)]
    return (f"TensorRT needs symmetric signed INT8 Q/DQ (zero point 0, no int32), {Path(path).name} has {found} "
            f"Q/DQ nodes: {' and '.join(fixes)}")


def int8_qdq_problem(artifact: Artifact) -> str | None:
    """:func:`qdq_problem` for an int8 ONNX artifact whose file exists (int32 biases allowed), else None.

    Both TensorRT adapters accept int32 biases: TensorRT's is folded at build (:func:`fold_int32_bias`),
    ONNX Runtime's TensorRT EP leaves those constants to the CUDA EP. The harness probes without a path.
    """
    if artifact.format == "onnx" and artifact.precision == "int8" and artifact.path and Path(artifact.path).is_file():
        return qdq_problem(Path(artifact.path), allow_int32_bias=True)
    return None


def fold_int32_bias(src: Path, dst: Path) -> int:
    """Write ``src`` to ``dst`` with every int32 (bias) DequantizeLinear of constants replaced by its float result.

    ONNX Runtime quantizes biases to int32 by default (``QuantizeBias``), and TensorRT's
    DequantizeLinear takes only int8/fp8/int4. The replacement is exact: the float bias is the
    DequantizeLinear's own output, ``(x - zero_point) * scale``. Returns how many nodes were folded.
    """
    import onnx
    from onnx import numpy_helper

    from quantbench.common.onnx_save import save_model

    model = onnx.load(str(src))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    folded, keep = [], []
    for node in graph.node:
        names = list(node.input) + [""] * (3 - len(node.input))
        x_name, scale_name, zp_name = names[:3]
        if node.op_type != "DequantizeLinear" or x_name not in inits or scale_name not in inits \
                or (zp_name and zp_name not in inits):
            keep.append(node)
            continue
        x = numpy_helper.to_array(inits[x_name])
        if x.dtype != np.int32:
            keep.append(node)
            continue
        scale = numpy_helper.to_array(inits[scale_name]).astype(np.float64)
        zp = numpy_helper.to_array(inits[zp_name]).astype(np.float64) if zp_name else 0.0
        if x.ndim > 1 and np.ndim(scale) == 1:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % x.ndim
            shape = [1] * x.ndim
            shape[axis] = -1
            scale = scale.reshape(shape)
            zp = np.reshape(zp, shape) if np.ndim(zp) == 1 else zp
        y = ((x.astype(np.float64) - zp) * scale).astype(np.float32)
        folded.append(numpy_helper.from_array(y, node.output[0]))
    if folded:
        del graph.node[:]
        graph.node.extend(keep)
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        remaining = [i for i in graph.initializer if i.name in used]
        del graph.initializer[:]
        graph.initializer.extend(remaining + folded)
    save_model(model, dst)
    return len(folded)
