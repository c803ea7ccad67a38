"""Reading activations in ONNX Runtime's blocked (NCHWc) layout, where only the values count, not their order.

ORT's optimiser runs convolutions on the CPU in a blocked channel layout (NCHWc: channels in blocks of 8 with AVX2,
16 with AVX-512) and, wherever a tensor leaves the blocked kernels (a graph output, an op without a blocked kernel
such as a Reshape), inserts a ``ReorderOutput`` node that copies it back to NCHW. Calibration reads a tensor's
minimum, maximum and histogram, which do not depend on the order of its values, yet those copies made the forward
that hands ResNet-50's 74 calibrated activations out 1.14 x the plain model's (1.01 x without them).

:func:`without_reorders` saves ORT's optimised graph of a model (ORT's offline optimisation: the saved graph is
valid for this machine and this ORT only, which is all a calibration in this process needs) and removes each
``ReorderOutput`` whose output only graph outputs and the given readers read, where the blocked tensor holds
exactly the tensor's values: its channels a multiple of the block (:func:`nchwc_block`), else the block's padding
would be read too. The tensor keeps its name, so the model's outputs are the same values in another order.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

REORDER = ("com.microsoft.nchwc", "ReorderOutput")
_DATA_SUFFIX = ".data"


def _optimise(path: Path, out: Path) -> None:
    """Save ORT's optimised graph of ``path`` (CPU, default optimisations) at ``out``, weights beside it."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3  # ORT warns that a graph with blocked-layout nodes is for this machine only
    so.intra_op_num_threads = 1
    so.enable_cpu_mem_arena = False
    so.optimized_model_filepath = str(out)
    # weights in a file of their own: a model over 2 GB cannot be saved inline, and editing the graph then loads
    # no weight
    so.add_session_config_entry("session.optimized_model_external_initializers_file_name", out.name + _DATA_SUFFIX)
    so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@lru_cache(maxsize=1)
def nchwc_block() -> int:
    """Channels per block of ORT's blocked layout on this machine (0 where ORT does not use it): the padded
    channel count of a one-channel convolution's blocked output."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((1, 16, 1, 1), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "block",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 2])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    with tempfile.TemporaryDirectory(prefix="qb-nchwc-") as d:
        src, opt, edited = Path(d) / "conv.onnx", Path(d) / "opt.onnx", Path(d) / "blocked.onnx"
        onnx.save(model, str(src))
        _optimise(src, opt)
        saved = onnx.load(str(opt))
        if _bypass(saved, lambda _: False, channels_multiple=None) == 0:
            return 0
        onnx.save(saved, str(edited))
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(str(edited), so, providers=["CPUExecutionProvider"])
        return int(session.run(None, {"x": np.ones((1, 16, 2, 2), np.float32)})[0].shape[1])


def _bypass(model: Any, reader: Callable[[Any], bool], channels_multiple: int | None) -> int:
    """Remove from ``model`` (ORT's saved optimised graph) the reorders whose output only graph outputs and
    ``reader`` nodes read and whose channels are a multiple of ``channels_multiple`` (None: any); returns how many."""
    graph = model.graph
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producers = {name: node for node in graph.node for name in node.output}
    reorders_of: dict[str, int] = {}
    for node in graph.node:
        if (node.domain, node.op_type) == REORDER:
            reorders_of[node.input[0]] = reorders_of.get(node.input[0], 0) + 1
    inputs = {i.name for i in graph.input}
    removed = []
    for node in graph.node:
        if (node.domain, node.op_type) != REORDER:
            continue
        blocked, tensor = node.input[0], node.output[0]
        channels = next((a.i for a in node.attribute if a.name == "channels"), 0)
        if (blocked in inputs or blocked not in producers or reorders_of[blocked] != 1
                or (channels_multiple is not None and (channels <= 0 or channels % channels_multiple))
                or not all(reader(n) for n in consumers.get(tensor, []))):
            continue
        # the blocked tensor takes the tensor's name: its producer writes it, its readers read it under that name
        producer = producers[blocked]
        producer.output[list(producer.output).index(blocked)] = tensor
        for reader_node in consumers.get(blocked, []):
            if reader_node is not node:
                reader_node.input[:] = [tensor if x == blocked else x for x in reader_node.input]
        removed.append(node)
    for node in removed:
        graph.node.remove(node)
    if removed:
        names = {node.output[0] for node in removed}
        for out in graph.output:  # the blocked tensor's shape is not the NCHW one the graph declared
            if out.name in names:
                out.ClearField("type")
        kept = [vi for vi in graph.value_info if vi.name not in names]
        del graph.value_info[:]
        graph.value_info.extend(kept)
    return len(removed)


def without_reorders(path: Path, out: Path, reader: Callable[[Any], bool]) -> int:
    """Save at ``out`` ORT's optimised graph of ``path`` without the reorders to NCHW that only graph outputs and
    ``reader`` nodes (order-insensitive: reductions, histograms) read; returns how many were removed (0: nothing
    written, run ``path`` with ORT's own optimisation). Load ``out`` unoptimised: it is the optimised graph."""
    import onnx

    block = nchwc_block()
    if block == 0:
        return 0
    saved = out.with_name(out.stem + "_ort.onnx")
    _optimise(path, saved)
    model = onnx.load(str(saved), load_external_data=False)
    removed = _bypass(model, reader, block)
    if removed:
        onnx.save(model, str(out))  # the weights stay in the file ORT wrote beside it
    saved.unlink(missing_ok=True)
    if not removed:
        Path(str(saved) + _DATA_SUFFIX).unlink(missing_ok=True)
    return removed
