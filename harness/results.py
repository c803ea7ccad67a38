"""Results: one tidy row per cell, appended to a JSON Lines file and flushed as each cell ends.

Schema (``SCHEMA_VERSION`` 3; rows of versions 1 and 2 are still read, the fields added since set to
null: "not measured").
Every row has:

identity   schema_version, run_id, cell_id (the cell: model source, label, eval_samples, variant table,
           runtime and options, device, batch), timestamp (ISO-8601 UTC), status ("ok" | "failed" |
           "skipped"), error (one line: why it failed or was skipped; "" when ok), duration_s (wall time
           of the whole cell)
resume     fingerprint (hash of every input that changes a number: timing settings, the data actually
           used, the fp32 model's and the variant artifact's content, resolved quantization settings,
           runtime options, package versions, machine) and fingerprint_parts ({group: hash}, groups
           "timing", "data", "model", "variant", "quant", "runtime", "versions", "machine"). A rerun
           reuses a stored row only when its fingerprint is unchanged; otherwise it measures the cell
           again and says which groups changed. measure_settings (dict: the timing settings used)
cell       model, variant, precision ("fp32" | "fp16" | "int8"), runtime, runtime_label, device, batch,
           variant_settings (dict: resolved calibration method, per_channel, symmetric, op types, ...),
           runtime_settings (dict, as applied: threads, hints, providers)
model      weights ("trained:<file>" | "random-init" | "onnx:<path>" | "builtin:module:<pkg.mod:fn>"),
           size_bytes, param_count, artifact_sha256, artifact_path, dataset (dict: the evaluation
           source's DataSource.describe() incl. fingerprint, eval_samples, and "calibration": the
           calibration source's identity and fingerprint)
quant      quant_time_s, quant_peak_mem_mb, identical_to (variant name whose artifact is
           byte-identical to this one, or ""), packed_size_bytes (int8 rows: the file's size with the
           Conv/Gemm/MatMul weights packed at variant_settings.weight_bits bits; equals size_bytes
           unless weight_storage is "simulated"; null otherwise), sweep ({swept key: value} of a
           variant expanded from a [[variants]] table with list values, {} otherwise) and sweep_base
           (that table's name, or null)
timing     load_ms, first_infer_ms, iterations, clock ("host-perf_counter_ns" | "cuda-events");
           stop_reason: why the timed loop ended, "min_iters_and_time" (both minimums met),
           "max_iters" or "max_time" (a cap hit first); timing_valid: False when the loop stopped
           before min_iters iterations (the numbers then rest on fewer samples than asked for);
           host_memory: True when the runtime's inputs and outputs stay in host memory (CPU
           devices; OpenVINO, whose device copies happen inside infer), so there is no separate
           host→device / device→host copy to time;
           for each phase P in io, h2d, compute, d2h, e2e:
               P_mean_ms, P_std_ms, P_min_ms, P_p50_ms, P_p90_ms, P_p95_ms, P_p99_ms, P_max_ms
               and P_raw_ms (list of floats: every timed iteration).
           h2d_* and d2h_* are null when host_memory is True (stage/fetch are still called, and are
           inside e2e). A statistic is null when fewer samples were taken than it needs
           (MIN_SAMPLES): std needs 2, p90 10, p95 20, p99 100; mean/min/p50/max need 1.
           io_* time reading one whole batch from the dataset; io_scope says what that covers:
           "read+decode+preprocess" (file-backed data: files opened, decoded and preprocessed in the
           timed region; the OS page cache may serve the bytes) or "index+preprocess" (data held in
           memory since the source was opened: the file read is not timed).
           throughput_ips (images per second from the e2e mean), load_avg (1-min, at start),
           speedup_interleaved (non-FP32 cells: FP32 compute median / this variant's, timed in
           alternating blocks in one process on the same runtime, rounds in A-B-B-A order: variant
           first in odd rounds, FP32 first in even ones; median over rounds; the only speedup
           estimator), speedup_interleaved_rounds (the per-round ratios), speedup_error (one line: why
           speedup_interleaved is null on a non-FP32 row, e.g. the interleave failed; "" otherwise)
accuracy   top1, top5 (fractions 0..1 or null when labels don't apply), accuracy_note ("" when top1
           is given, else one line saying why not: random weights, output not (N, classes) logits,
           labels outside the model's classes), eval_samples, agreement_top1 (vs the fp32
           reference), max_abs_err, mean_abs_err (vs that reference). Non-finite outputs fail the cell.
           Since schema 3, with intervals (methods: harness/accuracy_stats.py): top1_ci95 ([lo, hi],
           the Wilson 95% score interval of top1, same unit), agreement_ci95 (the same for
           agreement_top1); and, when the row has a top-1 and the FP32 reference predictions (the FP32
           model run by ONNX Runtime CPU at preparation, on the same images), the paired comparison
           with FP32: fp32_only_correct (images FP32 gets right and this row wrong),
           variant_only_correct (the reverse), delta_top1 ((variant_only − fp32_only) / eval_samples,
           i.e. top1 minus FP32's top-1, in the unit of top1), delta_top1_ci95 (Newcombe's 1998 hybrid
           score interval for paired proportions, method 10, 95%) and delta_top1_p (exact McNemar:
           two-sided binomial test of the discordant counts at 1/2). FP32 rows get them too (≈ 0 on
           another runtime, exactly 0 on ORT CPU). holdout (only cells of the accuracy_budget search):
           {"seed", "select": {...}, "report": {...}}, the same top-1 and paired fields on each half
           of a label-stratified split of the evaluation images (select on one, report on the other).
audit      exec_precision, int8_op_share, op_precisions (dict), audit_note, audit_warning ("" or a
           one-line warning when what ran does not match the label)
env        env (dict fingerprint: host, cpu_model, cpu_flags_subset, cores, memory_gb, gpu, os,
           python, versions {pkg: ver}, git_rev), runtime_versions (dict)
fleet      only on rows of a fleet sweep (harness.fleet): fleet (dict: target (the Ray resource the
           cell was pinned to, part of its cell_id), demand (resources the task asked for), node_id,
           node_ip, host, resources (the node's Ray resources), started/ended (UTC on the node);
           node_id null when no node measured it; lost true when its node left the cluster). env is
           then the node's environment.

Missing values are ``null``; on a failed or skipped row every measured field (timing, stop_reason,
timing_valid, host_memory, io_scope, speedup_*, accuracy) is null or absent. Readers accept older schema versions or say clearly they do not.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
PHASES = ("io", "h2d", "compute", "d2h", "e2e")
STATS = ("mean", "std", "min", "p50", "p90", "p95", "p99", "max")
# Fewest samples for which a statistic means what its name says (p99 of 50 samples is their maximum).
MIN_SAMPLES = {"std": 2, "p90": 10, "p95": 20, "p99": 100}
# Fields added in schema 2; version-1 rows are read with these set to None.
V2_FIELDS = ("fingerprint", "fingerprint_parts", "measure_settings", "stop_reason", "timing_valid",
             "host_memory", "io_scope", "speedup_error")
# Fields added in schema 3; older rows are read with these set to None ("not measured").
V3_FIELDS = ("top1_ci95", "agreement_ci95", "delta_top1", "delta_top1_ci95", "delta_top1_p", "fp32_only_correct",
             "variant_only_correct")
ADDED_FIELDS = {2: V2_FIELDS, 3: V3_FIELDS}


class ResultsError(ValueError):
    """A results file that cannot be read (missing, empty, unknown schema)."""


@dataclass
class LoadReport:
    """What :func:`read_rows` found besides rows: problems worth telling the user."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one row and fsync, repairing a line left truncated by an earlier kill."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(clean_floats(row), default=_json_default, allow_nan=False) + "\n"
    with open(path, "a+b") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() > 0:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                fh.write(b"\n")
        fh.write(line.encode())
        fh.flush()
        os.fsync(fh.fileno())


