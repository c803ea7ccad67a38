"""Read result rows for a report: every row that can be shown is kept, every other one is a warning.

The report reads files written by other quantbench versions, copied between machines or edited by
hand, so it checks each row itself instead of trusting the writer: a line that is not JSON or not
an object, or a row of an unknown schema, is skipped; a field of the wrong type is reset to null.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantbench.harness.results.store import READABLE_VERSIONS

# Rows of every schema in READABLE_VERSIONS render (1: the first; 2: host_memory with h2d/d2h null,
# stop_reason, timing_valid, null percentiles with too few samples, speedup_error, io_scope,
# measure_settings, fingerprint). This reader also checks each field's type:
_TEXT = {"run_id", "cell_id", "timestamp", "error", "model", "variant", "precision", "runtime", "runtime_label",
         "device", "weights", "artifact_sha256", "artifact_path", "identical_to", "clock", "exec_precision",
         "audit_note", "audit_warning", "stop_reason", "accuracy_note", "speedup_error", "io_scope", "fingerprint",
         "speedup_stop_reason", "timing_noisy_reason", "params_from"}
_NUMBER = {"batch", "size_bytes", "param_count", "quant_time_s", "quant_peak_mem_mb", "throughput_ips", "top1",
           "top5", "agreement_top1", "max_abs_err", "mean_abs_err", "int8_op_share", "speedup_interleaved",
           "eval_samples", "iterations", "load_avg", "duration_s", "min_iters", "speedup_ci_level", "speedup_separate",
           "interleave_variant_ms", "interleave_fp32_ms", "timing_attempts",
           "trainable_params", "non_trainable_params", "eval_wall_s"}
_BOOL = {"timing_valid", "host_memory", "timing_noisy"}
_DICT = {"env", "variant_settings", "runtime_settings", "dataset", "op_precisions", "runtime_versions",
         "measure_settings", "timing_settings", "fingerprint_parts", "interference"}
_NUMBER_LIST = {"speedup_interleaved_rounds", "speedup_interleaved_ci95", "compute_p50_ci95", "e2e_p50_ci95",
                "interleave_fp32_ci95", "speedup_separate_ci95"}
_ENV_TEXT = {"host", "cpu_model", "os", "python", "git_rev"}
_ENV_NUMBER = {"cores_physical", "cores_logical", "memory_gb"}
_SETTINGS_LISTS = {"op_types", "exclude_nodes", "calib_classes"}
# accuracy with its uncertainty (schema 3): counts, Δ and its p are numbers, intervals are lists of two
_NUMBER |= {"delta_top1", "delta_top1_p", "fp32_only_correct", "variant_only_correct"}
_NUMBER_LIST |= {"top1_ci95", "agreement_ci95", "delta_top1_ci95"}


@dataclass
class LoadedFile:
    """The rows of one file (the last row of each cell) and what was wrong with the others."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def is_number(value: Any) -> bool:
    """A finite int or float (JSON ``NaN``/``Infinity`` and booleans are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def load_file(path: Path) -> LoadedFile:
    """Rows of a results file; raises OSError (missing, unreadable) and nothing else."""
    path = Path(path)
    out = LoadedFile()
    by_cell: dict[Any, tuple[int, dict[str, Any]]] = {}
    bad_fields: set[str] = set()
    with open(path, encoding="utf-8-sig", errors="replace") as fh:  # -sig: a byte-order mark is not a corrupt row
        for no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row, why = _parse(line)
            if row is None:
                out.warnings.append(f"{path}:{no}: {why}; row skipped")
                continue
            bad_fields |= sanitize_row(row)
            row["_source"] = str(path)
            by_cell[row["cell_id"] if row.get("cell_id") is not None else ("line", no)] = (no, row)
    out.rows = [row for _, row in sorted(by_cell.values(), key=lambda x: x[0])]  # in the order they were written
    if bad_fields:
        out.warnings.append(f"{path}: field(s) of the wrong type shown as missing: {', '.join(sorted(bad_fields))}")
    if not out.rows and not out.warnings:
        out.warnings.append(f"{path}: no result rows (empty file)")
    return out


def _parse(line: str) -> tuple[dict[str, Any] | None, str]:
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        return None, "truncated or corrupt line (not JSON)"
    if not isinstance(row, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(row), "a number")
        return None, f"not a result row ({kind}, not a JSON object)"
    version = row.get("schema_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        readable = ", ".join(map(str, READABLE_VERSIONS))
        return None, f"schema version {version!r} is not supported (this quantbench reads {readable})"
    if not isinstance(row.get("status"), str):
        return None, f"status {row.get('status')!r} is not a string"
    return row, ""


def sanitize_row(row: dict[str, Any]) -> set[str]:
    """Reset fields whose type cannot be rendered to null (or empty); returns their names."""
    bad: set[str] = set()
    for key, value in list(row.items()):
        if value is None or key.startswith("_"):
            continue
        if key.endswith("_raw_ms") or key in _NUMBER_LIST:
            ok, empty = isinstance(value, list) and all(is_number(v) for v in value), []
        elif key in _NUMBER or key.endswith("_ms"):
            ok, empty = is_number(value), None
        elif key in _TEXT:
            ok, empty = isinstance(value, str), None
        elif key in _BOOL:
            ok, empty = isinstance(value, bool), None
        elif key in _DICT:
            ok, empty = isinstance(value, dict), {}
        else:
            continue
        if not ok:
            row[key] = empty
            bad.add(key)
    bad |= _sanitize_env(row.get("env") or {})
    bad |= _sanitize_settings(row.get("variant_settings") or {})
    return bad


def _sanitize_env(env: dict[str, Any]) -> set[str]:
    bad = set()
    for key, value in list(env.items()):
        ok = True
        if key in _ENV_TEXT:
            ok = value is None or isinstance(value, str)
        elif key in _ENV_NUMBER:
            ok = value is None or is_number(value)
        elif key == "gpu":
            ok = value is None or (isinstance(value, list) and all(isinstance(g, dict) for g in value))
        elif key == "versions":
            ok = value is None or isinstance(value, dict)
        elif key in ("cpu_flags", "cpu_flags_subset"):
            ok = value is None or isinstance(value, list)
        if not ok:
            env[key] = None
            bad.add(f"env.{key}")
    return bad


def _sanitize_settings(settings: dict[str, Any]) -> set[str]:
    bad = set()
    for key in _SETTINGS_LISTS:
        value = settings.get(key)
        if value is not None and not isinstance(value, list):
            settings[key] = None
            bad.add(f"variant_settings.{key}")
    return bad
