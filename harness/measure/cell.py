"""Measurement of one cell: load, first inference, warm-up, timed loop, I/O, accuracy.

Runs inside the cell's own subprocess (:mod:`harness.worker`). The harness times; the runtime
only does work, through the clock it hands out (host ``perf_counter_ns`` or CUDA events). The
timed loop is identical for every runtime: no runtime-specific branches here. The timed loop and
the interleave against FP32 run under an interference window (:mod:`harness.interference`): a cell
timed while other processes were busy says so (``timing_noisy``) and is measured again once quiet.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quantbench.common.fields import setting
from quantbench.harness.measure.accuracy import evaluate_outputs
from quantbench.harness.measure.stats import CI_LEVEL, median_ci, p50_ci, summarize


@dataclass
class MeasureSettings:
    """How long and how often to measure (from ``[run]``)."""

    # Each field is a [run] key: its type, default, bound and help are declared here once.
    warmup_iters: int = setting(10, help="untimed iterations before timing")
    min_iters: int = setting(50, ge=1, help="timed iterations per cell, at least (and min_time_s)")
    min_time_s: float = setting(1.0, flag="--min-time", help="timed seconds per cell, at least (and min_iters)")
    max_iters: int = setting(20000, ge=1, help="timed iterations after which a cell stops (>= min_iters)")
    max_time_s: float = setting(20.0, gt=0, flag="--max-time",
                                help="timed seconds after which a cell stops even below min_iters (>= min_time_s)")
    io_batches: int = setting(20, ge=1, help="batches read, decoded and preprocessed to time I/O")
    eval_batch: int = setting(0, help="batch size of the accuracy pass", default_text="0: the cell's batch size")
    interleave_rounds: int = setting(6, help="rounds of blocks timed alternately with FP32 for the speed-up, at "
                                     "least (0: off)")
    interleave_max_rounds: int = setting(20, ge=1, help="speed-up rounds at most (more run until its interval is "
                                         "narrow enough)")
    interleave_max_s: float = setting(3.0, help="speed-up seconds at most (stops after the round that crosses it)")
    speedup_rel_ci: float = setting(0.03, help="target relative half-width of the speed-up's 95% interval "
                                    "(0: run to a cap)")
    interleave_iters: int = setting(20, ge=1, help="timed iterations per speed-up block, at least (and "
                                    "interleave_block_s)")
    interleave_block_s: float = setting(0.1, help="seconds per speed-up block, at least (tiny models need many "
                                        "iterations)")
    noisy_cpu_frac: float = setting(0.10, help="timing is noisy when other processes (or steal) took more than this "
                                    "share of a core")
    quiet_wait_s: float = setting(0.0, help="before each timed phase, wait up to this long for a quiet machine")
    noisy_retries: int = setting(1, help="re-measure the timed phases of a noisy cell up to this many times, once "
                                 "quiet")

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
    row.update(p50_ci("compute", comp))
    row.update(p50_ci("e2e", e2e))
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
                        min_block_s: float = 0.1, max_rounds: int | None = None, max_s: float = math.inf,
                        rel_ci: float = 0.0) -> dict[str, Any]:
    """Time ``rt`` and an FP32 ``reference`` in alternating blocks; the FP32/variant compute ratio with its interval.

    Both models are loaded in one process and measured turn by turn, so load from other processes
    hits both alike: the ratio is steadier than one from two separately timed cells. Rounds go
    A-B-B-A (the variant first in odd rounds, FP32 first in even ones), so neither side always
    runs right after the other's caches and clocks settled. After ``rounds`` rounds, more are added
    until the 95% interval of the median ratio has a relative half-width <= ``rel_ci`` (checked
    after an even number of rounds, so both orders count alike), ``max_rounds`` rounds were run or
    the rounds took ``max_s`` seconds; ``speedup_stop_reason`` says which.
    """
    cap = max(rounds, max_rounds if max_rounds is not None else rounds)
    for _ in range(3):  # warm the reference too
        reference.fetch(reference.infer(reference.stage(x)))
    ratios: list[float] = []
    variant_blocks: list[float] = []
    reference_blocks: list[float] = []
    start = time.perf_counter()
    while True:
        if len(ratios) % 2 == 0:
            variant_ns = _block_median_ns(rt, x, iters, min_block_s)
            reference_ns = _block_median_ns(reference, x, iters, min_block_s)
        else:
            reference_ns = _block_median_ns(reference, x, iters, min_block_s)
            variant_ns = _block_median_ns(rt, x, iters, min_block_s)
        ratios.append(round(reference_ns / variant_ns, 4))
        variant_blocks.append(variant_ns)
        reference_blocks.append(reference_ns)
        ci = median_ci(ratios)
        assert ci is not None
        n = len(ratios)
        center = round(float(np.median(ratios)), 4)
        if n >= rounds and n % 2 == 0 and ci.confidence >= CI_LEVEL and ci.rel_half_width(center) <= rel_ci:
            stop = "ci_target"
        elif n >= cap:
            stop = "max_rounds"
        elif n >= rounds and time.perf_counter() - start >= max_s:
            stop = "max_time"
        else:
            continue
        return {"speedup_interleaved": center, "speedup_interleaved_rounds": ratios,
                "speedup_interleaved_ci95": [ci.lo, ci.hi], "speedup_ci_level": ci.confidence,
                "speedup_stop_reason": stop,
                "interleave_variant_ms": round(float(np.median(variant_blocks)) / 1e6, 6),
                "interleave_fp32_ms": round(float(np.median(reference_blocks)) / 1e6, 6),
                "interleave_fp32_ci95": _ms_ci(reference_blocks)}


def _ms_ci(samples_ns: list[float]) -> list[float]:
    ci = median_ci(np.asarray(samples_ns) / 1e6)
    assert ci is not None
    return [round(ci.lo, 6), round(ci.hi, 6)]


SPEEDUP_FIELDS = ("speedup_interleaved", "speedup_interleaved_rounds", "speedup_interleaved_ci95", "speedup_ci_level",
                  "speedup_stop_reason", "interleave_variant_ms", "interleave_fp32_ms", "interleave_fp32_ci95")


def _speedup(spec: CellSpec, rt: Any, x: np.ndarray, m: MeasureSettings) -> dict[str, Any]:
    """The interleaved speedup fields; a failure costs only these fields (``speedup_error`` says why)."""
    from quantbench.common.worker_protocol import one_line

    empty = dict.fromkeys(SPEEDUP_FIELDS)
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
                                      m.interleave_block_s, m.interleave_max_rounds, m.interleave_max_s,
                                      m.speedup_rel_ci), "speedup_error": ""}
    except Exception as exc:  # noqa: BLE001 - the main measurement stands without the speedup
        return {**empty, "speedup_error": f"interleaved FP32 timing failed: {one_line(exc)}"}
    finally:
        if reference is not None:
            try:
                reference.deactivate()
            except Exception:  # noqa: BLE001 - a failed clean-up must not cost the measurement
                pass


RETRY_WAIT_S = 1.0  # how long a noisy cell waits for a quiet machine before its retry


def _timed_phases(spec: CellSpec, rt: Any, x: np.ndarray, m: MeasureSettings) -> dict[str, Any]:
    """The timed loop and the interleave, with the interference they ran under and whether that makes them noisy.

    A noisy attempt is measured again, up to ``noisy_retries`` times, when the machine is quiet again within
    ``max(quiet_wait_s, RETRY_WAIT_S)`` (under lasting load a retry would be as noisy, so none is made);
    the least disturbed attempt is kept (``timing_attempts`` says how many were made).
    """
    from quantbench.harness.measure.interference import between, sample, timing_verdict, wait_for_quiet

    kept: dict[str, Any] | None = None
    attempts = 0
    for attempts in range(1, 2 + m.noisy_retries):
        wait = wait_for_quiet(m.quiet_wait_s if attempts == 1 else max(m.quiet_wait_s, RETRY_WAIT_S),
                              m.noisy_cpu_frac)
        if attempts > 1 and not wait["quiet"]:
            attempts -= 1
            break
        before = sample()
        part = _timed_loop(rt, x, m)
        part.update(_speedup(spec, rt, x, m))
        part["interference"] = {**between(before, sample()), **wait}
        part.update(timing_verdict(part, m.noisy_cpu_frac))
        if kept is None or _disturbance(part) < _disturbance(kept):
            kept = part
        if not part["timing_noisy"]:
            break
    assert kept is not None
    return {**kept, "timing_attempts": attempts}


def _disturbance(part: dict[str, Any]) -> tuple[bool, float]:
    other = (part.get("interference") or {}).get("other_cpu_frac")
    return bool(part.get("timing_noisy")), other if other is not None else math.inf


class _WallTimed:
    """Iterates a reader and records the wall time from the first batch read to the end of the last
    batch's use: reading, decoding, preprocessing and inference over every evaluated image."""

    def __init__(self, reader: Any) -> None:
        self.reader, self.wall_s = reader, None

    def __iter__(self):
        t0 = time.perf_counter()
        yield from self.reader
        self.wall_s = round(time.perf_counter() - t0, 4)


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
        row.update(_timed_phases(spec, rt, x, m))
        eval_reader = reader if not m.eval_batch or m.eval_batch == spec.batch else _rebatch(reader, m.eval_batch)
        reference = np.load(spec.reference_logits) if spec.reference_logits else None
        timed_eval = _WallTimed(eval_reader)
        row.update(evaluate_outputs(rt, timed_eval, reference, spec.accuracy))
        row["eval_wall_s"] = timed_eval.wall_s
        row["runtime_settings"] = rt.settings_used()
        audit = rt.execution_report()
        row.update({k: audit.get(k) for k in ("exec_precision", "int8_op_share", "op_precisions", "audit_note")})
        row["audit_warning"] = audit_warning(artifact.precision, audit)
    finally:
        rt.deactivate()
    return row