def clean_floats(obj: Any) -> Any:
    """Replace NaN/inf (not valid JSON) by None, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: clean_floats(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_floats(v) for v in obj]
    return obj


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for no, line in enumerate(fh, 1):
            if line.strip():
                yield no, line


def read_rows(path: Path | str, latest_per_cell: bool = True) -> LoadReport:
    """Read a results file. Truncated or corrupt lines are skipped with a warning, never fatal.

    With ``latest_per_cell`` only the last row of each ``cell_id`` is kept (a retried cell).
    """
    path = Path(path)
    if not path.exists():
        raise ResultsError(f"results file not found: {path}")
    report = LoadReport()
    rows: dict[str, dict[str, Any]] = {}
    order: list[dict[str, Any]] = []
    for no, line in iter_lines(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            report.warnings.append(f"{path}:{no}: truncated or corrupt line skipped")
            continue
        if not isinstance(row, dict):
            report.warnings.append(f"{path}:{no}: not a result row, skipped")
            continue
        version = row.get("schema_version")
        if version not in READABLE_VERSIONS or isinstance(version, bool):
            report.warnings.append(
                f"{path}:{no}: schema version {version!r} is not supported (this quantbench reads "
                f"{', '.join(map(str, READABLE_VERSIONS))}); row skipped")
            continue
        for added_in, keys in ADDED_FIELDS.items():
            if version < added_in:
                for key in keys:
                    row.setdefault(key, None)
        order.append(row)
        rows[row.get("cell_id", f"line{no}")] = row
    report.rows = list(rows.values()) if latest_per_cell else order
    if not report.rows and not report.warnings:
        report.warnings.append(f"{path}: no result rows")
    return report


def stored_rows(path: Path) -> dict[str, dict[str, Any]]:
    """The latest row of each cell already in ``path`` (empty when there is no file), by cell_id."""
    if not path.exists():
        return {}
    return {row["cell_id"]: row for row in read_rows(path).rows if isinstance(row.get("cell_id"), str)}


def measured_cell_ids(path: Path, include_failed: bool = True) -> set[str]:
    """Cell ids already in ``path`` (with ``include_failed=False`` only those whose latest row is ok)."""
    return {cid for cid, row in stored_rows(path).items() if include_failed or row.get("status") == "ok"}


def to_dataframe(rows: Iterable[dict[str, Any]]):  # -> pandas.DataFrame
    """Rows as a pandas DataFrame (pandas imported lazily)."""
    import pandas as pd

    return pd.DataFrame(list(rows))


def export_table(rows: list[dict[str, Any]], out: Path) -> None:
    """Write rows to CSV or Parquet by file extension; list/dict columns are JSON-encoded."""
    df = to_dataframe(rows)
    for col in df.columns:
        if df[col].map(lambda v: isinstance(v, (list, dict))).any():
            df[col] = df[col].map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v)
    if out.suffix == ".parquet":
        df.to_parquet(out, index=False)
    elif out.suffix == ".csv":
        df.to_csv(out, index=False)
    else:
        raise ResultsError(f"cannot export to '{out.suffix}': use .csv or .parquet")
