"""Measurement of one cell: load, first inference, warm-up, timed loop, I/O, accuracy.

Runs inside the cell's own subprocess (:mod:`harness.worker`). The harness times; the runtime
only does work, through the clock it hands out (host ``perf_counter_ns`` or CUDA events). The
timed loop is identical for every runtime: no runtime-specific branches here.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .accuracy import evaluate_outputs
from .stats import summarize


@dataclass
class MeasureSettings:
    """How long and how often to measure (from ``[run]``)."""

    warmup_iters: int = 10
    min_iters: int = 50
    min_time_s: float = 1.0
    max_iters: int = 20000
    max_time_s: float = 20.0
    io_batches: int = 20
    eval_batch: int = 0  # 0 -> evaluate with the cell's own batch size
    interleave_rounds: int = 5  # rounds of alternating blocks against FP32 on the same runtime (0: off)
    interleave_iters: int = 20  # timed iterations per block, at least ...
    interleave_block_s: float = 0.1  # ... and at least this long (tiny models need many iterations)


@dataclass
class CellSpec:
    """Everything the worker needs, JSON-serialisable (it crosses a process boundary)."""

    cell_id: str
    runtime: str
    device: str
    batch: int
    runtime_options: dict[str, Any]
    artifact: dict[str, Any]
    data: dict[str, Any]
    measure: dict[str, Any]
    reference_logits: str | None = None
    accuracy: dict[str, Any] | None = None  # the model's accuracy plan: num_classes, top_k, note
    calibration: dict[str, Any] | None = None  # for runtime-side calibration (TensorRT 10)
    interleave_with: dict[str, Any] | None = None  # FP32 artifact timed alternately with this one


def build_artifact(spec: CellSpec, payload: dict[str, Any] | None = None) -> Any:
    """Rebuild the :class:`runtimes.Artifact` (and its calibration reader factory) in the worker."""
    from quantbench.runtimes import Artifact

    a = dict(payload or spec.artifact)
    calibration = None
    if spec.calibration and payload is None:
        calibration = _calibration_factory(spec.calibration, a.get("input_name", "input"))
    return Artifact(
        format=a["format"], precision=a["precision"], path=Path(a["path"]) if a.get("path") else None,
        source=a.get("source") or {}, input_name=a.get("input_name", "input"),
        input_shape=tuple(a.get("input_shape") or ()), settings=a.get("settings") or {},
        reference_path=Path(a["reference_path"]) if a.get("reference_path") else None,
        calibration=calibration)


def _calibration_factory(cal: dict[str, Any], input_name: str):
    from quantbench.calibration_data import BatchReader, Preprocess, open_source

    def factory():
        source = open_source(cal["dataset"])
        split = source.calibration
        idx = split.select(cal["samples"], seed=cal.get("seed", 0), classes=cal.get("classes"))
        return BatchReader(split, Preprocess.from_dict(cal["preprocess"]), idx, cal["batch"], input_name)

    return factory


def _eval_reader(spec: CellSpec, batch: int):
    from quantbench.calibration_data import BatchReader, Preprocess, open_source

    d = spec.data
    source = open_source(d["dataset"])
    split = source.evaluation
    n = min(int(d["eval_samples"]), len(split)) if d.get("eval_samples") else len(split)
    idx = split.select(n, seed=int(d.get("seed", 0)))
    return BatchReader(split, Preprocess.from_dict(d["preprocess"]), idx, batch,
                       spec.artifact.get("input_name", "input"), pad_last=True)


def _rebatch(reader: Any, batch: int):
    """The same images as ``reader`` in batches of ``batch``, without opening the data source again."""
    from quantbench.calibration_data import BatchReader

    return BatchReader(reader.split, reader.preprocess, reader.indices, batch, reader.input_name, pad_last=True)


def io_scope(split: Any) -> str:
    """What timing ``load_batch`` covers for this split (stored as the row's ``io_scope``)."""
    if isinstance(getattr(split, "images", None), np.ndarray):
        return "index+preprocess"  # pixels were read into memory when the source was opened
    return "read+decode+preprocess"


def _time_io(reader: Any, n_batches: int) -> tuple[list[int], np.ndarray]:
    """Time reading (+ decoding, for file-backed data) + preprocessing of whole batches: the I/O phase.

    Each batch is read once, in this fresh process, so nothing is served from a cache of our own.
    """
    # One untimed image first: one-time costs (importing the decoder, opening the source) are not I/O.
    reader.preprocess.apply(reader.split.read(reader.indices[-1:]))
    samples, first = [], None
    for i in range(max(1, min(n_batches, len(reader)))):
        t0 = time.perf_counter_ns()
        x, _, _ = reader.load_batch(i)
        ns = time.perf_counter_ns() - t0
        if i < n_batches:
            samples.append(ns)
        if first is None:
            first = x
    return samples, first


def _stop_reason(n: int, elapsed: float, m: MeasureSettings) -> str | None:
    """Why the timed loop ends after ``n`` iterations and ``elapsed`` seconds (None: keep going)."""
    if n >= m.min_iters and elapsed >= m.min_time_s:
        return "min_iters_and_time"
    if n >= m.max_iters:
        return "max_iters"
    if elapsed >= m.max_time_s:
        return "max_time"
    return None


def _timed_loop(rt: Any, x: np.ndarray, m: MeasureSettings) -> dict[str, Any]:
    """Warm up, then time stage/infer/fetch until both minimums are met or a cap is hit.

    On a host-memory runtime stage and fetch are still called every iteration (they are in e2e)
    but not timed on their own: there is no device copy to report.
    """
    clock = rt.clock()
    separate = not rt.host_memory
    for _ in range(m.warmup_iters):
        rt.fetch(rt.infer(rt.stage(x)))
    h2d: list[int] = []
    comp: list[int] = []
    d2h: list[int] = []
    e2e: list[int] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter_ns()
        if separate:
            staged, t_h2d = clock.time(rt.stage, x)
            out, t_comp = clock.time(rt.infer, staged)
            _, t_d2h = clock.time(rt.fetch, out)
            h2d.append(t_h2d)
            d2h.append(t_d2h)
        else:
            staged = rt.stage(x)
            out, t_comp = clock.time(rt.infer, staged)
            rt.fetch(out)
        e2e.append(time.perf_counter_ns() - t0)
        comp.append(t_comp)
        stop = _stop_reason(len(comp), time.perf_counter() - start, m)
        if stop:
            break
    row: dict[str, Any] = {"iterations": len(comp), "clock": getattr(clock, "kind", "host"),
                           "stop_reason": stop, "timing_valid": len(comp) >= m.min_iters,
                           "host_memory": not separate}
    for name, vals in (("h2d", h2d if separate else None), ("compute", comp),
                       ("d2h", d2h if separate else None), ("e2e", e2e)):
        row.update(summarize(name, vals))
    if row["e2e_mean_ms"]:
        row["throughput_ips"] = round(x.shape[0] * 1000.0 / row["e2e_mean_ms"], 3)
    return row


def _block_median_ns(rt: Any, x: np.ndarray, iters: int, min_s: float) -> float:
    clock = rt.clock()
    samples: list[int] = []
    end = time.perf_counter() + min_s
    while len(samples) < iters or time.perf_counter() < end:
        staged = rt.stage(x)
        out, ns = clock.time(rt.infer, staged)
        rt.fetch(out)
        samples.append(ns)
    return float(np.median(samples))


def interleaved_speedup(rt: Any, reference: Any, x: np.ndarray, rounds: int, iters: int,
                        min_block_s: float = 0.1) -> dict[str, Any]:
    """Time ``rt`` and an FP32 ``reference`` in alternating blocks; the FP32/variant compute ratio.

    Both models are loaded in one process and measured turn by turn, so load from other processes
    hits both alike: the ratio is steadier than one from two separately timed cells. Rounds go
    A-B-B-A (the variant first in odd rounds, FP32 first in even ones), so neither side always
    runs right after the other's caches and clocks settled.
    """
    for _ in range(3):  # warm the reference too
        reference.fetch(reference.infer(reference.stage(x)))
    ratios = []
    for r in range(rounds):
        if r % 2 == 0:
            variant_ns = _block_median_ns(rt, x, iters, min_block_s)
            reference_ns = _block_median_ns(reference, x, iters, min_block_s)
        else:
            reference_ns = _block_median_ns(reference, x, iters, min_block_s)
            variant_ns = _block_median_ns(rt, x, iters, min_block_s)
        ratios.append(round(reference_ns / variant_ns, 4))
    return {"speedup_interleaved": float(np.median(ratios)), "speedup_interleaved_rounds": ratios}


def _speedup(spec: CellSpec, rt: Any, x: np.ndarray, m: MeasureSettings) -> dict[str, Any]:
    """The interleaved speedup fields; a failure costs only these fields (``speedup_error`` says why)."""
    from .worker import one_line

    empty = {"speedup_interleaved": None, "speedup_interleaved_rounds": None}
    if spec.artifact.get("precision") == "fp32":
        return {**empty, "speedup_error": ""}  # the reference itself
    if not m.interleave_rounds:
        return {**empty, "speedup_error": "interleave_rounds = 0: not measured"}
    if not spec.interleave_with:
        return {**empty, "speedup_error": f"no FP32 artifact that {spec.runtime} can run to compare with"}
    from quantbench.runtimes import create_runtime

    reference = None
    try:
        reference = create_runtime(spec.runtime, spec.device, spec.runtime_options)
        reference.activate(build_artifact(spec, spec.interleave_with), batch=spec.batch)
        return {**interleaved_speedup(rt, reference, x, m.interleave_rounds, m.interleave_iters,
                                      m.interleave_block_s), "speedup_error": ""}
    except Exception as exc:  # noqa: BLE001 - the main measurement stands without the speedup
        return {**empty, "speedup_error": f"interleaved FP32 timing failed: {one_line(exc)}"}
    finally:
        if reference is not None:
            try:
                reference.deactivate()
            except Exception:  # noqa: BLE001, S110 - a failed clean-up must not cost the measurement
                pass


def measure_cell(spec: CellSpec) -> dict[str, Any]:
    """Measure one cell; returns the measured part of its result row. Raises on failure."""
    from quantbench.runtimes import create_runtime, get_runtime_class
    from quantbench.runtimes.audit import audit_warning

    m = MeasureSettings(**spec.measure)
    row: dict[str, Any] = {"load_avg": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
    artifact = build_artifact(spec)
    rt = create_runtime(spec.runtime, spec.device, spec.runtime_options)
    row["runtime_versions"] = get_runtime_class(spec.runtime).versions()
    reason = rt.supports(artifact)
    if reason:
        from quantbench.runtimes import RuntimeFailure

        raise RuntimeFailure(reason)

    row["measure_settings"] = asdict(m)
    reader = _eval_reader(spec, spec.batch)
    io_ns, x = _time_io(reader, m.io_batches)
    row.update(summarize("io", io_ns))
    row["io_scope"] = io_scope(reader.split)

    t0 = time.perf_counter_ns()
    rt.activate(artifact, batch=spec.batch)
    row["load_ms"] = round((time.perf_counter_ns() - t0) / 1e6, 3)
    try:
        t0 = time.perf_counter_ns()
        rt.fetch(rt.infer(rt.stage(x)))
        row["first_infer_ms"] = round((time.perf_counter_ns() - t0) / 1e6, 3)
        row.update(_timed_loop(rt, x, m))
        row.update(_speedup(spec, rt, x, m))
        eval_reader = reader if not m.eval_batch or m.eval_batch == spec.batch else _rebatch(reader, m.eval_batch)
        reference = np.load(spec.reference_logits) if spec.reference_logits else None
        row.update(evaluate_outputs(rt, eval_reader, reference, spec.accuracy))
        row["runtime_settings"] = rt.settings_used()
        audit = rt.execution_report()
        row.update({k: audit.get(k) for k in ("exec_precision", "int8_op_share", "op_precisions", "audit_note")})
        row["audit_warning"] = audit_warning(artifact.precision, audit)
    finally:
        rt.deactivate()
    return row
