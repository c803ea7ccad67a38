"""Activation ranges for static quantization that depend on the data and the method only.

ORT's histogram calibrators build a histogram per ``collect_data`` call and merge the next ones
by growing the first call's bins, so Entropy/Percentile thresholds changed with the micro-batch
size and with the batch order (and they keep every activation of a call alive). Here:

1. pass 1 runs a copy of the model whose only outputs are each calibrated tensor's min and max
   (Reshape + ReduceMin/ReduceMax inside ONNX Runtime: a few bytes per tensor) over all the
   calibration data; MinMax stops here;
2. pass 2 (histogram methods) runs a copy that outputs the calibrated tensors and counts their
   values into ``num_bins`` bins over the range fixed by pass 1, so each sample only adds
   integer counts;
3. ORT's own ``HistogramCollector`` turns those histograms into thresholds, so "Entropy",
   "Percentile" and "Distribution" are ORT's algorithms.

Every ORT run gets exactly one sample: ORT's convolutions take other code paths for one or two
samples than for eight (the last bits of the activations differed), so only a fixed run size makes
each sample's activations, and hence every threshold, independent of how the reader batches.
Both sessions run without ORT's CPU memory arena and in node order with each tensor's probe right
after its producer, so one run holds little more than the model's weights.
"""
from __future__ import annotations

import contextlib
import sys
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HISTOGRAM_METHODS = ("entropy", "percentile", "distribution")
NUM_QUANTIZED_BINS = 128  # ORT's Entropy default: the 8-bit target has 128 bins per side
_CHUNK = 1 << 16  # bin indices counted at once (bincount widens them to int64: stay in cache)


@dataclass(frozen=True)
class CalibrationConfig:
    """What to compute: ``method`` with its ``num_bins``/``percentile``; ``symmetric`` is the range symmetry."""

    method: str
    symmetric: bool = False
    num_bins: int | None = None
    percentile: float | None = None
    op_types: tuple[str, ...] | None = None
    threads: int = 0  # ORT intra-op threads; 0 = ORT's default (all cores)


@dataclass
class CalibrationResult:
    """ORT ``TensorsData`` plus what the run cost (for notes and benchmarks)."""

    ranges: Any
    tensors: int
    samples: int
    bytes_per_sample: int  # upper bound on the activations of one run (shape inference)
    pass_s: list[float] = field(default_factory=list)


def tensors_to_calibrate(model: Any, op_types: tuple[str, ...] | list[str] | None) -> tuple[list[str], dict[str, Any]]:
    """ORT's own choice of tensors (float inputs/outputs of nodes of ``op_types``), sorted, and their value infos."""
    from onnxruntime.quantization.calibrate import CalibraterBase

    names, value_infos = CalibraterBase.select_tensors_to_calibrate(
        types.SimpleNamespace(op_types_to_calibrate=list(op_types) if op_types else None), model)
    return sorted(names), value_infos


def _elements_per_sample(value_info: Any) -> int:
    n = 1
    for d in value_info.type.tensor_type.shape.dim[1:]:  # the first axis is the batch
        n *= d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
    return n


def activation_bytes_per_sample(model: Any) -> int:
    """Bytes of every intermediate tensor of one sample (shape-inferred model): an upper bound on what
    a calibration run keeps alive per sample."""
    total = sum(_elements_per_sample(vi) * 4 for vi in list(model.graph.value_info) + list(model.graph.output)
                if vi.type.tensor_type.shape.dim)
    return max(total, 1)


def _opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)


def _save_with_probes(model: Any, probes: dict[str, list[Any]], graph_inputs: set[str], path: Path) -> None:
    """Insert each tensor's probe nodes right after the node that makes it (graph inputs' probes first)
    and save ``model`` at ``path``: ORT runs nodes in this order, so each activation is freed as soon as
    its probe has read it (appended at the end of the graph, every activation of the run stayed alive
    until the end)."""
    from .onnx_save import save_model

    front = [n for t in list(probes) if t in graph_inputs for n in probes.pop(t)]
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(front)
    for node in nodes:
        model.graph.node.append(node)
        for out in node.output:
            model.graph.node.extend(probes.get(out, []))
    save_model(model, path)


