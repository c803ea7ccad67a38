"""One cell of a sweep as the harness writes it down: its row before measurement, and what its worker measures.

Shared by the planner (:mod:`harness.sweep.planner`) and every launcher (:mod:`harness.sweep.launch`),
so that a cell's row and its worker's job are built one way, wherever the cell runs.
"""
from __future__ import annotations

import functools
import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from quantbench.common.row import Row
from quantbench.harness.config.schema import SweepConfig, VariantConfig
from quantbench.harness.measure.cell import CellSpec
from quantbench.harness.results.store import SCHEMA_VERSION
from quantbench.harness.sweep.plan import Cell
from quantbench.harness.sweep.prepare import PreparedModel, fit_calibration, variant_spec

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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def base_row(run_id: str, cell: Cell, pm: PreparedModel, env: dict[str, Any]) -> Row:
    """The cell's row before it is measured: what it is, the artifact it loads, and ``env`` (fields: :class:`Row`)."""
    built = pm.artifacts.get(cell.variant.name)
    settings = dict(cell.variant.quant)
    if cell.variant.precision == "int8" and cell.variant.builder == "onnx":
        try:
            settings = variant_spec(cell.variant, pm).quant.to_dict()  # as built: a default calib_samples fits the data
        except Exception:  # noqa: BLE001 - keep the raw settings if they don't parse
            pass
    if cell.variant.builder == "prebuilt":  # the user's file: its path here, its sha256 in artifact_sha256
        settings = {"builder": "prebuilt", "onnx": cell.variant.onnx}
    elif cell.variant.builder != "onnx":
        settings.update({"builder": cell.variant.builder, "calibrator": cell.variant.calibrator})
    return {
        "schema_version": SCHEMA_VERSION, "run_id": run_id, "cell_id": cell.cell_id,
        "timestamp": _now(),
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


def sweep_row(run_id: str, key: str, error: str, runtime: str, device: str, env: dict[str, Any],
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A skipped row about the sweep itself (a runtime or target nothing offers), one ``cell_id`` per ``key``:
    a rerun's row replaces the previous one instead of adding to it."""
    return {"schema_version": SCHEMA_VERSION, "run_id": run_id,
            "cell_id": hashlib.sha256(key.encode()).hexdigest()[:16],
            "timestamp": _now(),
            "status": "skipped", "error": error, "runtime": runtime, "runtime_label": runtime,
            "model": "*", "variant": "*", "precision": None, "device": device, "batch": None, "env": env,
            **(extra or {})}


def calibration_cost(stats: dict[str, Any] | None) -> dict[str, Any]:
    """Row fields of what calibration cost (``calib_time_s``, ``calib_floor_s``, ``calib_time_ratio`` and its
    interval), null
    when nothing was calibrated or the artifact was built before floors were measured."""
    stats = stats or {}
    return {"calib_time_s": stats.get("time_s"), "calib_floor_s": stats.get("floor_s"),
            "calib_time_ratio": stats.get("time_ratio"), "calib_time_ratio_ci95": stats.get("time_ratio_ci95")}


def calibration_settings(cell: Cell, pm: PreparedModel) -> dict[str, Any] | None:
    """Runtime-side calibration settings (TensorRT 10 ``trt-calibrate`` variants), else None."""
    if cell.variant.builder != "trt-calibrate":
        return None
    qs = fit_calibration(cell.variant.quant_settings(), cell.variant, pm)[0]  # the typed settings, parsed once
    return {"dataset": pm.calib_data, "preprocess": pm.preprocess, "samples": qs.calib_samples,
            "seed": qs.calib_seed, "batch": qs.calib_batch,
            "classes": list(qs.calib_classes) if qs.calib_classes else None}


def describe(cell: Cell, pm: PreparedModel) -> str:
    """The cell in words, as log lines name it: ``model/variant on runtime (device) batch N [target]``."""
    where = f" [{cell.target}]" if cell.target else ""
    return f"{pm.label}/{cell.variant.name} on {cell.runtime.label} ({cell.device}) batch {cell.batch}{where}"


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
        calibration=calibration_settings(cell, pm) if payload["format"] == "trt-calibrate" else None)
    return spec, "", ""
