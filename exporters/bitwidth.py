"""Weights below 8 bits: which weights, on which grid, how they are stored, and the packed size.

A ``weight_bits = b`` variant (b = 4 or 3; 8 bits is ORT's own quantization) puts the weights of Conv,
Gemm and MatMul nodes on a symmetric grid
``scale * k`` with integers ``|k| <= 2**(b-1) - 1`` and ``scale = max|w| / (2**(b-1) - 1)`` per output
channel (per tensor when ``per_channel = false``); activations stay 8-bit. The grid is handed to
ORT's ``quantize_static`` as explicit per-channel scales (``TensorQuantOverrides``), so ORT computes
the integer weights *and* the int32 bias scales from it, and the two storages hold the same values:

- ``int4``: real INT4 weights (ONNX ``DequantizeLinear`` with an INT4 input needs opset 21, so the
  graph is converted first); what a runtime does with it is its own business and is recorded per row.
- ``simulated``: the same grid stored in INT8 (accuracy-only study; any runtime runs it).

``packed_size_bytes`` is the size a file would have with those weights packed at ``b`` bits (their
scales and everything else as stored).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

GRID_OPS = ("Conv", "Gemm", "MatMul")
INT4_OPSET = 21  # first ONNX opset whose DequantizeLinear takes INT4
# Ops whose INT4 weights this module hands to ORT's quantizer (checked to build and run on ORT CPU);
# weights of any other op in GRID_OPS would be simulated.
INT4_OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class WeightGrid:
    """One weight tensor's low-bit grid."""

    name: str  # initializer name
    node: str  # consuming node
    op_type: str
    axis: int | None  # output-channel axis; None: one scale for the tensor
    bits: int
    storage: str  # "int8" | "int4" | "simulated"
    scale: np.ndarray  # float32, one per channel (shape (C,)) or a scalar array

    @property
    def qmax(self) -> int:
        return qmax(self.bits)


def qmax(bits: int) -> int:
    """Largest grid integer of a symmetric ``bits``-bit grid (7 for 4 bits, 3 for 3 bits)."""
    return 2 ** (bits - 1) - 1


def channel_axis(op_type: str, node_attrs: dict[str, Any], rank: int) -> int:
    """The output-channel axis of a weight: Conv 0; Gemm 0 if transB else 1; MatMul the last."""
    if op_type == "Conv":
        return 0
    if op_type == "Gemm":
        return 0 if node_attrs.get("transB", 0) else 1
    return rank - 1


def grid_scale(w: np.ndarray, bits: int, axis: int | None) -> np.ndarray:
    """Symmetric scale ``max|w| / qmax`` per channel along ``axis`` (or one for the tensor); 1.0 where
    a channel is all zeros (any scale puts it at 0)."""
    w = np.asarray(w, dtype=np.float32)
    if axis is None:
        amax = np.array(np.abs(w).max() if w.size else 0.0, dtype=np.float32)
    else:
        other = tuple(i for i in range(w.ndim) if i != axis)
        amax = np.abs(w).max(axis=other) if other else np.abs(w)
    scale = (amax.astype(np.float64) / qmax(bits)).astype(np.float32)
    return np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)


def round_nearest(w: np.ndarray, scale: np.ndarray, bits: int, axis: int | None) -> np.ndarray:
    """Grid integers by round-to-nearest (ties to even, as ORT), clipped to ``[-qmax, qmax]``."""
    s = scale if axis is None else np.expand_dims(scale, [i for i in range(w.ndim) if i != axis])
    q = np.rint(np.asarray(w, dtype=np.float32) / s)
    return np.clip(q, -qmax(bits), qmax(bits)).astype(np.int8)


def plan_grids(model_path: Path, settings: Any) -> list[WeightGrid]:
    """The weights that get a ``settings.weight_bits`` grid below 8 bits. Empty at 8 bits (the model is
    not read): ORT's own 8-bit quantization is used as is, with its ``weight_type``, ``reduce_range`` and
    ``symmetric_weight``, whatever the ``weight_rounding`` (GPTQ/GPFQ then round on ORT's grid, so they
    are compared with round-to-nearest on the same grid). ``model_path`` is the (pre-processed) ONNX file."""
    import onnx
    from onnx import helper, numpy_helper

    if settings.weight_bits == 8:
        return []
    model = onnx.load(str(model_path))
    inits = {i.name: i for i in model.graph.initializer}
    wanted = set(settings.op_types) if settings.op_types else None
    excluded = set(settings.exclude_nodes)
    storage = settings.resolved_weight_storage
    grids: list[WeightGrid] = []
    seen: set[str] = set()
    for node in model.graph.node:
        if node.op_type not in GRID_OPS or len(node.input) < 2 or node.input[1] not in inits:
            continue
        if (wanted is not None and node.op_type not in wanted) or node.name in excluded or node.input[1] in seen:
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        if w.dtype not in (np.float32, np.float16) or w.ndim < 2:
            continue
        seen.add(node.input[1])
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axis = channel_axis(node.op_type, attrs, w.ndim) if settings.per_channel else None
        kind = storage if storage != "int4" or node.op_type in INT4_OPS else "simulated"
        grids.append(WeightGrid(node.input[1], node.name, node.op_type, axis, settings.weight_bits, kind,
                                grid_scale(w, settings.weight_bits, axis)))
    return grids


