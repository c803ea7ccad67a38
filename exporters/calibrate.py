"""Activation ranges for static quantization that depend on the data and the method only.

ORT's histogram calibrators build a histogram per ``collect_data`` call and merge the next ones
by growing the first call's bins, so Entropy/Percentile thresholds changed with the micro-batch
size and with the batch order (and they keep every activation of a call alive). Here:

1. pass 1 finds each calibrated tensor's min and max (and min |x| for Percentile's |x| bins) over all the
   calibration data: for a histogram method on the optimised graph with numba installed (and values enough to repay
   its start, ``COMPILED_MIN_VALUES``) ORT writes the tensors into buffers allocated once and numba's kernel reads
   each value once (:class:`.compiled_binning.ValueRange`), else a copy of the model outputs only those figures
   (Reshape + ReduceMin/ReduceMax inside ONNX Runtime, right after each producer: a few bytes per
   tensor); MinMax stops here;
2. pass 2 (histogram methods) runs a copy whose outputs are the calibrated tensors themselves, written
   by ONNX Runtime into buffers allocated once (IO binding), on the very samples pass 1 read (kept in a
   file meanwhile, :class:`_Spool`), and each value is counted in ``num_bins`` equal bins over the range
   fixed by pass 1, with counts equal to ``numpy.histogram``'s bin for bin (:class:`_Histograms`: a float32
   estimate of the bin, checked per tensor before any value is counted to land within one bin of numpy's at
   every edge, then one comparison with the edge, in numba's compiled loop or in numpy; numpy's own
   ``histogram`` where that check fails), so each sample only adds integer counts;
3. ORT's own ``HistogramCollector`` turns those histograms into thresholds, so "Entropy",
   "Percentile" and "Distribution" are ORT's algorithms, on the very histograms ORT's calibrators
   build when one ``collect_data`` call sees all the data (symmetric Percentile bins |x| over
   [min|x|, max|x|], the others x over [-max|x|, max|x|]): the thresholds are ORT's exactly;
   "mse" is the L2 range search of PyTorch's ``HistogramObserver`` (:mod:`.histogram_mse`) on a
   histogram of x over [min, max], as torch's.

Every ORT run gets exactly one sample: ORT's convolutions take other code paths for one or two
samples than for eight (the last bits of the activations differed), so only a fixed run size makes
each sample's activations, and hence every threshold, independent of how the reader batches.
The sessions run without ORT's CPU memory arena, pass 1's in node order with each probe right after its
producer, so one run holds little more than the weights. In pass 2 worker threads count one sample's
activations; where cores stay free beside ORT's threads (:func:`counting_beside_forward`) they do so while ORT
computes the next sample's into a second set of buffers (ORT's run releases the GIL; the process then holds two
samples' calibrated activations, one when two would exceed ``PIPELINE_BYTES``), else after each forward.

**Which graph.** ``graph = "unoptimised"`` runs the passes as ORT's calibrators do, unoptimised: ORT's optimised
convolutions (fused, in a blocked layout) give other last bits (122 of ResNet-50's 123 calibrated tensors), so only
the unoptimised graph gives ``quantize_static``'s ranges (and histograms, hence thresholds) bit for bit. That costs
time: ResNet-50's unoptimised forward is about 1.4 x the optimised one on AVX-512, before any probe.
``graph = "optimised"`` (the harness's default) runs both passes on ORT's optimised graph and reads only
what leaves the optimiser its fusions and blocked layout:

- a tensor that a quantized Relu/Clip alone reads is neither probed nor binned but given that node's range, or
  thresholds (:func:`adopted_ranges`): ORT's quantizer replaces its range by the node's output's anyway
  (``adjust_tensor_ranges``) and then drops the node, so Conv + Relu stays one fused kernel;
- read out, pass 1 writes the tensors pass 2 bins, and pass 2 runs on pass 1's session (the model written and
  optimised once): ResNet-50's pass 1 costs 1.12 x the plain forward where Percentile's probes below cost 1.15 x
  (the Abs + ReduceMin that min |x| needs copies each signed tensor); a tensor >= 0 gets its true minimum, so
  Entropy's lower threshold stops there as ORT's calibrators' does (the probes take 0: the same quantized model);
- with probes, a tensor that cannot be negative (:func:`nonnegative_tensors`) is probed by a GlobalMaxPool, which ORT
  runs in its blocked layout, and reports 0 as its minimum: every quantizer widens a range to hold 0, so the scale
  and zero point are those of its true minimum, and Entropy/Distribution/asymmetric Percentile bin over
  [-max|x|, max|x|]; bins of |x| and mse's [min, max] start at the true minimum, so pass 2 checks that the tensor
  holds a 0 and otherwise bins it again over its true range; the others keep the Reshape + ReduceMin/ReduceMax
  probes; pass 2's outputs are the tensors pass 1 probed;
- both passes read each tensor in ORT's blocked layout where its channels fill whole blocks (:mod:`.blocked_layout`:
  ORT's saved optimised graph without its copies back to NCHW, which only the probes and outputs read; a minimum,
  maximum or histogram does not depend on the order of the values): handing ResNet-50's 74 tensors out costs 1.01 x
  the plain forward instead of 1.14 x.

The ranges are then those of the FP32 model as ORT runs it by default (tested bit for bit), and the quantized model
is the unoptimised ranges' one: the same nodes, scales equal to float32's last bits and the same zero points, one
step apart where a zero point sits on a rounding tie within those last bits (tested over six settings and, by a
hostile tester, on a dozen torchvision networks; the histogram methods over seven settings, and by a hostile tester
on six torchvision networks and hand-built graphs: 222 comparisons). A histogram is counts, and values that differ
in their last bits can move a count into the next bin: Entropy and Percentile thresholds then stay put or move by a
bin, but mse's greedy L2 search can land far away (5 of 26 torchvision runs: scales 0.5-2.1 % apart, zero points up
to 3 steps), as it would for any last-bit change of the activations (another CPU or ORT version); and with a
symmetric range on uint8 (Percentile's default, Distribution) every zero point sits on the 127.5 tie, so the last
bits decide 127 or 128 (2-69 tensors per network). Where the optimiser fuses ops into
a kernel of other numerics (a LayerNorm written out op by op) and the data is ill-conditioned, the ranges are the
fused kernel's, which can differ beyond the last bits (1e-3 on rows of mean 300 and spread 0.01). A tensor whose
range is adopted is not read, so an overflow there (a Conv output at -inf that its Relu zeroes) is not reported:
the quantizer does not use that range. ResNet-50 at 1,000 images: MinMax 1.15-1.16 x its floor against 1.42-1.48 x
unoptimised.

Pass 2 counts with numba's compiled kernel where numba is installed (:mod:`.compiled_binning`, about 2.7 x numpy's
speed; the same counts), else in numpy.

The **floor** of a calibration is what its forward passes cost on their own: the plain FP32 model
(ORT's default optimisations, the same threads, idle threads sleeping, one sample per run as calibration
runs) timed on a spread of the very samples each pass reads, right after the pass has run them
(interleaved, so both see the same load), times the samples and the passes. ``CalibrationResult.time_ratio`` is the
calibration's time (its passes and threshold search, without those probe runs) over that floor.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quantbench.common.memory import release_freed_memory

from .compiled_binning import ValueRange
from .compiled_binning import available as compiled_available

log = logging.getLogger(__name__)

HISTOGRAM_METHODS = ("entropy", "percentile", "distribution", "mse")
GRAPHS = ("optimised", "unoptimised")  # the graph the passes run (see the module docstring)
NUM_QUANTIZED_BINS = 128  # ORT's Entropy default: the 8-bit target has 128 bins per side
_CHUNK = 1 << 17  # values binned at once (the chunk and its scratch stay in cache; smaller ones cost more calls)
COMPILED_MIN_VALUES = 200_000_000  # values a pass 2 counts, from which numba's kernel is used (see calibrate)
SPOOL_BYTES = 4 << 30  # pass 1's samples kept on disk for pass 2 up to this (else pass 2 reads the reader again)
PIPELINE_BYTES = 256 << 20  # a second set of activation buffers (ORT runs while numpy reads) only below this
BINNING_THREADS = 2  # bincount holds the GIL, so more threads add little beyond the ufuncs' share
READ_BLOCKED = True  # optimised passes read activations in ORT's blocked layout where they can (.blocked_layout)
READ_OUT = True  # optimised pass 1 reads activations out to numba where COMPILED_MIN_VALUES says so (see calibrate)
PROBE_PREFIX = "qb_calib"  # names of pass 1's probe nodes and outputs
FLOOR_PROBES = 24  # samples per pass also run through the plain FP32 model to measure the floor
# progress(pass_index, passes, samples_done, samples_total or None, floor seconds per sample or None)
ProgressFn = Callable[[int, int, int, "int | None", "float | None"], None]


@dataclass(frozen=True)
class CalibrationConfig:
    """What to compute: ``method`` with its ``num_bins``/``percentile``; ``symmetric`` is the range symmetry."""

    method: str
    symmetric: bool = False
    num_bins: int | None = None
    percentile: float | None = None
    op_types: tuple[str, ...] | None = None
    threads: int = 0  # ORT intra-op threads; 0 = ORT's default (all cores)
    graph: str = "unoptimised"  # "optimised": on ORT's optimised kernels (see the module docstring)
    exclude_nodes: tuple[str, ...] = ()  # nodes the quantizer keeps in float (their Relu/Clip ranges are not adopted)
    # ORT's ActivationSymmetric (the quantizer's, not the range's: Percentile's range is symmetric by default while
    # its activations are not); older ORT quantizers keep Relu/Clip inputs' own ranges with it (see adopted_ranges)
    activation_symmetric: bool = False


@dataclass
class CalibrationResult:
    """ORT ``TensorsData`` plus what the run cost (for notes and benchmarks)."""

    ranges: Any
    tensors: int
    samples: int
    bytes_per_sample: int  # upper bound on the activations of one run (shape inference)
    pass_s: list[float] = field(default_factory=list)  # each pass without its floor probes, then the thresholds
    floor_s: float | None = None  # FP32 forward time of the passes over the samples (see module docstring)
    floor_probes: int = 0  # plain FP32 runs the floor was measured from
    count_s: float | None = None  # of pass 2: counting the activations (worker threads; see counting_beside_forward)
    floor_ci95: tuple[float, float] | None = None  # 95% interval of floor_s from its probes' spread
    notes: list[str] = field(default_factory=list)  # what a row should say about this calibration

    @property
    def time_s(self) -> float:
        """Calibration time: every pass and the threshold search, without the floor's probe runs."""
        return float(sum(self.pass_s))

    @property
    def time_ratio(self) -> float | None:
        """Calibration time over its floor (None when no floor was measured)."""
        return self.time_s / self.floor_s if self.floor_s else None

    @property
    def time_ratio_ci95(self) -> tuple[float, float] | None:
        """95% interval of :attr:`time_ratio`: the calibration's time over the ends of :attr:`floor_ci95` (the floor
        is estimated from a sample of probe runs; the calibration is timed whole)."""
        if not self.floor_ci95 or not all(self.floor_ci95):
            return None
        return self.time_s / self.floor_ci95[1], self.time_s / self.floor_ci95[0]


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
    from quantbench.common.onnx_save import save_model

    front = [n for t in list(probes) if t in graph_inputs for n in probes.pop(t)]
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(front)
    for node in nodes:
        model.graph.node.append(node)
        for out in node.output:
            model.graph.node.extend(probes.get(out, []))
    save_model(model, path)