def write_range_model(model: Any, tensors: list[str], graph_inputs: set[str], path: Path) -> list[str]:
    """Save a copy of ``model`` whose outputs are the min and max of each tensor; returns the output names."""
    from onnx import helper, numpy_helper

    prefix = "qb_calib"
    del model.graph.output[:]
    model.graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), f"{prefix}_flat"))
    axes_input = _opset(model) >= 18
    if axes_input:
        model.graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), f"{prefix}_axes"))
    probes: dict[str, list[Any]] = {}
    outputs = []
    for i, t in enumerate(tensors):
        flat = f"{prefix}_{i}_flat"
        # Reducing a flat view over axis 0 is ORT's fast path (10x faster than reducing every axis).
        nodes = [helper.make_node("Reshape", [t, f"{prefix}_flat"], [flat], name=flat)]
        for op in ("ReduceMin", "ReduceMax"):
            out = f"{prefix}_{i}_{op}"
            ins = [flat, f"{prefix}_axes"] if axes_input else [flat]
            kwargs = {} if axes_input else {"axes": [0]}
            nodes.append(helper.make_node(op, ins, [out], name=out, keepdims=0, **kwargs))
            model.graph.output.append(helper.make_empty_tensor_value_info(out))
            outputs.append(out)
        probes[t] = nodes
    _save_with_probes(model, probes, graph_inputs, path)
    return outputs


