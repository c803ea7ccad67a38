"""Weight rounding on a QDQ model's own grid: round-to-nearest, GPTQ and GPFQ.

A QDQ model stores each quantized weight as integers ``q`` with a scale ``s`` and zero point ``z``
per output channel (``w ≈ s·(q − z)``). Round-to-nearest picks ``q = round(w/s) + z`` weight by
weight. GPTQ (Frantar et al. 2022, "OPTQ") and GPFQ (Lybrand & Saab 2021; Zhang et al. 2023) pick
``q`` layer by layer so that the layer's *output* on calibration data stays close to FP32. Both need
only the Gram matrix of the layer's inputs X (im2col patches for a convolution, per group), which
is accumulated one calibration sample at a time: memory is bounded by those matrices (and a budget
that splits the layers over several passes), never by the activations.

The scale, zero point and integer range in the written model are kept exactly as they are (ORT's,
or the bit-width step's), so the graph is the one round-to-nearest writes and only the integer
values differ: whatever runtime runs one runs the other.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quantbench.common.onnx_save import save_model

GPTQ_BLOCK = 128  # columns per lazy-update block (the paper's B)
GPTQ_DAMP = 0.01  # λ = 1 % of the mean diagonal of H
GRAM_BUDGET_MB = 512.0  # Gram matrices held at once; more layers take more passes over the data
GRAM_CHUNK_BYTES = 16 << 20  # input rows buffered per layer before they are added to its Gram matrix
HELDOUT_MAX = 256  # held-out images for the error note (as many as calibration used, up to this)
HELDOUT_SEED = 1
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class Grid:
    """The integer grid of one weight matrix: per-row scale and zero point, clip range ``[qmin, qmax]``."""

    scale: np.ndarray  # (rows,) float64 holding the model's float32 values
    zero_point: np.ndarray  # (rows,) float64 holding integers
    qmin: int
    qmax: int

    def quantize(self, w: np.ndarray, rows: slice | None = None) -> np.ndarray:
        """Nearest grid integers of ``w`` ((rows,) or (rows, cols)); float32 division as ORT does it."""
        s, z = (self.scale, self.zero_point) if rows is None else (self.scale[rows], self.zero_point[rows])
        if w.ndim == 2:
            s, z = s[:, None], z[:, None]
        q = np.rint(w.astype(np.float32) / s.astype(np.float32)).astype(np.float64) + z
        return np.clip(q, self.qmin, self.qmax)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        s, z = (self.scale, self.zero_point) if q.ndim == 1 else (self.scale[:, None], self.zero_point[:, None])
        return s * (q - z)


def round_nearest(w: np.ndarray, h: np.ndarray | None, grid: Grid) -> np.ndarray:
    """Round each weight to the nearest grid point (what ORT writes)."""
    return grid.quantize(w)


def round_gptq(w: np.ndarray, h: np.ndarray, grid: Grid, block: int = GPTQ_BLOCK,
               damp: float = GPTQ_DAMP) -> np.ndarray:
    """GPTQ (Frantar et al. 2022, Algorithm 1): quantize columns in order; after each column, spread its
    error over the columns not yet quantized through the upper Cholesky factor of H⁻¹ (lazy in blocks).

    ``w`` is (rows, cols) with one row per output channel, ``h`` the (cols, cols) Gram matrix of the
    inputs; returns the integers, (rows, cols) float64.
    """
    w = np.array(w, dtype=np.float64)
    cols = w.shape[1]
    h = np.array(h, dtype=np.float64)
    dead = np.diag(h) == 0  # inputs that were always zero: any weight works, their error goes nowhere
    h[dead, dead] = 1.0
    h[np.diag_indices(cols)] += damp * float(np.mean(np.diag(h)))
    hinv = np.linalg.inv(h)
    u = np.linalg.cholesky((hinv + hinv.T) / 2).T  # upper factor: H⁻¹ = Uᵀ·U
    q = np.empty_like(w)
    for b0 in range(0, cols, block):
        b1 = min(b0 + block, cols)
        w1 = w[:, b0:b1].copy()
        err = np.zeros_like(w1)
        u1 = u[b0:b1, b0:b1]
        for i in range(b1 - b0):
            qi = grid.quantize(w1[:, i])
            q[:, b0 + i] = qi
            e = (w1[:, i] - grid.dequantize(qi)) / u1[i, i]
            w1[:, i:] -= np.outer(e, u1[i, i:])
            err[:, i] = e
        w[:, b1:] -= err @ u[b0:b1, b1:]
    return q


def round_gpfq(w: np.ndarray, h: np.ndarray, grid: Grid, block: int = GPTQ_BLOCK) -> np.ndarray:
    """GPFQ (greedy path following; Lybrand & Saab 2021): column t gets the grid value nearest to
    ``w_t + Σ_{j<t} (w_j − ŵ_j)·⟨X_j, X_t⟩ / ‖X_t‖²``, i.e. it cancels, along X_t, the output error
    the columns before it left. With FP32 inputs this needs only the Gram matrix ``h``."""
    w = np.asarray(w, dtype=np.float64)
    h = np.asarray(h, dtype=np.float64)
    cols = w.shape[1]
    diag = np.diag(h)
    q = np.empty_like(w)
    err = np.zeros_like(w)  # w − ŵ of the columns done so far
    acc = np.zeros_like(w)  # err @ h for the columns of finished blocks (lazy, as GPTQ's)
    for b0 in range(0, cols, block):
        b1 = min(b0 + block, cols)
        for t in range(b0, b1):
            corr = acc[:, t] + err[:, b0:t] @ h[b0:t, t]
            target = w[:, t] + (corr / diag[t] if diag[t] > 0 else 0.0)
            q[:, t] = grid.quantize(target)
            err[:, t] = w[:, t] - grid.dequantize(q[:, t])
        acc[:, b1:] += err[:, b0:b1] @ h[b0:b1, b1:]
    return q


Rounding = Callable[[np.ndarray, "np.ndarray | None", Grid], np.ndarray]
# The registry QuantSettings validates ``weight_rounding`` against.
ROUNDINGS: dict[str, Rounding] = {"nearest": round_nearest, "gptq": round_gptq, "gpfq": round_gpfq}


def check_rounding(name: Any) -> str:
    """``name`` if it is a known rounding, else a one-line ValueError with the closest match."""
    if isinstance(name, str) and name in ROUNDINGS:
        return name
    close = difflib.get_close_matches(str(name), list(ROUNDINGS), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ValueError(f"unknown weight_rounding '{name}'{hint} (known: {', '.join(ROUNDINGS)})")


def output_error(w: np.ndarray, w_hat: np.ndarray, h: np.ndarray) -> float:
    """‖(W − Ŵ)X‖² / ‖WX‖² on the calibration data, from the Gram matrix ``h`` of X."""
    d = np.asarray(w, np.float64) - np.asarray(w_hat, np.float64)
    w = np.asarray(w, np.float64)
    den = float(np.sum((w @ h) * w))
    return float(np.sum((d @ h) * d)) / den if den > 0 else 0.0


# --- layers of a QDQ model ---------------------------------------------------------------------------


@dataclass
class Layer:
    """One quantized weight: where it is in the QDQ graph, its FP32 values and how to unfold its input."""

    node: str
    op_type: str
    x_name: str  # the layer's activation input in the graph that was quantized
    weight: np.ndarray  # FP32, as stored in the graph
    q_name: str  # integer initializer in the QDQ graph
    q_dtype: Any
    scale: np.ndarray
    zero_point: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)
    groups: int = 1

    @property
    def cols(self) -> int:
        """Input columns of one group's matrix."""
        if self.op_type == "Conv":
            return int(np.prod(self.weight.shape[1:]))
        return int(self.weight.shape[1] if self.attrs.get("transB") else self.weight.shape[0])

    @property
    def rows(self) -> int:
        """Output channels (over all groups)."""
        if self.op_type == "Conv" or self.attrs.get("transB"):
            return int(self.weight.shape[0])
        return int(self.weight.shape[1])

    def matrix(self, values: np.ndarray) -> np.ndarray:
        """Weight-shaped ``values`` as (rows, cols): one row per output channel."""
        if self.op_type == "Conv":
            return values.reshape(values.shape[0], -1)
        return values if self.attrs.get("transB") else values.T

    def unmatrix(self, m: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`matrix`."""
        if self.op_type == "Conv":
            return m.reshape(self.weight.shape)
        return m if self.attrs.get("transB") else m.T

    def grid(self, qmin: int, qmax: int) -> Grid:
        n = self.rows
        s = np.broadcast_to(self.scale.astype(np.float32).astype(np.float64).reshape(-1), (n,)).copy()
        z = np.broadcast_to(self.zero_point.astype(np.float64).reshape(-1), (n,)).copy()
        return Grid(s, z, qmin, qmax)

    def patches(self, x: np.ndarray) -> np.ndarray:
        """The rows of X for one input ``x``: (groups, positions, cols)."""
        if self.op_type == "Conv":
            p = im2col(x, self.weight.shape[2:], self.attrs)
            return p.reshape(p.shape[0], self.groups, self.cols).transpose(1, 0, 2)
        if self.op_type == "Gemm" and self.attrs.get("transA"):
            x = x.T
        return x.reshape(1, -1, x.shape[-1])


def _conv_pads(x_shape: tuple[int, ...], k_eff: list[int], attrs: dict[str, Any]) -> list[int]:
    spatial = len(k_eff)
    auto = attrs.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    strides = attrs.get("strides") or [1] * spatial
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for n, k, s in zip(x_shape[2:], k_eff, strides, strict=True):
            total = max((-(-n // s) - 1) * s + k - n, 0)
            small, big = total // 2, total - total // 2
            begin.append(small if auto == "SAME_UPPER" else big)
            end.append(big if auto == "SAME_UPPER" else small)
        return begin + end
    if auto == "VALID":
        return [0] * (2 * spatial)
    return list(attrs.get("pads") or [0] * (2 * spatial))


def im2col(x: np.ndarray, kernel: tuple[int, ...], attrs: dict[str, Any]) -> np.ndarray:
    """Patches of a (1, C, *spatial) input as (positions, C·prod(kernel)), columns in the order of a
    Conv weight's (C, *kernel) axes, for the Conv's strides, pads, dilations and auto_pad."""
    spatial = len(kernel)
    dil = list(attrs.get("dilations") or [1] * spatial)
    strides = list(attrs.get("strides") or [1] * spatial)
    k_eff = [d * (k - 1) + 1 for k, d in zip(kernel, dil, strict=True)]
    pads = _conv_pads(x.shape, k_eff, attrs)
    xp = np.pad(x[0], [(0, 0)] + [(pads[i], pads[i + spatial]) for i in range(spatial)])
    axes = tuple(range(1, spatial + 1))
    view = np.lib.stride_tricks.sliding_window_view(xp, k_eff, axis=axes)  # (C, *out, *k_eff)
    view = view[(slice(None),) + tuple(slice(None, None, s) for s in strides)
                + tuple(slice(None, None, d) for d in dil)]
    c = view.shape[0]
    out = view.shape[1:spatial + 1]
    # (C, *out, *k) -> (*out, C, *k) -> (positions, C·k)
    order = tuple(range(1, spatial + 1)) + (0,) + tuple(range(spatial + 1, 2 * spatial + 1))
    return view.transpose(order).reshape(int(np.prod(out)), c * int(np.prod(kernel)))


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def find_layers(qdq: Any, fp32: Any) -> tuple[list[Layer], list[str]]:
    """Quantized Conv/Gemm/MatMul weights of ``qdq`` (each a DequantizeLinear of an integer initializer
    feeding input 1) matched by node name to ``fp32``, the graph that was quantized; plus notes on
    weights left to round-to-nearest."""
    from onnx import numpy_helper

    inits = {i.name: i for i in qdq.graph.initializer}
    dq_by_out = {n.output[0]: n for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
    fp_nodes = {n.name: n for n in fp32.graph.node}
    fp_inits = {i.name: i for i in fp32.graph.initializer}
    uses: dict[str, int] = {}
    for n in qdq.graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    layers, notes = [], []
    for node in qdq.graph.node:
        if node.op_type not in QUANTIZED_OPS or len(node.input) < 2 or node.input[1] not in dq_by_out:
            continue
        dq = dq_by_out[node.input[1]]
        src = fp_nodes.get(node.name)
        if dq.input[0] not in inits or src is None or src.input[1] not in fp_inits:
            continue
        attrs = _attrs(node)
        weight = numpy_helper.to_array(fp_inits[src.input[1]]).astype(np.float32)
        why = None
        if uses.get(node.input[1], 0) > 1 or uses.get(dq.input[0], 0) > 1:
            why = "its weight is shared with another node"
        elif (weight.ndim < 3) if node.op_type == "Conv" else (weight.ndim != 2):
            why = f"{node.op_type} weight of rank {weight.ndim}"
        scale = numpy_helper.to_array(inits[dq.input[1]])
        zp = numpy_helper.to_array(inits[dq.input[2]]) if len(dq.input) > 2 and dq.input[2] else np.zeros(1, np.int8)
        dq_attrs = _attrs(dq)
        axis = int(dq_attrs.get("axis", 1))
        layer = Layer(node.name, node.op_type, src.input[0], weight, dq.input[0],
                      numpy_helper.to_array(inits[dq.input[0]]).dtype, scale, zp, attrs,
                      int(attrs.get("group", 1)))
        if why is None and scale.size > 1:
            out_axis = 0 if node.op_type == "Conv" or attrs.get("transB") else 1
            if axis % weight.ndim != out_axis or scale.size != layer.rows:
                why = f"scale per axis {axis}, not per output channel"
        if why is None and dq_attrs.get("block_size"):
            why = "blocked quantization"
        if why:
            notes.append(f"{node.name}: kept round-to-nearest ({why})")
            continue
        layers.append(layer)
    return layers, notes


# --- Gram matrices from calibration data -------------------------------------------------------------


def _gram_bytes(layer: Layer) -> int:
    return layer.groups * layer.cols * layer.cols * 8


def plan_passes(layers: list[Layer], budget_mb: float) -> list[list[Layer]]:
    """Split ``layers`` (in graph order) into passes whose Gram matrices fit ``budget_mb`` together
    (a layer larger than the budget gets a pass of its own)."""
    passes: list[list[Layer]] = []
    used = 0.0
    for layer in layers:
        size = _gram_bytes(layer) / 2**20
        if not passes or used + size > budget_mb:
            passes.append([])
            used = 0.0
        passes[-1].append(layer)
        used += size
    return [p for p in passes if p]


def collect_grams(model_path: Path, layers: list[Layer], reader: Any, tmp: Path, budget_mb: float = GRAM_BUDGET_MB,
                  threads: int = 0) -> tuple[dict[str, np.ndarray], int]:
    """Per layer, ``H = 2·XᵀX / n`` over every calibration sample's input rows (groups stacked:
    (groups, cols, cols)); accumulated sample by sample. Returns the matrices and the samples read."""
    import onnx
    from onnx import helper

    from .calibrate import calibration_session, one_sample_feeds

    grams: dict[str, np.ndarray] = {}
    samples = 0
    for k, group in enumerate(plan_passes(layers, budget_mb)):
        model = onnx.load(str(model_path))
        graph_inputs = {i.name for i in model.graph.input}
        names = sorted({lay.x_name for lay in group} - graph_inputs)
        del model.graph.output[:]
        for name in names:
            model.graph.output.append(helper.make_empty_tensor_value_info(name))
        path = Path(tmp) / f"wr_inputs_{k}.onnx"
        session = None
        if names:
            save_model(model, path)
            session = calibration_session(path, threads)
        del model
        acc = {lay.node: _GramSum(lay.groups, lay.cols) for lay in group}
        samples = 0
        for feed in one_sample_feeds(reader):
            values = dict(zip(names, session.run(names, feed), strict=True)) if session else {}
            values.update(feed)
            for lay in group:
                acc[lay.node].add(lay.patches(np.asarray(values[lay.x_name], np.float32)))
            samples += 1
        if samples == 0:
            raise ValueError("weight rounding: the calibration reader produced no samples")
        for lay in group:
            grams[lay.node] = acc.pop(lay.node).gram()
    return grams, samples


class _GramSum:
    """Σ XᵀX over samples' rows, summed in chunks of whole samples (one BLAS call per chunk, not per
    sample); a chunk's size depends only on the layer's shapes, so the sums do not depend on batching."""

    def __init__(self, groups: int, cols: int) -> None:
        self.total = np.zeros((groups, cols, cols))
        self.rows = 0
        self.pending: list[np.ndarray] = []
        self.pending_rows = 0
        self.max_rows = max(1, GRAM_CHUNK_BYTES // (4 * groups * cols))

    def add(self, patches: np.ndarray) -> None:
        self.pending.append(patches)
        self.pending_rows += patches.shape[1]
        if self.pending_rows >= self.max_rows:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            x = np.concatenate(self.pending, axis=1) if len(self.pending) > 1 else self.pending[0]
            # float32 products over one chunk (at most a few thousand rows), float64 sums across chunks
            self.total += np.matmul(x.transpose(0, 2, 1), x)
            self.rows += x.shape[1]
            self.pending, self.pending_rows = [], 0

    def gram(self) -> np.ndarray:
        """H = 2·XᵀX / n, (groups, cols, cols)."""
        self._flush()
        return self.total * (2.0 / max(self.rows, 1))


# --- the whole model ----------------------------------------------------------------------------------


@dataclass
class LayerReport:
    """What rounding one layer did: relative output error ‖(W − Ŵ)X‖² / ‖WX‖² vs round-to-nearest's, on
    the calibration data (what GPTQ/GPFQ minimised: optimistic) and on held-out images when there are some."""

    node: str
    op_type: str
    rows: int
    cols: int
    groups: int
    error: float
    error_nearest: float
    changed: float  # share of integers that differ from round-to-nearest
    heldout_error: float | None = None
    heldout_error_nearest: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "op_type": self.op_type, "rows": self.rows, "cols": self.cols,
                "groups": self.groups, "output_error": self.error, "output_error_nearest": self.error_nearest,
                "output_error_heldout": self.heldout_error, "output_error_nearest_heldout": self.heldout_error_nearest,
                "changed": self.changed}


def layer_errors(layer: Layer, q: np.ndarray, h: np.ndarray, qmin: int, qmax: int) -> tuple[float, float]:
    """Relative output errors of the integers ``q`` (weight-shaped) and of round-to-nearest for ``layer``,
    from the Gram matrices ``h`` (groups, cols, cols) of some data."""
    grid = layer.grid(qmin, qmax)
    w = layer.matrix(layer.weight.astype(np.float64))
    qm = layer.matrix(np.asarray(q, np.float64))
    near = grid.quantize(w)
    rg = layer.rows // layer.groups
    err = err_near = den = 0.0
    for g in range(layer.groups):
        sl = slice(g * rg, (g + 1) * rg)
        sub = Grid(grid.scale[sl], grid.zero_point[sl], qmin, qmax)
        wg = w[sl]
        d, dn = wg - sub.dequantize(qm[sl]), wg - sub.dequantize(near[sl])
        err += float(np.sum((d @ h[g]) * d))
        err_near += float(np.sum((dn @ h[g]) * dn))
        den += float(np.sum((wg @ h[g]) * wg))
    den = den if den > 0 else 1.0
    return err / den, err_near / den


def round_layer(layer: Layer, h: np.ndarray, method: str, qmin: int, qmax: int) -> tuple[np.ndarray, LayerReport]:
    """Integers of ``layer`` (weight-shaped) rounded by ``method`` with Gram matrices ``h`` (groups, cols, cols)."""
    fn = ROUNDINGS[check_rounding(method)]
    grid = layer.grid(qmin, qmax)
    w = layer.matrix(layer.weight.astype(np.float64))
    rg = layer.rows // layer.groups
    q = np.empty_like(w)
    near = grid.quantize(w)
    for g in range(layer.groups):
        sl = slice(g * rg, (g + 1) * rg)
        q[sl] = fn(w[sl], h[g], Grid(grid.scale[sl], grid.zero_point[sl], qmin, qmax))
    ints = layer.unmatrix(q)
    err, err_near = layer_errors(layer, ints, h, qmin, qmax)
    report = LayerReport(layer.node, layer.op_type, layer.rows, layer.cols, layer.groups, err, err_near,
                         float(np.mean(q != near)))
    return ints, report


def apply_rounding(fp32_path: Path, qdq_path: Path, reader: Any, method: str, qrange: tuple[int, int], tmp: Path,
                   budget_mb: float = GRAM_BUDGET_MB, threads: int = 0,
                   heldout: Any = None) -> tuple[list[LayerReport], list[str]]:
    """Rewrite the quantized weights of ``qdq_path`` in place with ``method``'s integers.

    ``fp32_path`` is the graph that was quantized (its node names are the QDQ graph's), ``reader``
    the calibration data, ``qrange`` the integer range of the weight grid (widened per layer to what
    round-to-nearest stored, which may be one step past an end). Scales, zero points and the graph stay
    as they are. ``heldout`` (a reader of other images) adds each layer's errors on those images to
    its report. Returns one report per rewritten layer and notes on layers left alone.
    """
    import onnx
    from onnx import numpy_helper

    check_rounding(method)
    if method == "nearest":
        return [], []
    qdq = onnx.load(str(qdq_path))
    layers, notes = find_layers(qdq, onnx.load(str(fp32_path)))
    if not layers:
        return [], notes
    qmin, qmax = qrange
    inits = {i.name: i for i in qdq.graph.initializer}
    ranges = {}
    for layer in layers:
        stored = numpy_helper.to_array(inits[layer.q_name]).astype(np.int64)
        low, high = int(stored.min(initial=qmin)), int(stored.max(initial=qmax))
        # ORT derives scale and zero point from [qmin, qmax] but clips only to the storage type, so its
        # round-to-nearest may sit one step past an end (QUInt8 reduce_range: 128); more means another grid.
        if low < qmin - 1 or high > qmax + 1:
            raise ValueError(f"weight_rounding: {layer.node}'s stored weights lie outside the grid "
                             f"[{qmin}, {qmax}] ({low}..{high})")
        ranges[layer.node] = (min(qmin, low), max(qmax, high))
    grams, _ = collect_grams(Path(fp32_path), layers, reader, Path(tmp), budget_mb, threads)
    reports, rounded = [], {}
    for layer in layers:
        ints, report = round_layer(layer, grams.pop(layer.node), method, *ranges[layer.node])
        inits[layer.q_name].CopyFrom(numpy_helper.from_array(ints.astype(layer.q_dtype), layer.q_name))
        reports.append(report)
        rounded[layer.node] = ints
    if heldout is not None:
        grams, _ = collect_grams(Path(fp32_path), layers, heldout, Path(tmp), budget_mb, threads)
        for layer, report in zip(layers, reports, strict=True):
            report.heldout_error, report.heldout_error_nearest = layer_errors(
                layer, rounded.pop(layer.node), grams.pop(layer.node), *ranges[layer.node])
    save_model(qdq, qdq_path)
    return reports, notes


def weight_qrange(settings: Any) -> tuple[int, int]:
    """The integer range of the weight grid ``settings`` give: below 8 bits the symmetric grid of
    exporters/bitwidth.py; at 8 bits ORT's own range for ``weight_type``, ``reduce_range`` and
    ``symmetric_weight`` (QInt8 symmetric [-127, 127], reduced [-64, 64]; QUInt8 [0, 255], reduced [0, 127])."""
    from .bitwidth import qmax

    if settings.weight_bits < 8:
        top = qmax(settings.weight_bits)
        return -top, top
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import get_qmin_qmax_for_qType

    qtype = {"QInt8": TensorProto.INT8, "QUInt8": TensorProto.UINT8}[settings.weight_type]
    low, high = get_qmin_qmax_for_qType(qtype, reduce_range=settings.reduce_range, symmetric=settings.symmetric_weight)
    return int(low), int(high)


def round_qdq_weights(fp32_path: Path, qdq_path: Path, reader: Any, settings: Any, tmp: Path,
                      stats: dict[str, Any] | None = None) -> list[str]:
    """The ``quantize_qdq`` hook: rewrite ``qdq_path``'s weights with ``settings.weight_rounding`` on the
    grid already in the file (the bit-width step's below 8 bits, ORT's own at 8: :func:`weight_qrange`);
    returns notes."""
    if settings.weight_rounding == "nearest":
        return []
    heldout = heldout_reader(reader)
    qrange = weight_qrange(settings)
    reports, notes = apply_rounding(fp32_path, qdq_path, reader, settings.weight_rounding, qrange, tmp, heldout=heldout)
    if stats is not None:
        stats["weight_rounding"] = [r.to_dict() for r in reports]
        stats["weight_rounding_heldout_samples"] = len(heldout.indices) if heldout is not None else 0
    n = len(heldout.indices) if heldout is not None else 0
    return [summary(settings.weight_rounding, settings.weight_bits, reports, heldout=n, qrange=qrange), *notes]


def heldout_reader(reader: Any, limit: int = HELDOUT_MAX) -> Any:
    """A reader of images of the calibration split that calibration did not use (of the classes it used,
    as many as it used, at most ``limit``; seeded), or None when ``reader`` is not a BatchReader or
    every image was used."""
    split, used = getattr(reader, "split", None), getattr(reader, "indices", None)
    if split is None or used is None or not hasattr(reader, "preprocess"):
        return None
    from quantbench.calibration_data import BatchReader

    labels = np.asarray(split.labels)
    pool = np.setdiff1d(np.arange(len(labels)), used)
    pool = pool[np.isin(labels[pool], np.unique(labels[used]))]
    n = min(len(used), limit, len(pool))
    if n == 0:
        return None
    pick = np.sort(np.random.default_rng(HELDOUT_SEED).choice(pool, n, replace=False))
    return BatchReader(split, reader.preprocess, pick, reader.batch_size, reader.input_name)


def summary(method: str, bits: int, reports: list[LayerReport], heldout: int = 0,
            qrange: tuple[int, int] | None = None) -> str:
    """One note line: layers rewritten (on integers ``qrange``) and their output error against
    round-to-nearest's, on ``heldout`` held-out images when there were some (the calibration images
    flatter GPTQ/GPFQ, which fit them)."""
    if not reports:
        return f"weight_rounding {method}: no quantized Conv/Gemm/MatMul weight to round"
    if method == "gptq":
        method = f"gptq (damping {GPTQ_DAMP:.0%} of mean diag H, blocks of {GPTQ_BLOCK})"
    cal = float(np.mean([r.error for r in reports]))
    cal_near = float(np.mean([r.error_nearest for r in reports]))
    grid = f" (integers in [{qrange[0]}, {qrange[1]}])" if qrange else ""
    head = f"weight_rounding {method} at {bits} bits{grid}: {len(reports)} layers, mean relative output error"
    if heldout and all(r.heldout_error is not None for r in reports):
        err = float(np.mean([r.heldout_error for r in reports]))
        near = float(np.mean([r.heldout_error_nearest for r in reports]))
        better = sum(r.heldout_error < r.heldout_error_nearest for r in reports)
        return (f"{head} on {heldout} held-out images {err:.3g} (round-to-nearest {near:.3g}), lower on "
                f"{better}/{len(reports)} layers; on the calibration images {cal:.3g} ({cal_near:.3g})")
    better = sum(r.error < r.error_nearest for r in reports)
    return (f"{head} on the calibration images (no held-out images left) {cal:.3g} (round-to-nearest "
            f"{cal_near:.3g}), lower on {better}/{len(reports)} layers")
