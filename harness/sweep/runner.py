"""Run a sweep: build artifacts, measure each cell in its own subprocess, append rows as they end.

Nothing measured is lost: each row is appended and fsynced as its cell ends, a crashing or hanging
runtime fails only its own cell (the worker is contained: killed on timeout, with the sweep, or on
SIGTERM/SIGINT), and a rerun skips cells whose stored row was measured under the same inputs
(:mod:`harness.resume`). One run at a time per output directory (a lock file).
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from quantbench.harness.config.schema import SweepConfig, VariantConfig
from quantbench.harness.sweep.environment import fingerprint
from quantbench.harness.measure.cell import CellSpec, MeasureSettings
from quantbench.harness.sweep.prepare import (
    PreparedModel,
    cache_dir,
    model_key,
    prepare_artifacts,
    resolve_models,
    fit_calibration,
    variant_spec,
)
from quantbench.harness.results.store import SCHEMA_VERSION, append_row, reaffirm_rows, stored_rows
from quantbench.harness.sweep.resume import combine, fingerprint_parts, model_content, reuse_decision
from quantbench.common.subproc import signal_guard
from quantbench.harness.sweep.plan import Cell, expand, resolve_runtimes

RESULTS_FILE = "results.jsonl"
LOCK_FILE = ".quantbench.lock"
MAX_REASON_LINES = 10  # per-cell "re-measured" warnings before they are summarised
logger = logging.getLogger("quantbench")


class RunError(RuntimeError):
    """A problem that stops the whole sweep before any cell runs (one line)."""


@dataclass
class SweepSummary:
    """What happened, for the CLI's closing lines."""

    results_path: Path
    ran: int = 0
    failed: int = 0
    skipped: int = 0
    already: int = 0
    remeasured: int = 0
    notes: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    run_id: str = ""


def check_output_dir(out: Path) -> None:
    """Fail early, in one line, when results cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise RunError(f"output directory {out} is not writable: {exc.strerror or exc}") from None


FP32_REFERENCE = VariantConfig(name="fp32", precision="fp32")


def _artifact_payload(pm: PreparedModel, v: VariantConfig, formats: tuple[str, ...]) -> dict[str, Any] | str:
    """The artifact a runtime with ``formats`` should load for variant ``v``, or why there is none."""
    built = pm.fp32 if v is FP32_REFERENCE else pm.artifacts[v.name]
    base = {"precision": v.precision, "input_name": "input",
            "reference_path": str(pm.fp32.path), "settings": {}}
    if v.builder == "trt-calibrate":
        return {**base, "format": "trt-calibrate", "path": str(pm.fp32.path),
                "settings": {"calibrator": v.calibrator}}
    if "onnx" in formats:
        name, shape = _onnx_input(str(built.path), built.sha256)
        return {**base, "format": "onnx", "path": str(built.path), "input_name": name,
                "input_shape": [d if isinstance(d, int) else -1 for d in shape]}
    if "torch" in formats:
        if v.builder == "prebuilt":
            return "a prebuilt onnx variant runs on ONNX runtimes only"
        if pm.source.kind == "onnx":
            return "the model is a user ONNX file: no PyTorch source to run"
        return {**base, "format": "torch", "source": pm.source.to_dict(), "input_shape": list(pm.source.input_shape)}
    return f"runtime takes {'/'.join(formats)} artifacts"


@functools.lru_cache(maxsize=None)
def _onnx_input(path: str, sha256: str) -> tuple[str, tuple[int | str, ...]]:
    """Input name and per-sample shape of an ONNX artifact, parsed once per content (``sha256``), not per cell."""
    from quantbench.exporters.artifacts import onnx_input_info

    name, shape, _ = onnx_input_info(Path(path))
    return name, tuple(shape)


def _interleave_payload(pm: PreparedModel, cell: Cell, cfg: SweepConfig) -> dict[str, Any] | None:
    """The same runtime's FP32 artifact, to time alternately with a non-FP32 cell (or None)."""
    from quantbench.runtimes import get_runtime_class

    if cell.variant.precision == "fp32" or not cfg.run.interleave_rounds:
        return None
    payload = _artifact_payload(pm, FP32_REFERENCE, get_runtime_class(cell.runtime.name).formats)
    return payload if isinstance(payload, dict) else None