def write_bin_model(model: Any, tensors: list[str], graph_inputs: set[str], hists: _Histograms, path: Path) -> list[str]:
    """Save a copy of ``model`` whose outputs are, per tensor, each value's bin index (uint16).

    ORT computes ``(x - lo) * bins / (hi - lo)`` (of ``|x|`` for absolute histograms) on all cores
    and frees the float activations at once; numpy only counts.
    """
    from onnx import TensorProto, helper, numpy_helper

    prefix = "qb_bins"
    del model.graph.output[:]
    f32 = lambda v, name: numpy_helper.from_array(np.array(v, np.float32), name)
    value_types = {vi.name: vi.type.tensor_type.elem_type for vi in
                   list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    probes: dict[str, list[Any]] = {}
    outputs = []
    for i, t in enumerate(tensors):
        lo, scale = hists.lo_scale[t]
        model.graph.initializer.extend([f32(lo, f"{prefix}_{i}_lo"), f32(scale, f"{prefix}_{i}_scale")])
        nodes, x = [], t
        if value_types.get(t, TensorProto.FLOAT) != TensorProto.FLOAT:
            nodes.append(helper.make_node("Cast", [x], [f"{prefix}_{i}_f32"], to=TensorProto.FLOAT))
            x = f"{prefix}_{i}_f32"
        if hists.absolute:
            nodes.append(helper.make_node("Abs", [x], [f"{prefix}_{i}_abs"]))
            x = f"{prefix}_{i}_abs"
        nodes.append(helper.make_node("Sub", [x, f"{prefix}_{i}_lo"], [f"{prefix}_{i}_sub"]))
        out = f"{prefix}_{i}_bin"
        nodes.append(helper.make_node("Mul", [f"{prefix}_{i}_sub", f"{prefix}_{i}_scale"], [f"{prefix}_{i}_pos"]))
        # Pass 1 saw these exact values (same kernels, one sample per run), so lo <= x <= hi and the
        # position is in [0, bins]: the cast truncates (= floor) and the count folds bin `bins` into the last.
        nodes.append(helper.make_node("Cast", [f"{prefix}_{i}_pos"], [out], to=TensorProto.UINT16))
        model.graph.output.append(helper.make_empty_tensor_value_info(out))
        outputs.append(out)
        probes[t] = nodes
    _save_with_probes(model, probes, graph_inputs, path)
    return outputs


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    # The arena keeps the largest buffers it ever served for the whole session; the memory pattern
    # pre-allocates one block per input shape. Both only cost memory here.
    so.enable_cpu_mem_arena = False
    so.enable_mem_pattern = False
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # as ORT's calibrators
    # With the default order ORT ran every probe after the whole network, so all of a run's
    # activations stayed alive (ResNet-50: 100 MB per sample); priority order follows our node order
    # (probes right after their producer) and holds about 13 MB per sample.
    so.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    so.log_severity_level = 3
    # Spinning idle workers take the cores numpy needs to count bins between runs.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads > 0:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _batches(reader: Any) -> Iterator[dict[str, np.ndarray]]:
    reader.rewind()
    while (batch := reader.get_next()) is not None:
        yield batch


def _samples(reader: Any) -> Iterator[dict[str, np.ndarray]]:
    """One-sample feeds, in the reader's order."""
    for batch in _batches(reader):
        n = len(next(iter(batch.values())))
        for i in range(n):
            yield {k: v[i:i + 1] for k, v in batch.items()}


class _Histograms:
    """Counts of each tensor's values in fixed bins over a fixed range: adding batches only adds counts."""

    def __init__(self, lows: dict[str, np.float32], highs: dict[str, np.float32], num_bins: int, absolute: bool) -> None:
        self.num_bins, self.absolute = num_bins, absolute
        self.edges: dict[str, np.ndarray] = {}
        self.counts: dict[str, np.ndarray] = {}
        self.lo_scale: dict[str, tuple[np.float32, np.float32]] = {}
        empty = np.zeros(0, np.float32)
        for t, low in lows.items():
            top = np.float32(max(abs(low), abs(highs[t])))
            rng = (np.float32(0), top) if absolute else (-top, top)
            # The edges ORT's collector would use for this range (numpy widens an empty range to +-0.5).
            edges = np.histogram_bin_edges(empty, num_bins, range=rng).astype(np.float32)
            self.edges[t] = edges
            self.counts[t] = np.zeros(num_bins, np.int64)
            self.lo_scale[t] = (edges[0], np.float32(num_bins / (float(edges[-1]) - float(edges[0]))))

    def add(self, name: str, bins: np.ndarray) -> None:
        """Count ``bins`` (each value's bin index, from the bin model; ``num_bins`` is the range's top value)."""
        flat = bins.reshape(-1)
        counts, n = self.counts[name], self.num_bins
        for start in range(0, flat.size, _CHUNK):
            c = np.bincount(flat[start:start + _CHUNK], minlength=n + 1)
            if len(c) > n + 1:
                raise ValueError(f"activation '{name}' left the range measured in pass 1: calibration "
                                 "passes disagree (non-deterministic model?)")
            counts += c[:n]
            counts[-1] += c[n]


def calibrate(model_path: Path, config: CalibrationConfig, reader: Any, tmp: Path) -> CalibrationResult:
    """Ranges (ORT ``TensorsData``) of the tensors ORT would calibrate in ``model_path``.

    ``reader`` follows ORT's ``CalibrationDataReader`` protocol (``get_next``/``rewind``); it is read
    once per pass. The result depends on the data and ``config`` only, not on how the reader batches
    or orders the samples.
    """
    import onnx
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    method = config.method
    histogram = method in HISTOGRAM_METHODS
    if histogram and not 2 <= int(config.num_bins or 0) <= 65535:
        raise ValueError(f"num_bins must be in [2, 65535] for {method} calibration, not {config.num_bins}")
    tmp = Path(tmp)
    model = load_model_with_shape_infer(Path(model_path))
    tensors, _ = tensors_to_calibrate(model, config.op_types)
    if not tensors:
        raise ValueError(f"no float tensor to calibrate for op types {list(config.op_types or [])}")
    graph_inputs = {i.name for i in model.graph.input} - {i.name for i in model.graph.initializer}
    per_sample = activation_bytes_per_sample(model)
    range_outputs = write_range_model(model, tensors, graph_inputs, tmp / "calib_range.onnx")
    del model

    # Pass 1: exact min and max of every tensor over all the data.
    t0 = time.perf_counter()
    session = _session(tmp / "calib_range.onnx", config.threads)
    lows = {t: np.float32(np.inf) for t in tensors}
    highs = {t: np.float32(-np.inf) for t in tensors}
    samples = 0
    for feed in _samples(reader):
        values = session.run(range_outputs, feed)
        for k, t in enumerate(tensors):
            lows[t] = np.minimum(lows[t], np.float32(values[2 * k]))  # NaN propagates: caught below
            highs[t] = np.maximum(highs[t], np.float32(values[2 * k + 1]))
        samples += 1
    del session
    if samples == 0:
        raise ValueError("calibration reader produced no batches")
    bad = [t for t in tensors if not (np.isfinite(lows[t]) and np.isfinite(highs[t]))]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ValueError(f"activation '{bad[0]}' has non-finite values (min {lows[bad[0]]}, max {highs[bad[0]]}) "
                         f"on the calibration data{more}")
    passes = [time.perf_counter() - t0]
    if not histogram:
        if config.symmetric:  # as ORT's MinMaxCalibrater
            pairs = {t: (-m, m) for t in tensors for m in [np.float32(max(abs(lows[t]), abs(highs[t])))]}
        else:
            pairs = {t: (lows[t], highs[t]) for t in tensors}
        return CalibrationResult(TensorsData(CalibrationMethod.MinMax, pairs), len(tensors), samples, per_sample, passes)

    # Pass 2: histograms over the ranges fixed by pass 1.
    t0 = time.perf_counter()
    absolute = method == "percentile" and config.symmetric  # ORT's collect_absolute_value
    hists = _Histograms(lows, highs, int(config.num_bins), absolute)
    bin_outputs = write_bin_model(onnx.load(str(model_path)), tensors, graph_inputs, hists, tmp / "calib_bins.onnx")
    session = _session(tmp / "calib_bins.onnx", config.threads)
    for feed in _samples(reader):
        for t, bins in zip(tensors, session.run(bin_outputs, feed)):
            hists.add(t, bins)
    del session
    passes.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    ranges = _thresholds(method, hists, lows, highs, config)
    passes.append(time.perf_counter() - t0)
    return CalibrationResult(ranges, len(tensors), samples, per_sample, passes)


def _thresholds(method: str, hists: _Histograms, lows: dict, highs: dict, config: CalibrationConfig) -> Any:
    """Run ORT's HistogramCollector algorithms on the fixed-range histograms."""
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        HistogramCollector,
        TensorsData,
    )

    collector = HistogramCollector(method=method, symmetric=config.symmetric, num_bins=hists.num_bins,
                                   num_quantized_bins=NUM_QUANTIZED_BINS,
                                   percentile=config.percentile if config.percentile is not None else 99.999,
                                   scenario="same")
    for t, counts in hists.counts.items():
        lo, hi = np.float32(lows[t]), np.float32(highs[t])
        if hists.absolute:
            collector.histogram_dict[t] = (counts, hists.edges[t], lo, hi)
        else:
            thr = np.array(max(abs(lo), abs(hi)), dtype=np.float32)
            collector.histogram_dict[t] = (counts, hists.edges[t], lo, hi, thr)
    with contextlib.redirect_stdout(sys.stderr):  # ORT prints progress; stdout belongs to our caller
        result = collector.compute_collection_result()
    kind = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
            "distribution": CalibrationMethod.Distribution}[method]
    return TensorsData(kind, result)
