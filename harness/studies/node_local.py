"""Local per-node sensitivity: the error of each node's own output, from one FP32 pass.

For every candidate node of the whole-model QDQ model, a small model holds that node with the
Q/DQ pairs that feed it (weights and activations, exactly as the whole-model quantizer placed
them) and the pair on its output when there is one; it reads the node's FP32 input activations
and its output is compared with the node's FP32 output (SQNR over the images). One FP32 pass of
the model with those activations as extra outputs feeds every node's small model, batch by batch,
so the study costs about one forward pass plus each node's own work, instead of two whole-model
forward passes per node. It ranks nodes by how much quantization disturbs them where they sit,
not by what that does to the model's output (errors that later layers amplify or absorb are not
seen): a first look, marked ``scan_mode = "local"`` in the rows.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
MAX_BATCH_BYTES = 256 * 2**20  # FP32 activations held per batch of the pass


@dataclass
class LocalModel:
    """One node's small model: its FP32 inputs, the tensor to compare, and the FP32 tensor it matches."""

    node: str
    op_type: str
    path: Path
    inputs: dict[str, str]  # its inputs (FP32 activations) -> the same tensors' names in the FP32 graph
    output: str  # its output (the dequantized output when the quantizer put a Q/DQ pair there)
    reference: str  # the node's output in the FP32 graph


def _producers(graph: Any) -> dict[str, Any]:
    return {o: n for n in graph.node for o in n.output}


def build_local_models(full: Path, pre: Path, candidates: list[tuple[str, str]], workdir: Path) -> list[LocalModel]:
    """A small ONNX model per candidate node of the whole-model QDQ model ``full`` (written under ``workdir``),
    with the names its tensors have in ``pre``, the FP32 graph ``full`` was quantized from (the quantizer keeps
    tensor names but renames a graph output it quantizes: that one is found by its producer and position)."""
    import onnx
    from onnx.utils import Extractor

    from quantbench.common.onnx_save import save_model

    model = onnx.shape_inference.infer_shapes(onnx.load(str(full)))  # the extractor needs every tensor's type
    graph = model.graph
    producer = _producers(graph)
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    initializers = {i.name for i in graph.initializer}
    by_name = {n.name: n for n in graph.node}
    extractor = Extractor(model)
    pre_graph = onnx.load(str(pre), load_external_data=False).graph
    pre_nodes = {n.name: n for n in pre_graph.node}
    graph_inputs = {i.name for i in graph.input}

    pre_tensors = {o for n in pre_graph.node for o in n.output} | {i.name for i in pre_graph.input}

    def pre_name(t: str) -> str:
        if t in pre_tensors:  # the quantizer keeps names (a Conv whose Relu it dropped writes the Relu's output)
            return t
        src = producer.get(t)
        if src is None or src.name not in pre_nodes:
            return t
        return pre_nodes[src.name].output[list(src.output).index(t)]

    out_dir = workdir / "local"
    out_dir.mkdir(parents=True, exist_ok=True)
    models = []
    for k, (name, op) in enumerate(candidates):
        node = by_name[name]
        inputs: dict[str, str] = {}
        for t in node.input:
            if not t:
                continue
            src = producer.get(t)
            # walk back through DequantizeLinear <- QuantizeLinear to the FP32 tensor they quantize
            while src is not None and src.op_type in QDQ_OPS:
                t = src.input[0]
                src = producer.get(t)
            if t not in initializers and t not in inputs and (src is not None or t in graph_inputs):
                inputs[t] = pre_name(t)
        output = node.output[0]
        reference = pre_name(output)
        q = next((c for c in consumers.get(output, []) if c.op_type == "QuantizeLinear"), None)
        if q is not None:
            dq = next((c for c in consumers.get(q.output[0], []) if c.op_type == "DequantizeLinear"), None)
            if dq is not None:
                output = dq.output[0]
        small = extractor.extract_model(list(inputs), [output])
        path = out_dir / f"node{k}.onnx"
        save_model(small, path)
        models.append(LocalModel(name, op, path, inputs, output, reference))
    return models


def _fp32_with_outputs(fp32: Path, tensors: list[str], path: Path) -> None:
    import onnx

    from quantbench.common.onnx_save import save_model

    model = onnx.load(str(fp32))
    have = {o.name for o in model.graph.output}
    for t in tensors:
        if t not in have:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
            have.add(t)
    save_model(model, path)


def _session(path: Path, threads: int) -> Any:
    """A CPU session whose idle threads sleep: dozens of sessions run in turn here, and ORT's default spinning
    threads of the one that just ran took the cores from the next (the probe pass ran 8x slower)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads > 0:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def local_sqnr(pre: Path, fp32: Path, models: list[LocalModel], x: np.ndarray, batch: int, threads: int,
               workdir: Path, bytes_per_sample: int,
               report: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """SQNR (dB) of every node's own output on the images ``x``: ``{"nodes": {node: dB or None}, "fp32_pass_s": ..,
    "fp32_outputs": the FP32 model's outputs, "seconds": ..}``. Activations come from ``pre`` (the graph that was
    quantized, whose tensor names the small models use); ``fp32_pass_s`` times the FP32 model ``fp32`` on ``x``
    at ``batch`` (the study's floor)."""
    from quantbench.harness.studies.node_quant import run_outputs

    t_start = time.perf_counter()
    needed = sorted({t for m in models for t in [*m.inputs.values(), m.reference]})
    probe = workdir / "local" / "fp32_probe.onnx"
    _fp32_with_outputs(pre, needed, probe)
    # the pass holds every probed activation of a batch: keep a batch under MAX_BATCH_BYTES
    step = max(1, min(batch, MAX_BATCH_BYTES // max(bytes_per_sample, 1)))
    passes: list[float] = []
    fp32_out = run_outputs(fp32, x, batch, threads, times=passes)  # the floor: forward passes alone
    fp32_pass_s = passes[0]
    big = _session(probe, threads)
    in_name = big.get_inputs()[0].name
    small = [_session(m.path, threads) for m in models]
    noise = np.zeros(len(models))
    signal = np.zeros(len(models))
    for start in range(0, len(x), step):
        values = dict(zip(needed, big.run(needed, {in_name: x[start:start + step]}), strict=True))
        for k, (m, s) in enumerate(zip(models, small, strict=True)):
            out = s.run([m.output], {t: values[src] for t, src in m.inputs.items()})[0]
            ref = values[m.reference]
            diff = np.subtract(ref, out, dtype=np.float32).ravel()
            # BLAS dot products in float32: float64 copies of every activation cost more than the forward pass
            noise[k] += float(np.dot(diff, diff))
            flat = np.asarray(ref, np.float32).ravel()
            signal[k] += float(np.dot(flat, flat))
        del values
        if report:
            report(min(start + step, len(x)), len(x))
    result = {}
    for k, m in enumerate(models):
        if noise[k] == 0.0:
            result[m.node] = None  # identical: infinite SQNR
        elif signal[k] == 0.0:
            result[m.node] = -math.inf
        else:
            result[m.node] = round(10.0 * math.log10(signal[k] / noise[k]), 4)
    return {"nodes": result, "fp32_pass_s": float(f"{fp32_pass_s:.5g}"), "fp32_outputs": fp32_out,
            "seconds": round(time.perf_counter() - t_start, 3)}