def tensor_overrides(grids: list[WeightGrid]) -> dict[str, list[dict[str, Any]]]:
    """ORT ``TensorQuantOverrides`` putting each weight on its grid (explicit scales, zero point 0)."""
    from onnxruntime.quantization import QuantType

    out: dict[str, list[dict[str, Any]]] = {}
    for g in grids:
        qtype = QuantType.QInt4 if g.storage == "int4" else QuantType.QInt8
        if g.axis is None:
            out[g.name] = [{"quant_type": qtype, "scale": np.float32(g.scale), "zero_point": np.int8(0)}]
        else:
            chans = [{"scale": np.float32(s), "zero_point": np.int8(0)} for s in g.scale.reshape(-1)]
            chans[0].update({"axis": g.axis, "quant_type": qtype})
            out[g.name] = chans
    return out


def needs_opset21(grids: list[WeightGrid]) -> bool:
    return any(g.storage == "int4" for g in grids)


def upgrade_opset(src: Path, dst: Path) -> None:
    """Convert ``src`` to opset 21 (INT4 DequantizeLinear) at ``dst``; one-line ValueError when it cannot."""
    import onnx
    from onnx import version_converter

    from quantbench.common.onnx_save import save_model

    model = onnx.load(str(src))
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if current < INT4_OPSET:
        try:
            model = version_converter.convert_version(model, INT4_OPSET)
        except Exception as exc:  # noqa: BLE001 - the converter raises assorted errors
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"weight_storage 'int4' needs opset {INT4_OPSET} and the graph (opset {current}) "
                             f"could not be converted: {text}; use weight_storage = 'simulated'") from None
    save_model(model, dst)


def weight_tensors(model: Any) -> list[tuple[str, str, Any]]:
    """(consuming op type, node name, quantized initializer) for each grid-op weight fed by a DequantizeLinear."""
    inits = {i.name: i for i in model.graph.initializer}
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    out = []
    for node in model.graph.node:
        if node.op_type in GRID_OPS and len(node.input) > 1 and node.input[1] in dq:
            src = dq[node.input[1]].input[0]
            if src in inits:
                out.append((node.op_type, node.name, inits[src]))
    return out


def _stored_bytes(t: Any) -> int:
    from onnx import TensorProto, helper

    n = math.prod(t.dims)
    if t.raw_data:
        return len(t.raw_data)
    if t.data_type in (TensorProto.INT4, TensorProto.UINT4):
        return (n + 1) // 2
    return n * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


def packed_size_bytes(path: Path, bits: int, file_size: int) -> int:
    """``file_size`` with every quantized Conv/Gemm/MatMul weight counted at ``bits`` bits per value
    (``ceil(n * bits / 8)`` bytes per tensor) instead of its stored bytes."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    seen: set[str] = set()
    size = file_size
    for _, _, t in weight_tensors(model):
        if t.name in seen:
            continue
        seen.add(t.name)
        size += math.ceil(math.prod(t.dims) * bits / 8) - _stored_bytes(t)
    return size


def weight_summary(path: Path, settings: Any, file_size: int) -> dict[str, Any]:
    """What the artifact's weights are, for build records and rows: bits, storage, how many tensors per
    storage, and the packed size."""
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(path), load_external_data=False)
    counts: dict[str, int] = {}
    for _, _, t in weight_tensors(model):
        kind = "int4" if t.data_type in (TensorProto.INT4, TensorProto.UINT4) else "int8"
        if kind == "int8" and settings.weight_bits < 8:
            kind = "simulated"
        counts[kind] = counts.get(kind, 0) + 1
    return {"weight_bits": settings.weight_bits, "weight_storage": settings.resolved_weight_storage,
            "weight_tensors": counts, "packed_size_bytes": packed_size_bytes(path, settings.weight_bits, file_size)}