def _base_row(run_id: str, cell: Cell, pm: PreparedModel, env: dict[str, Any]) -> dict[str, Any]:
    built = pm.artifacts.get(cell.variant.name)
    settings = dict(cell.variant.quant)
    if cell.variant.precision == "int8" and cell.variant.builder == "onnx":
        try:
            settings = variant_spec(cell.variant, pm).quant.to_dict()  # as built: a default calib_samples fits the data
        except Exception:  # noqa: BLE001, S110 - keep the raw settings if they don't parse
            pass
    if cell.variant.builder == "prebuilt":  # the user's file: its path here, its sha256 in artifact_sha256
        settings = {"builder": "prebuilt", "onnx": cell.variant.onnx}
    elif cell.variant.builder != "onnx":
        settings.update({"builder": cell.variant.builder, "calibrator": cell.variant.calibrator})
    return {
        "schema_version": SCHEMA_VERSION, "run_id": run_id, "cell_id": cell.cell_id,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": pm.label, "variant": cell.variant.name, "precision": cell.variant.precision,
        "runtime": cell.runtime.name, "runtime_label": cell.runtime.label, "device": cell.device,
        "batch": cell.batch, "variant_settings": settings, "runtime_settings": dict(cell.runtime.options),
        "weights": getattr(pm.fp32, "weights", None) if pm.fp32 else None,
        "size_bytes": getattr(built, "size_bytes", None), "param_count": getattr(built, "param_count", None),
        "trainable_params": getattr(pm.fp32, "trainable_params", None),
        "non_trainable_params": getattr(pm.fp32, "non_trainable_params", None),
        "params_from": getattr(pm.fp32, "params_from", None),
        "packed_size_bytes": getattr(built, "packed_size_bytes", None) if cell.variant.precision == "int8" else None,
        "sweep": dict(cell.variant.sweep), "sweep_base": cell.variant.base_name,
        "artifact_sha256": getattr(built, "sha256", None), "artifact_path": str(built.path) if built else None,
        "dataset": {**pm.dataset_info, "eval_samples": pm.eval_samples},
        "quant_time_s": getattr(built, "quant_time_s", None),
        "quant_peak_mem_mb": getattr(built, "quant_peak_mem_mb", None),
        **calibration_cost(getattr(built, "calibration", None)),
        "artifact_notes": list(getattr(built, "notes", []) or []),
        "identical_to": pm.identical.get(cell.variant.name, ""),
        "env": env,
        # Filled by the measurement; null on a failed or skipped cell (nothing was timed).
        "stop_reason": None, "timing_valid": None, "host_memory": None, "io_scope": None,
        "speedup_interleaved": None, "speedup_error": None,
    }


def calibration_cost(stats: dict[str, Any] | None) -> dict[str, Any]:
    """Row fields of what calibration cost (``calib_time_s``, ``calib_floor_s``, ``calib_time_ratio``), null
    when nothing was calibrated or the artifact was built before floors were measured."""
    stats = stats or {}
    return {"calib_time_s": stats.get("time_s"), "calib_floor_s": stats.get("floor_s"),
            "calib_time_ratio": stats.get("time_ratio")}