RangeProbe = tuple[str, "str | None", str, "str | None"]  # tensor, min output, max output, min-|x| output


def write_range_model(model: Any, tensors: list[str], graph_inputs: set[str], path: Path, abs_min: bool = False,
                      max_only: set[str] | frozenset[str] = frozenset()) -> list[RangeProbe]:
    """Save a copy of ``model`` whose outputs are each tensor's range; returns (tensor, min output or None, max
    output, min-of-|x| output or None) per tensor.

    A tensor gets a Reshape to one flat axis and ReduceMin/ReduceMax (and Abs + ReduceMin with ``abs_min``). A float
    tensor of ``max_only`` (>= 0 by construction) of rank >= 3 gets a GlobalMaxPool instead, which ORT's optimised
    graph runs in its blocked layout (no copy back to NCHW; its min is 0 for the quantizer, which widens every range
    to hold 0; ``graph = "optimised"``)."""
    from onnx import TensorProto, helper, numpy_helper

    prefix = PROBE_PREFIX
    kinds = _value_types(model)
    ranks = {vi.name: len(vi.type.tensor_type.shape.dim) for vi in
             list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)
             if vi.type.tensor_type.HasField("shape")}
    del model.graph.output[:]
    model.graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), f"{prefix}_flat"))
    axes_input = _opset(model) >= 18
    if axes_input:
        model.graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), f"{prefix}_axes"))
    probes: dict[str, list[Any]] = {}
    plan: list[RangeProbe] = []
    for i, t in enumerate(tensors):
        if t in max_only and ranks.get(t, 0) >= 3 and kinds.get(t, TensorProto.FLOAT) == TensorProto.FLOAT:
            out = f"{prefix}_{i}_gmp"
            probes[t] = [helper.make_node("GlobalMaxPool", [t], [out], name=out)]
            model.graph.output.append(helper.make_empty_tensor_value_info(out))
            plan.append((t, None, out, None))
            continue
        flat = f"{prefix}_{i}_flat"
        # Reducing a flat view over axis 0 is ORT's fast path (10x faster than reducing every axis).
        nodes = [helper.make_node("Reshape", [t, f"{prefix}_flat"], [flat], name=flat)]
        if abs_min:
            nodes.append(helper.make_node("Abs", [flat], [f"{flat}_abs"], name=f"{flat}_abs"))
        names = []
        for op, x in (("ReduceMin", flat), ("ReduceMax", flat)) + ((("ReduceMin", f"{flat}_abs"),) if abs_min else ()):
            out = f"{prefix}_{i}_{op}" + ("_abs" if x != flat else "")
            ins = [x, f"{prefix}_axes"] if axes_input else [x]
            kwargs = {} if axes_input else {"axes": [0]}
            nodes.append(helper.make_node(op, ins, [out], name=out, keepdims=0, **kwargs))
            model.graph.output.append(helper.make_empty_tensor_value_info(out))
            names.append(out)
        probes[t] = nodes
        plan.append((t, names[0], names[1], names[2] if abs_min else None))
    _save_with_probes(model, probes, graph_inputs, path)
    return plan


ADOPTING_OPS = ("Relu", "Clip")  # ORT's quantizer gives their input their output's range (adjust_tensor_ranges)
# Ops whose output is >= 0 wherever their (first) input is (so is every Concat of such inputs).
_SIGN_KEEPING = ("MaxPool", "GlobalMaxPool", "AveragePool", "GlobalAveragePool", "Flatten", "Reshape", "Identity",
                 "Squeeze", "Unsqueeze", "Transpose")


def adopted_ranges(model: Any, tensors: list[str], config: CalibrationConfig) -> dict[str, str]:
    """Tensors whose range ORT's quantizer replaces by the range of the Relu/Clip that alone reads them
    (``adjust_tensor_ranges``; the QDQ quantizer then drops that Relu/Clip): input -> that node's output.

    Only where the replacement is certain whatever the ORT version: the node is quantized (its op type
    calibrated, not in ``exclude_nodes``), the quantizer's activations are asymmetric (older ORT quantizers skipped the
    adjustment under ``ActivationSymmetric``; the range's own symmetry, Percentile's default, does not matter), both
    tensors are calibrated, and neither end is part of a chain of such nodes (ORT adjusts node by node in graph
    order, so in a chain one input takes a range the next node is about to replace)."""
    if config.activation_symmetric:
        return {}
    wanted = set(tensors)
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    outputs = {o.name for o in model.graph.output}
    candidates = {}
    for node in model.graph.node:
        if (node.op_type in ADOPTING_OPS and node.input and node.output and node.name not in config.exclude_nodes
                and (config.op_types is None or node.op_type in config.op_types)):
            x, y = node.input[0], node.output[0]
            if x in wanted and y in wanted and readers.get(x) == 1 and x not in outputs:
                candidates[x] = y
    sources = set(candidates.values())
    return {x: y for x, y in candidates.items() if y not in candidates and x not in sources}


