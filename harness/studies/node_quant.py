"""Per-node static quantization from ONE calibration: the building blocks of sensitivity and mixed precision.

The graph is pre-processed and calibrated once (:mod:`quantbench.exporters.calibrate`); every
per-node model is then ORT's ``quantize_static`` fed the saved ranges through its calibration cache,
with ``nodes_to_quantize`` (quantize only these) or ``nodes_to_exclude`` (keep these in float). So
a model with 54 quantizable nodes costs one calibration plus 108 cheap ``quantize_static`` calls,
and every per-node model uses exactly the ranges the whole-model variant uses.

Runs ONNX Runtime: call it from a contained subprocess (:mod:`.sensitivity_worker`).
"""
from __future__ import annotations

import math
import shutil
import time
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import numpy as np

PRE_FILE = "pre.onnx"
CACHE_FILE = "calibration.json"
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# QuantSettings fields this module reproduces; any other field set away from its default is refused
# (e.g. a lower weight bit width that quantize_qdq applies after quantize_static).
SUPPORTED_KEYS = {"calibration", "per_channel", "activation_type", "weight_type", "symmetric_activation",
                  "symmetric_weight", "reduce_range", "op_types", "exclude_nodes", "calib_samples", "calib_seed",
                  "calib_classes", "calib_batch", "num_bins", "percentile", "calib_memory_mb", "calib_graph",
                  "accuracy_budget"}


def unsupported_settings(settings: Any) -> list[str]:
    """Keys of ``settings`` (a QuantSettings) set away from their default that per-node models cannot reproduce."""
    out = []
    for f in fields(settings):
        if f.name in SUPPORTED_KEYS:
            continue
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else None)
        if getattr(settings, f.name) != default:
            out.append(f.name)
    return out


def prepare_graph(fp32: Path, settings: Any, reader: Any, workdir: Path, progress: Any = None) -> dict[str, Any]:
    """Pre-process ``fp32`` (as quantize_qdq does) and calibrate it once; writes ``pre.onnx`` and the
    calibration cache into ``workdir``. Returns what it cost (calibration time, floor and ratio too) and any
    notes. ``progress``: :data:`quantbench.exporters.calibrate.ProgressFn`."""
    from onnxruntime.quantization.calibrate import save_tensors_data

    from quantbench.exporters.calibrate import calibrate
    from quantbench.exporters.quantize import (
        calibration_config,
        calibration_cost,
        check_exclude_nodes,
        pre_processed,
    )

    workdir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    pre = workdir / PRE_FILE
    t0 = time.perf_counter()
    if pre_processed(Path(fp32), workdir, notes) != pre:  # pre-processing failed: quantize the original graph
        shutil.copyfile(fp32, pre)
    check_exclude_nodes(pre, settings.exclude_nodes)
    result = calibrate(pre, calibration_config(settings), reader, workdir, progress=progress)
    save_tensors_data(result.ranges, workdir / CACHE_FILE)
    for leftover in ("calib_range.onnx", "calib_bins.onnx"):
        (workdir / leftover).unlink(missing_ok=True)
    cost = calibration_cost(result)
    return {"calibration_s": round(time.perf_counter() - t0, 3), "calib_tensors": result.tensors,
            "calib_samples": result.samples, "calib_time_s": cost["time_s"], "calib_floor_s": cost["floor_s"],
            "calib_time_ratio": cost["time_ratio"], "calib_time_ratio_ci95": cost["time_ratio_ci95"], "notes": notes}


def quantize(workdir: Path, settings: Any, out: Path, only: list[str] | None = None,
             exclude: list[str] | tuple[str, ...] = ()) -> Path:
    """``quantize_static`` of ``workdir/pre.onnx`` with the saved ranges.

    ``only``: quantize just these nodes; ``exclude``: keep these in float (added to the variant's own
    ``exclude_nodes``). Everything else follows ``settings`` exactly as the whole-model variant does.
    """
    from onnxruntime.quantization import quantize_static

    from quantbench.common.onnx_save import lower_ir_version
    from quantbench.exporters.quantize import static_quant_kwargs

    quantize_static(str(workdir / PRE_FILE), str(out),
                    **static_quant_kwargs(settings, workdir / CACHE_FILE, only=only, exclude=exclude))
    lower_ir_version(out)  # ORT stamps onnx's newest IR, which older runtimes refuse
    return out