def _run_worker(spec: CellSpec, workdir: Path, timeout_s: float) -> dict[str, Any]:
    """Measure one cell in a fresh, contained Python process; turn crashes and timeouts into a failed result."""
    from quantbench.harness.measure.worker import run_cell_worker

    return run_cell_worker(spec, workdir, timeout_s)


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` for one run; a second run on it fails at once, in one line."""
    import fcntl

    path = out / LOCK_FILE
    fh = open(path, "a+")  # noqa: SIM115 - held open for the whole run: the lock lives as long as the file handle
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip()
            raise RunError(f"output directory {out} is in use by another quantbench run"
                           + (f" (pid {holder})" if holder.isdigit() else "")
                           + ": wait for it to finish or choose another --output") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fh.close()  # closing releases the lock; the file stays (removing it would race a waiting run)


def _calibration(cell: Cell, pm: PreparedModel) -> dict[str, Any] | None:
    """Runtime-side calibration settings (TensorRT 10 ``trt-calibrate`` variants), else None."""
    if cell.variant.builder != "trt-calibrate":
        return None
    from quantbench.exporters.quantize import QuantSettings

    qs = fit_calibration(QuantSettings.from_dict(cell.variant.quant), cell.variant, pm)[0]
    return {"dataset": pm.calib_data, "preprocess": pm.preprocess, "samples": qs.calib_samples,
            "seed": qs.calib_seed, "batch": qs.calib_batch,
            "classes": list(qs.calib_classes) if qs.calib_classes else None}


def _what(cell: Cell, pm: PreparedModel) -> str:
    return f"{pm.label}/{cell.variant.name} on {cell.runtime.label} ({cell.device}) batch {cell.batch}"


def _default_log(msg: str) -> None:
    level = logging.ERROR if msg.startswith("error: ") else logging.WARNING if msg.startswith("warning: ") else logging.INFO
    logger.log(level, msg)


def run_sweep(cfg: SweepConfig, output: Path, retry_failed: bool = False,
              log: Callable[[str], None] = _default_log, progress: Callable[[int], Any] | None = None,
              on_row: Callable[[dict[str, Any]], None] | None = None,
              on_plan: Callable[[int], None] | None = None) -> SweepSummary:
    """Run every cell of ``cfg`` whose stored row in ``output/results.jsonl`` is missing or out of date.

    One run at a time per output directory (a lock file); SIGTERM/SIGINT kill the running worker
    and raise (``KeyboardInterrupt``); rows already written stay. With ``run.ray`` set the cells run
    on a Ray cluster (:func:`harness.fleet.run_fleet`).
    """
    if cfg.run.ray:  # cells run as Ray tasks across a cluster (harness.fleet)
        from quantbench.harness.sweep.launch.ray import run_fleet

        return run_fleet(cfg, output, retry_failed, log, progress, on_row, on_plan)
    from quantbench.common.progress import watch

    check_output_dir(output)
    # export, reference, calibration progress from the workers: logging records, or the CLI's own display
    with output_lock(output), signal_guard(), watch():
        return _run_locked(cfg, output, retry_failed, log, progress, on_row, on_plan)


def _run_locked(cfg: SweepConfig, output: Path, retry_failed: bool, log: Callable[[str], None],
                progress: Callable[[int], Any] | None, on_row: Callable[[dict[str, Any]], None] | None,
                on_plan: Callable[[int], None] | None) -> SweepSummary:
    results = output / RESULTS_FILE
    summary = SweepSummary(results_path=results)
    resolution = resolve_runtimes(cfg.run.runtimes)
    summary.unavailable = resolution.unavailable
    for name, reason in resolution.unavailable.items():
        log(f"runtime {name} unavailable: {reason}" if not resolution.explicit
            else f"warning: runtime {name} unavailable: {reason}")
    models = resolve_models(cfg)
    cells, notes = expand(cfg, resolution.usable, [model_key(pm) for pm in models])
    summary.notes.extend(notes)
    for note in notes:
        log(f"warning: {note}")
    if not cells and not (resolution.explicit and resolution.unavailable):
        why = "; ".join(notes) or "no runtime is available"
        raise RunError(f"nothing to run: {why} (see `quantbench devices`)")
    stored = stored_rows(results, log)  # stops, in one line, on a file that is not only results
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + os.urandom(3).hex()
    summary.run_id = run_id
    env = fingerprint()

    # Explicitly requested but unavailable runtimes get rows, so reports show why they are missing.
    if resolution.explicit:
        for name, reason in resolution.unavailable.items():
            row = {"schema_version": SCHEMA_VERSION, "run_id": run_id,
                   # one id per runtime: a rerun's row replaces the previous one instead of adding to it
                   "cell_id": hashlib.sha256(f"unavailable:{name}".encode()).hexdigest()[:16],
                   "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "status": "skipped", "error": f"runtime unavailable: {reason}", "runtime": name,
                   "runtime_label": name, "model": "*", "variant": "*", "precision": None,
                   "device": "*", "batch": None, "env": env}
            append_row(results, row)
            summary.skipped += 1

    # Artifacts are built (or found in the cache) for every cell, stored or not: their content is
    # part of the fingerprint that decides whether a stored row still holds.
    cache = cache_dir(cfg)
    for mi in sorted({c.model_index for c in cells}):
        variants = {c.variant.name for c in cells if c.model_index == mi}
        prepare_artifacts(models[mi], [v for v in cfg.variants if v.name in variants], cache, log)

    measure = {f.name: getattr(cfg.run, f.name) for f in fields(MeasureSettings)}
    contents = {mi: model_content(models[mi]) for mi in {c.model_index for c in cells}}
    todo: list[tuple[Cell, dict[str, Any]]] = []
    reasons: list[tuple[str, str]] = []
    unchecked: dict[str, str] = {}
    reused: list[dict[str, Any]] = []
    for cell in cells:
        pm = models[cell.model_index]
        previous = stored.get(cell.cell_id)
        prep_error = pm.error or pm.artifact_errors.get(cell.variant.name, "")
        if prep_error and previous is not None and previous.get("status") == "ok":
            # Nothing to compare with and nothing better to offer: a good row is not replaced by a failure.
            unchecked.setdefault(f"{pm.label}/{cell.variant.name}", prep_error)
            summary.already += 1
            continue
        row = _base_row(run_id, cell, pm, env)
        parts = fingerprint_parts(
            measure=measure, pm=pm, artifact_sha256=row["artifact_sha256"], variant_settings=row["variant_settings"],
            runtime=cell.runtime.name, runtime_options=dict(cell.runtime.options), device=cell.device, env=env,
            model=contents[cell.model_index], calibration=_calibration(cell, pm))
        row.update({"fingerprint": combine(parts), "fingerprint_parts": parts, "measure_settings": measure})
        reuse, why = reuse_decision(previous, parts, env, retry_failed)
        if reuse:
            summary.already += 1
            reused.append(previous)
            continue
        if why:
            summary.remeasured += 1
            reasons.append((_what(cell, pm), why))
        todo.append((cell, row))
    reaffirm_rows(results, reused, run_id)  # reused rows of an older generation become the latest again
    for what, error in unchecked.items():
        log(f"warning: {what}: stored rows kept without checking them: {error}")
    if summary.already:
        log(f"{summary.already} cell(s) already in {results} with unchanged inputs: skipped "
            f"(delete the file to measure again)")
    for what, why in reasons[:MAX_REASON_LINES]:
        log(f"warning: {what}: re-measured, {why}")
    if len(reasons) > MAX_REASON_LINES:
        rest: dict[str, int] = {}
        for _, why in reasons[MAX_REASON_LINES:]:
            rest[why] = rest.get(why, 0) + 1
        for why, n in rest.items():
            log(f"warning: {n} more cell(s) re-measured, {why}")
    if on_plan:
        on_plan(len(todo))

    workdir = output / "cells" / run_id  # private to this run
    for cell, row in todo:
        pm = models[cell.model_index]
        t0 = time.perf_counter()
        spec, error, skipped = cell_job(cfg, cell, pm, measure)
        if error:
            row.update({"status": "failed", "error": error})
        elif skipped:
            row.update({"status": "skipped", "error": skipped})
        else:
            row.update(_run_worker(spec, workdir, cfg.run.timeout_s))
        row["duration_s"] = round(time.perf_counter() - t0, 3)
        append_row(results, row)
        count_row(summary, row)
        if on_row:
            on_row(row)
        if progress:
            progress(1)
    return summary


def count_row(summary: SweepSummary, row: dict[str, Any]) -> None:
    """Add a written row to the summary's counts."""
    if row["status"] == "ok":
        summary.ran += 1
    elif row["status"] == "failed":
        summary.failed += 1
    else:
        summary.skipped += 1


def cell_job(cfg: SweepConfig, cell: Cell, pm: PreparedModel,
             measure: dict[str, Any]) -> tuple[CellSpec | None, str, str]:
    """(what the cell worker measures, why the cell fails, why it is skipped): one of the three is set."""
    from quantbench.runtimes import Artifact, get_runtime_class

    error = pm.error or pm.artifact_errors.get(cell.variant.name, "")
    if error:
        return None, error, ""
    payload = _artifact_payload(pm, cell.variant, get_runtime_class(cell.runtime.name).formats)
    if isinstance(payload, str):
        return None, "", payload
    probe = get_runtime_class(cell.runtime.name)(cell.device, cell.runtime.options)
    reason = probe.supports(Artifact(format=payload["format"], precision=payload["precision"]))
    if reason:
        return None, "", reason
    spec = CellSpec(
        cell_id=cell.cell_id, runtime=cell.runtime.name, device=cell.device, batch=cell.batch,
        runtime_options=dict(cell.runtime.options),
        artifact=payload,
        interleave_with=_interleave_payload(pm, cell, cfg),
        data={"dataset": pm.dataset, "preprocess": pm.preprocess, "eval_samples": pm.eval_samples, "seed": 0},
        measure=measure, reference_logits=pm.reference, accuracy=pm.accuracy,
        calibration=_calibration(cell, pm) if payload["format"] == "trt-calibrate" else None)
    return spec, "", ""