def nonnegative_tensors(model: Any) -> set[str]:
    """Tensors that are >= 0 for every input: outputs of Relu, of Clip with a constant minimum >= 0 and no maximum
    that is (or may be) negative, and of sign-keeping ops (undilated pooling, reshaping) and Concat of such tensors."""
    from onnx import numpy_helper

    consts = {i.name: i for i in model.graph.initializer}
    out: set[str] = set()
    for node in model.graph.node:  # graph order is topological
        if not node.output:
            continue
        y, ins = node.output[0], [i for i in node.input if i]
        if node.op_type == "Relu":
            out.add(y)
        elif node.op_type == "Clip":
            bounds: list[float | None] = [None, None]  # constant min, max
            for k in (1, 2):
                if len(node.input) > k and node.input[k] in consts:
                    bounds[k - 1] = float(numpy_helper.to_array(consts[node.input[k]]).reshape(-1)[0])
            for a in node.attribute:
                if a.name in ("min", "max"):  # opset < 11
                    bounds[a.name == "max"] = a.f
            low, high = bounds
            # A max below 0 makes outputs negative (all of them where min > max, as ONNX defines); an unknown one may.
            unknown_max = len(node.input) > 2 and node.input[2] and high is None
            if low is not None and low >= 0 and not unknown_max and (high is None or high >= 0):
                out.add(y)
        elif (node.op_type in _SIGN_KEEPING and ins and ins[0] in out
              and not any(a.name == "dilations" and any(d > 1 for d in a.ints) for a in node.attribute)):
            # (a dilated pool's window can lie wholly in the padding: ORT's MaxPool then outputs the lowest float)
            out.add(y)
        elif node.op_type == "Concat" and ins and all(i in out for i in ins):
            out.add(y)
    return out


def write_bin_model(model: Any, tensors: list[str], graph_inputs: set[str], hists: _Histograms,
                    path: Path) -> list[str]:
    """Save a copy of ``model`` whose outputs are, per tensor, each value's bin index (uint16).

    ORT computes the index as ``numpy.histogram`` does, in float32: ``(x - first) / (last - first) * bins``
    truncated, then moved down one bin when x is below its bin's lower edge and up one when it reaches
    the next edge (the last bin keeps its right edge), so the counts are numpy's, hence ORT's calibrators'.
    It runs on all cores and frees the float activations at once; numpy only counts.
    """
    from onnx import TensorProto, helper, numpy_helper

    prefix = "qb_bins"
    del model.graph.output[:]

    def f32(v: Any, name: str) -> Any:
        return numpy_helper.from_array(np.array(v, np.float32), name)

    value_types = {vi.name: vi.type.tensor_type.elem_type for vi in
                   list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    probes: dict[str, list[Any]] = {}
    outputs = []
    n = hists.num_bins
    model.graph.initializer.extend([f32(n, f"{prefix}_n"), f32(n - 1, f"{prefix}_top"), f32(1, f"{prefix}_one")])
    ge = _opset(model) >= 12  # GreaterOrEqual
    for i, t in enumerate(tensors):
        edges = hists.edges[t]
        p = f"{prefix}_{i}"
        # numpy's float32 edges are linspace's i * step + first (checked in the tests); computing them
        # beats a Gather from the edge table (which made the pass 5x slower)
        model.graph.initializer.extend([f32(edges[0], f"{p}_lo"), f32(edges[-1] - edges[0], f"{p}_width"),
                                        f32((edges[-1] - edges[0]) / np.float32(n), f"{p}_step")])
        nodes, x = [], t
        if value_types.get(t, TensorProto.FLOAT) != TensorProto.FLOAT:
            nodes.append(helper.make_node("Cast", [x], [f"{p}_f32"], to=TensorProto.FLOAT))
            x = f"{p}_f32"
        if hists.absolute:
            nodes.append(helper.make_node("Abs", [x], [f"{p}_abs"]))
            x = f"{p}_abs"
        out = f"{p}_bin"
        # Pass 1 saw these exact values (same kernels, one sample per run), so first <= x <= last and the
        # position is in [0, bins]; numpy's index `bins` (x on the last edge) is the last bin.
        node = helper.make_node
        nodes += [node("Sub", [x, f"{p}_lo"], [f"{p}_sub"]), node("Div", [f"{p}_sub", f"{p}_width"], [f"{p}_frac"]),
                  node("Mul", [f"{p}_frac", f"{prefix}_n"], [f"{p}_pos"]),
                  node("Min", [f"{p}_pos", f"{prefix}_top"], [f"{p}_posc"]),
                  node("Floor", [f"{p}_posc"], [f"{p}_i0"]),
                  # this bin's edges, as numpy.linspace computes them
                  node("Mul", [f"{p}_i0", f"{p}_step"], [f"{p}_o0"]), node("Add", [f"{p}_o0", f"{p}_lo"], [f"{p}_e0"]),
                  node("Add", [f"{p}_i0", f"{prefix}_one"], [f"{p}_i0n"]),
                  node("Mul", [f"{p}_i0n", f"{p}_step"], [f"{p}_o1"]), node("Add", [f"{p}_o1", f"{p}_lo"], [f"{p}_e1"]),
                  # numpy's corrections: below the lower edge -> one down; at or above the next edge -> one up,
                  # except in the last bin (the final Min; both cannot happen at once)
                  node("Less", [x, f"{p}_e0"], [f"{p}_below"]),
                  node("Cast", [f"{p}_below"], [f"{p}_dec"], to=TensorProto.FLOAT)]
        if ge:
            nodes.append(node("GreaterOrEqual", [x, f"{p}_e1"], [f"{p}_above"]))
        else:
            nodes += [node("Less", [x, f"{p}_e1"], [f"{p}_inside"]), node("Not", [f"{p}_inside"], [f"{p}_above"])]
        nodes += [node("Cast", [f"{p}_above"], [f"{p}_inc"], to=TensorProto.FLOAT),
                  node("Sub", [f"{p}_i0", f"{p}_dec"], [f"{p}_i1"]), node("Add", [f"{p}_i1", f"{p}_inc"], [f"{p}_i2"]),
                  node("Min", [f"{p}_i2", f"{prefix}_top"], [f"{p}_i3"]),
                  node("Cast", [f"{p}_i3"], [out], to=TensorProto.UINT16)]
        model.graph.output.append(helper.make_empty_tensor_value_info(out))
        outputs.append(out)
        probes[t] = nodes
    _save_with_probes(model, probes, graph_inputs, path)
    return outputs


def write_activation_model(model: Any, tensors: list[str], graph_inputs: set[str], path: Path,
                           value_types: dict[str, int] | None = None) -> list[str]:
    """Save a copy of ``model`` whose outputs are ``tensors`` themselves (an Identity where one is a graph
    input, a Cast to float32 for bfloat16, which numpy lacks); returns the output names, in order.
    ``value_types``: each tensor's element type (default: from ``model``'s value infos). Float16 and
    float64 tensors are widened or rounded by numpy: a Cast in the graph would let ORT drop the float16
    rounding of a node it runs in float32 (the Cast pair it inserts and removes), so the values would not
    be pass 1's."""
    from onnx import TensorProto, helper

    from quantbench.common.onnx_save import save_model

    if value_types is None:
        value_types = _value_types(model)
    del model.graph.output[:]
    outputs = []
    for i, t in enumerate(tensors):
        out = t
        kind = value_types.get(t, TensorProto.FLOAT)
        if kind == TensorProto.BFLOAT16:
            out, kind = f"qb_act_{i}_f32", TensorProto.FLOAT
            model.graph.node.append(helper.make_node("Cast", [t], [out], name=out, to=kind))
        elif t in graph_inputs:
            out = f"qb_act_{i}"
            model.graph.node.append(helper.make_node("Identity", [t], [out], name=out))
        model.graph.output.append(helper.make_tensor_value_info(out, kind, None))
        outputs.append(out)
    save_model(model, path)
    return outputs


def _value_types(model: Any) -> dict[str, int]:
    return {vi.name: vi.type.tensor_type.elem_type
            for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}


def _reads_values_only(node: Any) -> bool:
    """Whether ``node`` is one of calibration's probes (Reshape, ReduceMin/ReduceMax, Abs, GlobalMaxPool of a
    tensor): what it gives does not depend on the order of the tensor's values."""
    return bool(node.output) and all(o.startswith(f"{PROBE_PREFIX}_") for o in node.output)


def calibration_session(path: Path, threads: int, optimised: bool = False) -> Any:
    """A CPU session for models that output many activations (also weight_rounding's): no arena, unoptimised
    (as ORT's calibrators) unless ``optimised`` (ORT's default optimisations, as the model runs on its own; the graph
    outputs and probes then read their tensors in ORT's blocked layout where :mod:`.blocked_layout` can keep them
    there: the same values, in another order)."""
    import onnxruntime as ort

    if optimised and READ_BLOCKED:
        from .blocked_layout import without_reorders

        edited = path.with_name(path.stem + "_blocked.onnx")
        try:
            if without_reorders(path, edited, _reads_values_only):
                so = _session_options(threads)
                so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # it is the optimised graph
                return ort.InferenceSession(str(edited), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - an optimisation only: ORT's own graph gives the same values
            log.debug("blocked-layout reading unavailable for %s (%s); running ORT's optimised graph", path.name, exc)
    so = _session_options(threads)
    if not optimised:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # as ORT's calibrators
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _session_options(threads: int) -> Any:
    """Calibration's session options (ORT's default optimisation level)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    # The arena keeps the largest buffers it ever served for the whole session; the memory pattern
    # pre-allocates one block per input shape. Both only cost memory here.
    so.enable_cpu_mem_arena = False
    so.enable_mem_pattern = False
    # With the default order ORT ran every probe after the whole network, so all of a run's
    # activations stayed alive (ResNet-50: 100 MB per sample); priority order follows our node order
    # (probes right after their producer) and holds about 13 MB per sample.
    so.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    so.log_severity_level = 3
    # Spinning idle workers take the cores numpy needs to count bins between runs.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads > 0:
        so.intra_op_num_threads = threads
    return so


def counting_beside_forward(threads: int) -> bool:
    """Whether pass 2 counts a sample's activations while ORT computes the next one's, or after each forward: beside
    it only where cores stay free beside ORT's ``threads`` (0: ORT's default, a thread per core) for the binning
    threads. Where they do not, counting beside ORT slowed ORT's threads more than it overlapped (ResNet-50,
    Percentile, 400 images on 2 cores, alternating: pass 2 1.42-1.49 x its floor beside, 1.36-1.40 x after)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return threads > 0 and cores >= threads + BINNING_THREADS