def quantized_nodes(path: Path) -> list[tuple[str, str]]:
    """(name, op_type) of the nodes of a QDQ model that compute on dequantized inputs, in graph order."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    return [(n.name, n.op_type) for n in graph.node
            if n.op_type not in QDQ_OPS and any(producer.get(i) == "DequantizeLinear" for i in n.input)]


def has_qdq(path: Path) -> bool:
    """Whether a model holds any QuantizeLinear node (i.e. something was quantized)."""
    import onnx

    return any(n.op_type == "QuantizeLinear" for n in onnx.load(str(path), load_external_data=False).graph.node)


def candidate_nodes(settings: Any, full_model: Path) -> list[tuple[str, str]]:
    """The nodes the whole-model QDQ quantizer quantized whose op type it was asked to quantize.

    Ops that ORT only wraps in Q/DQ because their neighbours are quantized (Add under the default op
    list, for one) are left out; the caller also drops those that quantize to nothing on their own
    (MaxPool, Flatten: 8-bit pass-through ops).
    """
    wanted = set(settings.op_types) if settings.op_types else set(_quantized_op_types())
    skip = set(settings.exclude_nodes)
    return [(name, op) for name, op in quantized_nodes(full_model) if op in wanted and name not in skip]


def _quantized_op_types() -> list[str]:
    """ORT's default op types for QDQ ``quantize_static`` (its QDQRegistry)."""
    from onnxruntime.quantization.registry import QDQRegistry

    return sorted(QDQRegistry)


def session(path: Path | bytes, threads: int = 0) -> Any:
    """An ONNX Runtime CPU session of a file or a serialized model (default graph optimisations, as the ort-cpu
    runtime)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads > 0:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(path if isinstance(path, bytes) else str(path), so, providers=["CPUExecutionProvider"])


def run_outputs(path: Path | bytes, x: np.ndarray, batch: int, threads: int = 0,
                times: list[float] | None = None, batch_times: list[list[float]] | None = None) -> np.ndarray:
    """The first output of ``path`` (a file or a serialized model) on every sample of ``x`` (float64, one row per
    sample), in batches of ``batch``.

    ``times`` gets the seconds of the forward passes alone (after one untimed warm-up run of the first batch;
    no session creation): a scan's floor. ``batch_times`` gets ``[images, seconds]`` of each batch's run (the
    spread of the floor)."""
    sess = session(path, threads)
    name = sess.get_inputs()[0].name
    outs = []
    timed = times is not None or batch_times is not None
    if timed:
        sess.run(None, {name: x[:batch]})
    t0 = time.perf_counter()
    for start in range(0, len(x), batch):
        tb = time.perf_counter()
        out = np.asarray(sess.run(None, {name: x[start:start + batch]})[0])
        if batch_times is not None:
            batch_times.append([int(out.shape[0]), time.perf_counter() - tb])
        outs.append(out.reshape(out.shape[0], -1).astype(np.float64))
    if times is not None:
        times.append(time.perf_counter() - t0)
    del sess
    return np.concatenate(outs)


def sqnr_db(reference: np.ndarray, output: np.ndarray) -> float | None:
    """Signal-to-quantization-noise ratio of ``output`` against ``reference`` in dB over all values.

    None when the two are identical (no noise: the ratio is infinite).
    """
    ref = np.asarray(reference, np.float64)
    noise = float(np.sum((ref - np.asarray(output, np.float64)) ** 2))
    if noise == 0.0:
        return None
    signal = float(np.sum(ref ** 2))
    if signal == 0.0:
        return -math.inf
    return round(10.0 * math.log10(signal / noise), 4)


def top1(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Share of samples whose arg-max is the label."""
    return round(float((np.asarray(outputs).argmax(axis=1) == np.asarray(labels)).mean()), 6)