class _ActivationRuns:
    """One sample per run of the activation model, its outputs written by ORT into buffers allocated once
    per input shape (IO binding; fresh buffers cost page faults on every run). With ``pipeline``, two buffer sets
    are used in turn (one when two would exceed ``PIPELINE_BYTES``), so a consumer may read one while ORT writes the
    next."""

    def __init__(self, path: Path, outputs: list[str], threads: int, optimised: bool = False,
                 pipeline: bool = True) -> None:
        self.pipeline = pipeline
        self.session = calibration_session(path, threads, optimised=optimised)
        self.outputs = outputs
        self.key: tuple | None = None
        self.bound = True  # False once a bound run failed: plain runs from then on
        self.buffers: list[list[np.ndarray]] = []
        self.bindings: list[Any] = []
        self.turn = 0

    @property
    def next_slot(self) -> int | None:
        """The buffer set the next run writes, when known before it runs (None: fresh arrays)."""
        return self.turn if self.buffers else None

    def run(self, feed: dict[str, np.ndarray]) -> tuple[list[np.ndarray], int | None]:
        """The calibrated tensors of ``feed``, flat, and the buffer set holding them."""
        key = tuple((k, v.shape, v.dtype.str) for k, v in feed.items())
        if not self.bound:
            return [a.reshape(-1) for a in self.session.run(self.outputs, feed)], None
        if key != self.key:  # a plain run gives the output shapes; its arrays become the first buffer set
            arrays = self.session.run(self.outputs, feed)
            self.key = key
            sets = 2 if self.pipeline and 2 * sum(a.nbytes for a in arrays) <= PIPELINE_BYTES else 1
            self.buffers = [arrays] + [[np.empty_like(a) for a in arrays] for _ in range(sets - 1)]
            self.bindings = []
            for bufs in self.buffers:
                io = self.session.io_binding()
                for name, buf in zip(self.outputs, bufs, strict=True):
                    io.bind_output(name, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
                self.bindings.append(io)
            self.turn = 1 % sets
            return [a.reshape(-1) for a in arrays], 0
        slot, io = self.turn, self.bindings[self.turn]
        for name, value in feed.items():
            io.bind_cpu_input(name, np.ascontiguousarray(value))
        try:
            self.session.run_with_iobinding(io)
        except Exception:  # noqa: BLE001 - e.g. an output whose shape depends on the data: no fixed buffers
            self.bound, self.buffers = False, []
            return [a.reshape(-1) for a in self.session.run(self.outputs, feed)], None
        self.turn = (self.turn + 1) % len(self.buffers)
        return [b.reshape(-1) for b in self.buffers[slot]], slot


class _Floor:
    """The plain FP32 model's time per sample, measured on every ``stride``-th sample a pass reads."""

    def __init__(self, model_path: Path, threads: int, total: int | None, probes: int = FLOOR_PROBES) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()  # as the model runs on its own (ort-cpu's defaults), at calibration's threads
        so.log_severity_level = 3
        # Its threads sleep when idle, as the calibration sessions' do: spinning after each probe they took the
        # cores from the calibration run that followed (and spinning is not what calibration's runs get).
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads > 0:
            so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
        self.stride = max(1, total // probes) if total else 8
        self.times: list[float] = []
        self.warm = False

    def due(self, index: int) -> bool:
        """Whether sample ``index`` of a pass is one the floor is measured on."""
        return index % self.stride == 0

    def probe(self, index: int, feed: dict[str, np.ndarray]) -> float:
        """Run ``feed`` through the FP32 model when ``index`` is probed; returns the seconds this took."""
        if not self.due(index):
            return 0.0
        t0 = time.perf_counter()
        if not self.warm:  # the first run of a session allocates and plans: not part of a forward pass
            self.session.run(None, feed)
            self.warm = True
            t1 = time.perf_counter()
        else:
            t1 = t0
        self.session.run(None, feed)
        t2 = time.perf_counter()
        self.times.append(t2 - t1)
        return t2 - t0

    @property
    def per_sample(self) -> float | None:
        return sum(self.times) / len(self.times) if self.times else None

    def per_sample_ci95(self, resamples: int = 2000) -> tuple[float, float] | None:
        """95% percentile-bootstrap interval of :attr:`per_sample` (the probes' mean; forward times are skewed by
        the machine's load, so no normal approximation); None below two probes. Seeded: reproducible."""
        if len(self.times) < 2:
            return None
        t = np.asarray(self.times)
        means = t[np.random.default_rng(0).integers(0, t.size, (resamples, t.size))].mean(axis=1)
        lo, hi = np.quantile(means, [0.025, 0.975])
        mean = self.per_sample  # summed otherwise than numpy's means: keep it inside to the last bit
        return min(float(lo), mean), max(float(hi), mean)


def _total_samples(reader: Any) -> int | None:
    indices = getattr(reader, "indices", None)
    return len(indices) if indices is not None else None


def _one_sample_feeds(batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
    """A batch's samples, each a feed of its own (views, no copies)."""
    n = len(next(iter(batch.values())))
    for i in range(n):
        yield {k: v[i:i + 1] for k, v in batch.items()}


def one_sample_feeds(reader: Any) -> Iterator[dict[str, np.ndarray]]:
    """One-sample feeds, in the reader's order (read in this thread; calibration's passes use :class:`_Prefetched`):
    ORT's kernels round differently for other run sizes, so every pass over calibration data runs one at a time."""
    reader.rewind()
    while (batch := reader.get_next()) is not None:
        yield from _one_sample_feeds(batch)


class _Prefetched:
    """One-sample feeds of ``reader``, in its order, each batch read in a worker thread while the caller runs the
    previous one's samples: reading and preprocessing images (CIFAR-10 JPEGs resized to 224: 2.9 ms each, 6 % of
    ResNet-50's forward pass here) overlaps ORT's runs instead of adding to them. :meth:`settle` waits for the
    read in flight, so a floor probe runs as the plain forward pass would, without it."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader
        self._pending: Future | None = None

    def samples(self) -> Iterator[dict[str, np.ndarray]]:
        self.reader.rewind()
        with ThreadPoolExecutor(1, thread_name_prefix="qb-read") as pool:
            self._pending = pool.submit(self.reader.get_next)
            try:
                while (batch := self._pending.result()) is not None:  # the reader's error, raised here
                    self._pending = pool.submit(self.reader.get_next)
                    yield from _one_sample_feeds(batch)
            finally:
                self._pending = None  # leaving the pool waits for a read still in flight

    def settle(self) -> None:
        """Wait until no read is running (a failed read raises when :meth:`samples` reaches it)."""
        pending = self._pending
        if pending is not None:
            wait([pending])


class _Spool:
    """Pass 1's one-sample feeds, written as they are read to a file in the calibration's temporary folder, for
    pass 2 to read back instead of decoding and preprocessing every image again (2.9 ms each for CIFAR-10 JPEGs at
    224, taken from the two cores ORT's runs use). The file goes through the page cache, not this process's
    memory. Given up (pass 2 reads the reader again) past ``limit`` bytes or half the free disk."""

    def __init__(self, path: Path, limit: int) -> None:
        import shutil

        self.path = path
        free = shutil.disk_usage(path.parent).free
        self.limit = min(limit, free // 2)
        self.size = 0
        self.count = 0
        self._fh: Any = open(path, "wb") if self.limit > 0 else None  # closed by finish/close

    @property
    def complete(self) -> bool:
        return self._fh is None and self.count > 0 and self.path.exists()

    def write(self, feed: dict[str, np.ndarray]) -> None:
        if self._fh is None:
            return
        import pickle

        self.size += sum(v.nbytes for v in feed.values())
        if self.size > self.limit:
            self.close(drop=True)
            return
        try:
            pickle.dump({k: np.ascontiguousarray(v) for k, v in feed.items()}, self._fh, protocol=5)
        except OSError:  # a full disk: pass 2 reads the reader again
            self.close(drop=True)
            return
        self.count += 1

    def finish(self) -> None:
        """Pass 1 is over: the file is complete."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def close(self, drop: bool = False) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if drop:
            self.count = 0
            self.path.unlink(missing_ok=True)

    def samples(self) -> Iterator[dict[str, np.ndarray]]:
        import pickle

        with open(self.path, "rb") as fh:
            for _ in range(self.count):
                yield pickle.load(fh)  # our own file, written by write()

    def settle(self) -> None:
        """Nothing runs beside the caller (the interface of :class:`_Prefetched`)."""


class _Spooled:
    """``data``'s samples, each written to ``spool`` as it is read (pass 1 run by :func:`_run_pass`)."""

    def __init__(self, data: _Prefetched, spool: _Spool) -> None:
        self.data, self.spool = data, spool

    def samples(self) -> Iterator[dict[str, np.ndarray]]:
        for feed in self.data.samples():
            self.spool.write(feed)
            yield feed

    def settle(self) -> None:
        self.data.settle()


class _Histograms:
    """Counts of each tensor's values (of their absolute values with ``absolute``) in ``num_bins`` equal
    bins over a fixed range per tensor, equal to ``numpy.histogram``'s: adding batches only adds counts.

    ``nonnegative``: tensors known to be >= 0, the only ones whose :attr:`minimum` is wanted (numba's kernel then
    leaves the others' unread) and whose |x| is x (-0.0 and 0.0 share a bin); None: every tensor's minimum."""

    def __init__(self, ranges: dict[str, tuple[np.float32, np.float32]], num_bins: int, absolute: bool,
                 compiled: bool | None = None, nonnegative: set[str] | frozenset[str] | None = None) -> None:
        self.num_bins, self.absolute, self.nonnegative = num_bins, absolute, nonnegative
        self.edges: dict[str, np.ndarray] = {}
        self.counts: dict[str, np.ndarray] = {}
        self.fast: dict[str, tuple | None] = {}  # the checked estimate's parameters (None: numpy.histogram bins)
        # the smallest value counted: exact for |x| and for tensors >= 0 (numba's kernel reads it from the bits;
        # with ``nonnegative`` given, only theirs)
        self.minimum = {t: np.float32(np.inf) for t in ranges}
        empty = np.zeros(0, np.float32)
        for t, (low, high) in ranges.items():
            # numpy.histogram's float32 edges for this range (it widens an empty range to +-0.5)
            self.edges[t] = np.histogram_bin_edges(empty, num_bins, range=(np.float32(low), np.float32(high)))
            self.counts[t] = np.zeros(num_bins, np.int64)
            self.fast[t] = _bin_params(self.edges[t]) if _estimate_is_exact(self.edges[t]) else None
        self._scratch = threading.local()
        from .compiled_binning import INSTALL_HINT, available, count

        self._count = count
        # numba's kernel (same counts) unless told otherwise; numpy without numba
        self.compiled = available() if compiled is None else compiled and available()
        if compiled is not False and not self.compiled and ranges:
            log.info("histogram bins counted in numpy: %s", INSTALL_HINT)

    _PER_TENSOR = ("edges", "counts", "fast", "minimum")

    def drop(self, names: list[str]) -> None:
        """Forget ``names`` (no longer binned)."""
        for store in self._PER_TENSOR:
            for t in names:
                getattr(self, store).pop(t, None)

    def replace(self, other: _Histograms) -> None:
        """Take ``other``'s tensors (binned again over other ranges) in place of this one's."""
        for store in self._PER_TENSOR:
            getattr(self, store).update(getattr(other, store))

    def add(self, name: str, bins: np.ndarray) -> None:
        """Count ``bins`` (each value's bin index, from the bin model; ``num_bins`` is the range's top value)."""
        flat = bins.reshape(-1)
        counts, n = self.counts[name], self.num_bins
        for start in range(0, flat.size, _CHUNK):
            c = np.bincount(flat[start:start + _CHUNK], minlength=n + 1)
            if len(c) > n + 1:
                raise ValueError(_left_range(name))
            counts += c[:n]
            counts[-1] += c[n]

    def add_values(self, name: str, values: np.ndarray) -> None:
        """Count ``values`` (as float32; their absolute values with ``absolute``) into ``name``'s bins, exactly as
        ``numpy.histogram`` over the tensor's range would; a value outside the range is an error."""
        flat = values.reshape(-1)
        edges, counts, n = self.edges[name], self.counts[name], self.num_bins
        lo, hi = edges[0], edges[-1]
        if self.compiled and self.fast[name] is not None and flat.dtype == np.float32:
            nonneg = self.nonnegative is not None and name in self.nonnegative
            track = self.nonnegative is None or nonneg
            c, outside, least = self._count(flat, self.fast[name], hi, n, self.absolute and not nonneg, track)
            if outside:
                raise ValueError(_left_range(name))
            counts += c
            self.minimum[name] = min(self.minimum[name], least)
            return
        sc = self._buffers()
        for start in range(0, flat.size, _CHUNK):
            x = flat[start:start + _CHUNK]
            if x.dtype != np.float32:  # float16 exactly, float64 rounded to nearest, as ORT's Cast
                x = x.astype(np.float32)
            if self.absolute:
                x = np.abs(x, out=sc.a[:x.size])
            least = x.min()
            if not (least >= lo and x.max() <= hi):  # NaN fails too
                raise ValueError(_left_range(name))
            self.minimum[name] = min(self.minimum[name], least)
            if self.fast[name] is not None:
                counts += _fast_counts(x, n, self.fast[name], sc)
            else:
                counts += np.histogram(x, n, range=(lo, hi))[0]

    def _buffers(self) -> Any:
        sc = self._scratch
        if not hasattr(sc, "t"):  # per thread: the pass's worker and any caller
            sc.t, sc.e = np.empty(_CHUNK, np.float32), np.empty(_CHUNK, np.float32)
            sc.a, sc.m, sc.u = np.empty(_CHUNK, np.float32), np.empty(_CHUNK, bool), np.empty(_CHUNK, np.int32)
        return sc


def _left_range(name: str) -> str:
    return (f"activation '{name}' left the range measured in pass 1: calibration passes disagree "
            "(non-deterministic model?)")


def _bin_params(edges: np.ndarray) -> tuple[np.float32, np.float32, np.float32, np.float32]:
    """(scale, offset, step, first edge) of the estimate ``trunc(x * scale + offset)``, which lands in
    [bin, bin + 1] for x in bin (offset 0.5 bin), and of numpy's edges ``k * step + first``."""
    n = len(edges) - 1
    lo = edges[0]
    width = np.float32(edges[-1] - lo)
    scale = np.float32(n) / width
    return scale, np.float32(0.5) - lo * scale, width / np.float32(n), lo


def _fast_counts(x: np.ndarray, n: int, params: tuple, sc: Any) -> np.ndarray:
    """Bin counts of ``x`` (float32, inside the range) in ``n`` bins whose edges passed
    :func:`_estimate_is_exact`; ``params``: their :func:`_bin_params`."""
    k = x.size
    scale, offset, step, lo = params
    t, e, m, u = sc.t[:k], sc.e[:k], sc.m[:k], sc.u[:k]
    np.multiply(x, scale, out=t)
    np.add(t, offset, out=t)
    np.trunc(t, out=t)  # bin or bin + 1
    np.multiply(t, step, out=e)
    np.add(e, lo, out=e)  # that bin's lower edge, numpy's float32 edge k * step + first
    np.greater_equal(x, e, out=m)
    np.add(t, m, out=t)  # bin + 1, or bin + 2 at the top edge's float32 rounding (x <= the last edge)
    u[...] = t
    c = np.bincount(u, minlength=n + 2)
    c[n] += c[n + 1]  # the last bin keeps its right edge
    return c[1:n + 1]


def _estimate_is_exact(edges: np.ndarray) -> bool:
    """Whether :func:`_fast_counts` counts as ``numpy.histogram`` does for every float32 in the range.

    Both numpy's first guess of the bin and our estimate are non-decreasing in x, and the bins are
    intervals [edge k, edge k+1) (the last one closed), so checking each bin's first and last float32
    suffices: numpy's guess must be within one bin of the bin (its correction moves it by one at most,
    so numpy then returns the bin), our estimate in [bin, bin + 1], and numpy's edges must be
    ``k * step + first`` in float32 as linspace computes them (not when the step underflows)."""
    n = len(edges) - 1
    with np.errstate(all="ignore"):
        if not np.all(edges[1:] > edges[:-1]):
            return False
        scale, offset, step, lo = _bin_params(edges)
        if not np.array_equal(np.arange(n, dtype=np.float32) * step + lo, edges[:n]):
            return False
        first = edges[:n]
        last = np.append(np.nextafter(edges[1:n], np.float32(-np.inf)), edges[-1]).astype(np.float32)
        k = np.arange(n)

        def numpy_guess(v: np.ndarray) -> np.ndarray:  # numpy.histogram's first guess (lib/_histograms_impl.py)
            g = ((v - lo) / np.float32(edges[-1] - lo) * n).astype(np.intp)
            g[g == n] -= 1
            return g

        def ours(v: np.ndarray) -> np.ndarray:
            return np.trunc(v * scale + offset).astype(np.intp)

        return bool(np.all(numpy_guess(first) >= k - 1) and np.all(numpy_guess(last) <= k + 1)
                    and np.all(ours(first) >= k) and np.all(ours(last) <= k + 1))


def _balanced_shares(sizes: list[int], parts: int) -> list[list[int]]:
    """Indices of ``sizes`` in ``parts`` groups of about equal total (largest first, each to the lightest)."""
    shares: list[list[int]] = [[] for _ in range(max(1, parts))]
    totals = [0] * len(shares)
    for k in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        j = totals.index(min(totals))
        shares[j].append(k)
        totals[j] += sizes[k]
    return [s for s in shares if s]


def relu_ranges_from_inputs(relus: dict[str, str], tensors: list[str]) -> dict[str, str]:
    """The Relu outputs (of ``relus``: output -> input) among ``tensors`` whose min and max follow from their
    input's, itself calibrated and probed (not another such output): min and max of max(x, 0) are x's clipped at
    0, exactly, so pass 1 reads 40 % fewer values on ResNet-50 (its 49 Relus)."""
    wanted = set(tensors)
    candidates = {out: x for out, x in relus.items() if out in wanted and x in wanted}
    return {out: x for out, x in candidates.items() if x not in candidates}


def relu_outputs_from_inputs(relus: dict[str, str], ranges: dict[str, tuple]) -> dict[str, str]:
    """The Relu outputs (of ``relus``: output -> input) whose histogram follows from their input's: both
    calibrated over the same range, which holds 0. Binning x and max(x, 0) with the same edges differs only
    in that every negative value moves to 0's bin, and every bin below 0's holds negative values only."""
    derived = {}
    for out, x in relus.items():
        if out in ranges and x in ranges and x not in relus:  # x binned itself (not a Relu's output)
            lo, hi = (np.float32(v) for v in ranges[out])
            if (lo, hi) == tuple(np.float32(v) for v in ranges[x]) and lo <= 0 <= hi:
                derived[out] = x
    return derived


def relu_counts(counts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Histogram of max(x, 0) from the histogram ``counts`` of x over ``edges`` (numpy.histogram's, 0 inside)."""
    zero = int(np.histogram(np.zeros(1, edges.dtype), len(counts), range=(edges[0], edges[-1]))[0].argmax())
    out = counts.copy()
    out[zero] = counts[:zero + 1].sum()
    out[:zero] = 0
    return out


def _run_pass(k: int, passes: int, runs: _ActivationRuns, data: _Prefetched | _Spool,
              consume: Callable[[list[np.ndarray]], None], fl: _Floor | None, report: ProgressFn,
              total: int | None) -> tuple[float, int]:
    """Pass ``k`` of ``passes``: every sample through ``runs``, ``consume`` reading each sample's activations in
    a worker thread while ORT runs the next; returns (seconds without the floor's probe runs, samples).
    The worker takes samples in order, so waiting for a buffer set's last reader suffices."""
    t0 = time.perf_counter()
    probe_s = 0.0
    samples = 0
    pending: dict[int | None, Future] = {}
    with ThreadPoolExecutor(1, thread_name_prefix="qb-calib") as pool:
        def drain() -> None:
            for fut in list(pending.values()):
                fut.result()  # the consumer's error, raised here
            pending.clear()

        for feed in data.samples():
            slot = runs.next_slot
            if slot in pending:  # ORT is about to overwrite the buffers the consumer may still read
                pending.pop(slot).result()
            arrays, slot = runs.run(feed)
            if slot in pending:  # a new input shape's first set (or fresh arrays): the older job is waited for
                pending.pop(slot).result()
            pending[slot] = pool.submit(consume, arrays)
            if fl is not None and fl.due(samples):
                drain()  # the probe runs alone, as the floor's forward would
                data.settle()
                probe_s += fl.probe(samples, feed)
            samples += 1
            report(k, passes, samples, total, fl.per_sample if fl else None)
        drain()
    return time.perf_counter() - t0 - probe_s, samples


Bounds = tuple[dict[str, np.float32], dict[str, np.float32], dict[str, np.float32]]  # lows, highs, min |x| per tensor


def _probe_pass(path: Path, plan: list[RangeProbe], threads: int, optimised: bool, data: _Spooled, fl: _Floor | None,
                report: ProgressFn, where: tuple[int, int, int | None], bounds: Bounds) -> tuple[float, int]:
    """Pass 1 on the range model ``path`` (:func:`write_range_model`'s ``plan``: ORT reduces each tensor in the
    graph, right after its producer); lowers/raises ``bounds``. Returns (seconds the floor's probes took, samples)."""
    lows, highs, abs_lows = bounds
    outputs = [name for probe in plan for name in probe[1:] if name]
    index = {name: k for k, name in enumerate(outputs)}
    readout = [(t, index[low] if low else None, index[high]) for t, low, high, _ in plan]
    abs_readout = [(t, index[abs_low]) for t, _, _, abs_low in plan if abs_low]
    zero = np.float32(0)
    session = calibration_session(path, threads, optimised=optimised)
    probe_s, samples = 0.0, 0
    for feed in data.samples():
        values = session.run(outputs, feed)
        for t, low, high in readout:  # a NaN reaches the finiteness check where ORT's reduction keeps it
            lows[t] = np.minimum(lows[t], np.float32(values[low]) if low is not None else zero)
            # a GlobalMaxPool's per-channel maxima, or a ReduceMax's one value
            highs[t] = np.maximum(highs[t], np.float32(np.max(values[high])))
        for t, k in abs_readout:
            abs_lows[t] = np.minimum(abs_lows[t], np.float32(values[k]))
        if fl is not None and fl.due(samples):
            data.settle()  # the probe runs alone, as the floor's forward would
            probe_s += fl.probe(samples, feed)
        samples += 1
        report(where[0], where[1], samples, where[2], fl.per_sample if fl else None)
    return probe_s, samples


def _read_out_pass(runs: _ActivationRuns, names: list[str], data: _Spooled, fl: _Floor | None, report: ProgressFn,
                   where: tuple[int, int, int | None], bounds: Bounds) -> tuple[float, int]:
    """Pass 1 on the activation model ``runs`` (its outputs: ``names``), each tensor's minimum, maximum and minimum
    |x| read in one go by numba's kernel (:class:`.compiled_binning.ValueRange`); lowers/raises ``bounds``. Returns
    (seconds the floor's probes took, samples)."""
    found = [ValueRange() for _ in names]
    with ThreadPoolExecutor(BINNING_THREADS, thread_name_prefix="qb-ranges") as readers:
        read = _per_tensor(readers, lambda k, a: found[k].add(a), list(range(len(names))), [0.0])
        t0 = time.perf_counter()
        elapsed, samples = _run_pass(where[0], where[1], runs, data, read, fl, report, where[2])
        probe_s = time.perf_counter() - t0 - elapsed
    lows, highs, abs_lows = bounds
    for t, r in zip(names, found, strict=True):
        lows[t], highs[t], abs_lows[t] = r.bounds
    return probe_s, samples


def _per_tensor(pool: ThreadPoolExecutor, work: Callable[[int, np.ndarray], None], columns: list[int],
                spent: list[float]) -> Callable[[list[np.ndarray]], None]:
    """A pass's consumer: ``work(k, arrays[k])`` for each ``k`` of ``columns``, split over ``pool``'s threads in
    shares of about equal size (numpy's ufuncs and numba's kernels release the GIL); adds its seconds to
    ``spent[0]``."""
    shares: list[list[int]] = []

    def share_of(arrays: list[np.ndarray], share: list[int]) -> None:
        for k in share:
            work(k, arrays[k])

    def consume(arrays: list[np.ndarray]) -> None:
        tc = time.perf_counter()
        if not shares:
            sizes = [arrays[k].size for k in columns]
            shares.extend([[columns[i] for i in share] for share in _balanced_shares(sizes, BINNING_THREADS)])
        for job in [pool.submit(share_of, arrays, share) for share in shares]:
            job.result()
        spent[0] += time.perf_counter() - tc

    return consume


def _bin_pass(model_path: Path, binned: list[str], hists: _Histograms, graph_inputs: set[str], tmp: Path,
              value_types: dict[str, int], config: CalibrationConfig, optimised: bool, data: _Prefetched | _Spool,
              fl: _Floor | None, report: ProgressFn, where: tuple[int, int, int | None],
              runs: tuple[_ActivationRuns, list[str]] | None = None) -> tuple[float, float]:
    """Count every sample's ``binned`` activations into ``hists``: (seconds without floor probes, seconds the
    binning threads took). ``runs``: pass 1's activation runs and the tensors they output (``binned`` among them),
    else an activation model of ``binned`` is written and loaded."""
    import onnx

    t0 = time.perf_counter()
    count_s = [0.0]
    if runs is None:
        outputs = write_activation_model(onnx.load(str(model_path)), binned, graph_inputs,
                                         tmp / "calib_activations.onnx", value_types)
        release_freed_memory()  # the model's protobuf and its serialised copy, before ORT loads the weights again
        session = _ActivationRuns(tmp / "calib_activations.onnx", outputs, config.threads, optimised=optimised,
                                  pipeline=counting_beside_forward(config.threads))
        names = binned
    else:
        session, names = runs
    position = {t: k for k, t in enumerate(names)}
    with ThreadPoolExecutor(BINNING_THREADS, thread_name_prefix="qb-bins") as binners:
        count = _per_tensor(binners, lambda k, a: hists.add_values(names[k], a), [position[t] for t in binned],
                            count_s)
        setup_s = time.perf_counter() - t0
        elapsed, _ = _run_pass(where[0], where[1], session, data, count, fl, report, where[2])
    return setup_s + elapsed, count_s[0]


def calibrate(model_path: Path, config: CalibrationConfig, reader: Any, tmp: Path,
              progress: ProgressFn | None = None, floor: bool = True) -> CalibrationResult:
    """Ranges (ORT ``TensorsData``) of the tensors ORT would calibrate in ``model_path``.

    ``reader`` follows ORT's ``CalibrationDataReader`` protocol (``get_next``/``rewind``); it is read
    once per pass. The result depends on the data and ``config`` only, not on how the reader batches
    or orders the samples. ``progress`` is called after every sample; ``floor`` measures the floor.
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    method = config.method
    histogram = method in HISTOGRAM_METHODS
    if histogram and not 2 <= int(config.num_bins or 0) <= 65535:
        raise ValueError(f"num_bins must be in [2, 65535] for {method} calibration, not {config.num_bins}")
    if config.graph not in GRAPHS:
        raise ValueError(f"calibration graph must be one of {', '.join(GRAPHS)}, not {config.graph!r}")
    tmp = Path(tmp)
    model = load_model_with_shape_infer(Path(model_path))
    tensors, value_infos = tensors_to_calibrate(model, config.op_types)
    elements = {t: _elements_per_sample(vi) for t, vi in value_infos.items()}
    if not tensors:
        raise ValueError(f"no float tensor to calibrate for op types {list(config.op_types or [])}")
    graph_inputs = {i.name for i in model.graph.input} - {i.name for i in model.graph.initializer}
    per_sample = activation_bytes_per_sample(model)
    absolute = method == "percentile" and config.symmetric  # ORT's collect_absolute_value: bins |x|
    value_types = _value_types(model)
    relus = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Relu"}
    optimised = config.graph == "optimised"
    total = _total_samples(reader)
    if optimised:
        adopted = adopted_ranges(model, tensors, config)  # input -> the Relu/Clip output whose range it takes
        clipped: dict[str, str] = {}
        probed = [t for t in tensors if t not in adopted]
    else:
        adopted = {}
        clipped = relu_ranges_from_inputs(relus, tensors) if not absolute else {}
        probed = [t for t in tensors if t not in clipped]
    # A histogram method's pass 1 reads every probed tensor out (numba's one-read minimum, maximum and minimum |x|)
    # for pass 2 to run on the same session, where numba repays its start (COMPILED_MIN_VALUES; an unknown total
    # counts as none); else ORT reduces each tensor in the graph. MinMax keeps the reductions: as fast on ResNet-50
    # (1,000 images: 46.6-46.9 s read out, 46.8-47.2 s reduced), and they hold little more than the weights.
    read_out = (READ_OUT and optimised and histogram
                and (total or 0) * sum(elements.get(t, 1) for t in probed) >= COMPILED_MIN_VALUES
                and compiled_available())  # last: it imports numba
    passes_n = 2 if histogram else 1
    written = time.perf_counter()  # writing the pass's model is part of its time
    if read_out:
        outputs = write_activation_model(model, probed, graph_inputs, tmp / "calib_activations.onnx", value_types)
    else:
        # A GlobalMaxPool gives no minimum: 0 is assumed, which is right wherever only max|x| matters or every
        # quantizer widens the range to hold 0 (MinMax, Entropy, Distribution, asymmetric Percentile); |x| bins and
        # mse's [min, max] start at the true minimum, so pass 2 checks it (below).
        plan = write_range_model(model, probed, graph_inputs, tmp / "calib_range.onnx", abs_min=absolute,
                                 max_only=nonnegative_tensors(model) if optimised else frozenset())
    del model
    release_freed_memory()  # the model's protobuf and its serialised copy, before ORT loads the weights again
    written = time.perf_counter() - written
    fl = _Floor(Path(model_path), config.threads, total) if floor else None
    report = progress or (lambda *_: None)
    lows = {t: np.float32(np.inf) for t in tensors}
    highs = {t: np.float32(-np.inf) for t in tensors}
    abs_lows = {t: np.float32(np.inf) for t in tensors}
    zero = np.float32(0)
    data = _Prefetched(reader)
    spool = _Spool(tmp / "calib_samples.pkl", SPOOL_BYTES if histogram else 0)
    runs: _ActivationRuns | None = None
    t0 = time.perf_counter()
    try:
        if read_out:
            runs = _ActivationRuns(tmp / "calib_activations.onnx", outputs, config.threads, optimised=True,
                                   pipeline=counting_beside_forward(config.threads))
            probe_s, samples = _read_out_pass(runs, probed, _Spooled(data, spool), fl, report, (1, passes_n, total),
                                              (lows, highs, abs_lows))
            assumed_zero: set[str] = set()
        else:
            probe_s, samples = _probe_pass(tmp / "calib_range.onnx", plan, config.threads, optimised,
                                           _Spooled(data, spool), fl, report, (1, passes_n, total),
                                           (lows, highs, abs_lows))
            assumed_zero = {t for t, low, _, _ in plan if low is None}  # GlobalMaxPool probes: >= 0, minimum 0
    except BaseException:
        spool.close(drop=True)
        raise
    release_freed_memory()  # pass 1's session, or the model's protobuf
    spool.finish()
    if samples == 0:
        spool.close(drop=True)
        raise ValueError("calibration reader produced no batches")
    for t in assumed_zero:
        abs_lows[t] = zero
    for out, x in clipped.items():  # min and max of max(x, 0): x's, clipped at 0 (NaN stays NaN)
        lows[out], highs[out] = np.maximum(lows[x], zero), np.maximum(highs[x], zero)
    for x, out in adopted.items():  # the range ORT's quantizer gives x (see adopted_ranges)
        lows[x], highs[x] = lows[out], highs[out]
    # named by a tensor that was measured (an adopted one only repeats its Relu/Clip's values)
    bad = [t for t in tensors if t not in adopted and not (np.isfinite(lows[t]) and np.isfinite(highs[t]))]
    if bad:
        spool.close(drop=True)
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ValueError(f"activation '{bad[0]}' has non-finite values (min {lows[bad[0]]}, max {highs[bad[0]]}) "
                         f"on the calibration data{more}")
    passes = [written + time.perf_counter() - t0 - probe_s]

    def floor_s() -> float | None:
        per = fl.per_sample if fl else None
        return per * samples * passes_n if per is not None else None

    def floor_ci95() -> tuple[float, float] | None:
        ci = fl.per_sample_ci95() if fl else None
        return (ci[0] * samples * passes_n, ci[1] * samples * passes_n) if ci else None

    if not histogram:
        if config.symmetric:  # as ORT's MinMaxCalibrater
            pairs = {t: (-m, m) for t in tensors for m in [np.float32(max(abs(lows[t]), abs(highs[t])))]}
        else:
            pairs = {t: (lows[t], highs[t]) for t in tensors}
        return CalibrationResult(TensorsData(CalibrationMethod.MinMax, pairs), len(tensors), samples, per_sample,
                                 passes, floor_s(), len(fl.times) if fl else 0, floor_ci95=floor_ci95())

    # Pass 2: histograms over the ranges fixed by pass 1: the range ORT's collector bins (np.histogram of
    # all the data: |x| over [min|x|, max|x|], x over [-max|x|, max|x|]), or torch's [min, max] for "mse".
    t0 = time.perf_counter()

    def bin_ranges(names: list[str]) -> dict[str, tuple[np.float32, np.float32]]:
        tops = {t: np.float32(max(abs(lows[t]), abs(highs[t]))) for t in names}
        if absolute:
            return {t: (abs_lows[t], tops[t]) for t in names}
        if method == "mse":
            return {t: (lows[t], highs[t]) for t in names}
        return {t: (-tops[t], tops[t]) for t in names}

    if optimised:  # the tensors pass 1 probed; the adopted ones take their Relu/Clip's thresholds below
        derived: dict[str, str] = {}
        binned = [t for t in tensors if t not in adopted]
    else:
        derived = {} if absolute else relu_outputs_from_inputs(relus, bin_ranges(tensors))
        binned = [t for t in tensors if t not in derived]
    # numba's kernel where the values to count repay importing (and maybe compiling) it: ResNet-50 at 1,000 images
    # counts 16.8 G values, the shipped CNN at 256 images 8 M (numpy's 20 ms against numba's 0.3-1.5 s start)
    compiled = samples * sum(elements.get(t, 1) for t in binned) >= COMPILED_MIN_VALUES
    wanted, narrow = _split_narrow(bin_ranges(binned + list(derived)), int(config.num_bins))
    binned = [t for t in binned if t not in narrow]
    derived = {out: x for out, x in derived.items() if out not in narrow and x not in narrow}
    hists = _Histograms(wanted, int(config.num_bins), absolute, compiled, nonnegative=assumed_zero)
    setup_s = time.perf_counter() - t0
    source = spool if spool.complete else None
    try:
        elapsed, count_s = _bin_pass(model_path, binned, hists, graph_inputs, tmp, value_types, config, optimised,
                                     source or _Prefetched(reader), fl, report, (2, passes_n, total),
                                     (runs, probed) if runs is not None else None)
        runs = None  # its buffers and session, before the thresholds are searched
        # Where the range starts at the minimum, a tensor pass 1 took as starting at 0 must hold a 0: else (never on
        # ResNet-50's Relus) its true minimum is known now and it is binned again over its true range.
        moved = sorted(t for t in assumed_zero & set(binned) if (absolute or method == "mse")
                       and hists.minimum[t] > 0 and np.isfinite(hists.minimum[t]))
        if moved:
            for t in moved:
                lows[t] = abs_lows[t] = hists.minimum[t]
            again_ranges, more_narrow = _split_narrow(bin_ranges(moved), int(config.num_bins))
            hists.drop(list(more_narrow))
            narrow.update(more_narrow)
            moved = [t for t in moved if t not in more_narrow]
            again = _Histograms(again_ranges, int(config.num_bins), absolute, compiled, nonnegative=assumed_zero)
            if moved:
                more_s, more_count = _bin_pass(model_path, moved, again, graph_inputs, tmp, value_types, config,
                                               optimised, source or _Prefetched(reader), None, report,
                                               (2, passes_n, total))
                hists.replace(again)
                elapsed, count_s = elapsed + more_s, count_s + more_count
    finally:
        spool.close(drop=True)
    for out, x in derived.items():
        hists.counts[out] = relu_counts(hists.counts[x], hists.edges[x])
    passes.append(setup_s + elapsed)

    t0 = time.perf_counter()
    ranges = _thresholds(method, hists, lows, highs, config, adopted, list(narrow))
    passes.append(time.perf_counter() - t0)
    return CalibrationResult(ranges, len(tensors), samples, per_sample, passes, floor_s(), len(fl.times) if fl else 0,
                             count_s, floor_ci95(), _narrow_note(narrow, int(config.num_bins)))


def _split_narrow(ranges: dict[str, tuple], num_bins: int) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """(the ranges numpy.histogram can cut into ``num_bins`` bins, the others): a range holding fewer float32 values
    than bins (a saturated Sigmoid's [0.49999997, 0.5]) makes numpy, hence ORT's calibrators, refuse."""
    empty = np.zeros(0, np.float32)
    ok, narrow = {}, {}
    for t, (low, high) in ranges.items():
        try:
            np.histogram_bin_edges(empty, num_bins, range=(np.float32(low), np.float32(high)))
            ok[t] = (low, high)
        except ValueError:
            narrow[t] = (low, high)
    return ok, narrow


def _narrow_note(narrow: dict[str, tuple], num_bins: int) -> list[str]:
    if not narrow:
        return []
    t = sorted(narrow)[0]
    more = f" and {len(narrow) - 1} more" if len(narrow) > 1 else ""
    return [f"activation '{t}'{more} spans fewer float32 values than {num_bins} bins ([{narrow[t][0]}, "
            f"{narrow[t][1]}]): its range is its min and max, as MinMax's"]


def _thresholds(method: str, hists: _Histograms, lows: dict, highs: dict, config: CalibrationConfig,
                adopted: dict[str, str] | None = None, narrow: list[str] | None = None) -> Any:
    """Run ORT's HistogramCollector algorithms (or torch's L2 search for "mse") on the fixed-range histograms;
    each ``adopted`` input (see :func:`adopted_ranges`) takes its Relu/Clip output's result, as ORT's quantizer
    gives it. A ``narrow`` tensor (see :func:`_split_narrow`) is given its min and max, as MinMax would."""
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        HistogramCollector,
        TensorData,
        TensorsData,
    )

    adopted = adopted or {}
    narrow = narrow or []

    if method == "mse":
        from .histogram_mse import l2_range

        pairs = {}
        for t, counts in hists.counts.items():
            low, high = l2_range(counts, hists.edges[t][0], hists.edges[t][-1])
            if config.symmetric:  # as torch's per_tensor_symmetric qparams, and our MinMax
                top = np.float32(max(abs(low), abs(high)))
                low, high = -top, top
            pairs[t] = (low, high)
        for t in narrow:
            top = np.float32(max(abs(lows[t]), abs(highs[t])))
            pairs[t] = (-top, top) if config.symmetric else (np.float32(lows[t]), np.float32(highs[t]))
        pairs.update({x: pairs[y] for x, y in adopted.items()})
        # ORT takes these as plain ranges (as MinMax's); quantize.py passes the matching method
        return TensorsData(CalibrationMethod.MinMax, pairs)

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
    if method == "entropy":  # ORT's search, its bin merging in numpy (histogram_entropy.py): the same thresholds
        from .histogram_entropy import entropy_threshold

        result = {t: (*entropy_threshold(h, NUM_QUANTIZED_BINS), *h[:2]) for t, h in collector.histogram_dict.items()}
    else:
        with contextlib.redirect_stdout(sys.stderr):  # ORT prints progress; stdout belongs to our caller
            result = collector.compute_collection_result()
    for t in narrow:
        result[t] = TensorData(lowest=np.float32(lows[t]), highest=np.float32(highs[t]))
    result.update({x: result[y] for x, y in adopted.items()})
    kind = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
            "distribution": CalibrationMethod.Distribution}[method]
    return TensorsData(kind, result)
