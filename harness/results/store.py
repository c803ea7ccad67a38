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
           again and says which groups changed. measure_settings (dict: the timing settings used).
           reused_at, reused_in_run (only on a copy of a stored row that a later run reused after the
           same cell had been measured again under other inputs, e.g. a config changed and changed
           back: when and by which run; every measured field is the original's). Readers show the
           current generation only (see current_rows; --all-generations / all_generations=True).
cell       model, variant, precision ("fp32" | "fp16" | "int8"), runtime, runtime_label, device, batch,
           variant_settings (dict: resolved calibration method, per_channel, symmetric, op types, ...),
           runtime_settings (dict, as applied: threads, hints, providers)
model      weights ("trained:<file>" | "random-init" | "onnx:<path>" | "builtin:module:<pkg.mod:fn>"),
           size_bytes, param_count, artifact_sha256, artifact_path, dataset (dict: the evaluation
           source's DataSource.describe() incl. fingerprint, eval_samples, and "calibration": the
           calibration source's identity and fingerprint; "preprocess": the resolved preprocessing,
           every key (a partial [[models]] table merged over the model's defaults); image folders
           add "class_index_rule" (the class_index rule in words, with an example), "ignored_folders"
           (hidden, __MACOSX or image-less folders that are not classes) and "color_mode" ("L" or
           "RGB", plus how 16-bit grey images were scaled to 8 bits, also in "pixel_scaling"))
           Since schema 3, the model's parameter table (exporters/param_counts.py), the same on every
           variant of a model: trainable_params, non_trainable_params (Keras' split: parameters with
           requires_grad vs frozen parameters and float buffers such as BatchNorm running statistics)
           and params_from ("torch": counted on the PyTorch model; "onnx-initializers": from the FP32
           ONNX file, BatchNormalization mean/var non-trainable). param_count stays the count of weight
           elements in this row's ONNX file (BatchNorm folded, Q/DQ parameters left out).
quant      quant_time_s, quant_peak_mem_mb (peak resident memory in MiB, 2^20 bytes),
           identical_to (variant name whose artifact is
           byte-identical to this one, or ""), packed_size_bytes (int8 rows: the file's size with the
           Conv/Gemm/MatMul weights packed at variant_settings.weight_bits bits; equals size_bytes
           unless weight_storage is "simulated"; null otherwise), sweep ({swept key: value} of a
           variant expanded from a [[variants]] table with list values, {} otherwise) and sweep_base
           (that table's name, or null); calib_time_s (calibration alone: its passes and threshold
           search), calib_floor_s (its floor: the FP32 forward time of its passes over the calibration
           images, one sample per run as calibration runs, measured interleaved in the same process on
           a spread of those images) and calib_time_ratio (= calib_time_s / calib_floor_s), null when
           nothing was calibrated or the artifact was cached before floors were measured
timing     load_ms, first_infer_ms, iterations, clock ("host-perf_counter_ns" | "cuda-events" | "cuda-events; compute: host-perf_counter_ns", the last when the runtime waits for the GPU inside its run call);
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
           Since schema 3 (methods: harness/measure/stats.py, harness/measure/interference.py):
           speedup_interleaved_ci95 ([lo, hi]: order-statistics interval for the median round ratio,
           exact binomial ranks), speedup_ci_level (its exact confidence: >= 0.95 from 6 rounds on,
           e.g. 0.9375 for min..max of 5), speedup_stop_reason (why the rounds ended: "ci_target" (the
           interval's half-width reached speedup_rel_ci of the median), "max_rounds"
           (interleave_max_rounds) or "max_time" (interleave_max_s)), interleave_variant_ms and
           interleave_fp32_ms (median block compute time of each side in the interleave),
           interleave_fp32_ci95 ([lo, hi] ms: the order-statistics interval of the FP32 block medians),
           speedup_separate (interleave_fp32_ms / compute_p50_ms: the ratio the separately timed
           p50 columns imply), speedup_separate_ci95 ([interleave_fp32 lo / compute_p50 hi,
           interleave_fp32 hi / compute_p50 lo]: its range over both medians' intervals);
           compute_p50_ci95, e2e_p50_ci95 ([lo, hi] ms: the same order-statistics 95% interval for the
           median iteration; null under 6 iterations);
           interference ({other_cpu_frac: CPU other processes used during the timed loop and the
           interleave, in cores ((machine busy jiffies from /proc/stat − this process's CPU time from
           os.times, all threads) / wall), steal_frac (the VM's stolen time, in cores), load_start,
           load_end (1-min load average), wall_s, waited_s and quiet (the bounded wait for a quiet
           machine before the phase: quiet_wait_s)}; null values when /proc/stat is unreadable);
           timing_noisy (true when other_cpu_frac or steal_frac exceeded noisy_cpu_frac, or
           speedup_separate_ci95 (speedup_separate where it has none) does not overlap
           speedup_interleaved_ci95; null when interference could not be measured),
           timing_noisy_reason (one line, "" when not noisy), timing_attempts (timed phases measured:
           a noisy cell is measured again up to noisy_retries times once the machine is quiet; the
           least disturbed attempt is kept)
accuracy   top1, top5 (fractions 0..1 or null when labels don't apply), accuracy_note ("" when top1
           is given, else one line saying why not: random weights, output not (N, classes) logits,
           labels outside the model's classes), eval_samples, eval_wall_s (since schema 3: wall
           seconds of the whole evaluation pass: reading, decoding, preprocessing and inference of
           every evaluated image at the cell's batch, or run.eval_batch when set; the study-style
           "time for the whole test set"), agreement_top1 (vs the fp32
           reference), max_abs_err, mean_abs_err (vs that reference). Non-finite outputs fail the cell.
           Since schema 3, with intervals (methods: quantbench/common/accuracy_stats.py): top1_ci95 ([lo, hi],
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

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 3
RESULTS_NAME = "results.jsonl"  # in an output folder
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
             "variant_only_correct", "trainable_params", "non_trainable_params", "params_from", "eval_wall_s")
V3_TIMING_FIELDS = ("speedup_interleaved_ci95", "speedup_ci_level", "speedup_stop_reason", "speedup_separate",
                    "interleave_variant_ms", "interleave_fp32_ms", "interleave_fp32_ci95", "speedup_separate_ci95",
                    "compute_p50_ci95", "e2e_p50_ci95",
                    "interference", "timing_noisy", "timing_noisy_reason", "timing_attempts")
ADDED_FIELDS = {2: V2_FIELDS, 3: V3_FIELDS + V3_TIMING_FIELDS}


class ResultsError(ValueError):
    """A results file that cannot be read (missing, empty, unknown schema)."""


@dataclass
class LoadReport:
    """What :func:`read_rows` found besides rows: problems worth telling the user."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Lines that are neither a row nor a row cut short by a kill (HTML, text): the file is not only results.
    foreign: list[tuple[int, str]] = field(default_factory=list)  # (line number, its start)


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
    """(line number, line) of the non-blank lines; a UTF-8 byte-order mark (an editor's) is dropped."""
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
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
    rows: dict[str, tuple[int, dict[str, Any]]] = {}
    order: list[dict[str, Any]] = []
    for no, line in iter_lines(path):
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            if not line.lstrip().startswith("{"):  # a row cut short by a kill still starts like one
                report.foreign.append((no, _excerpt(line)))
            report.warnings.append(f"{path}:{no}: truncated or corrupt line skipped")
            continue
        if not isinstance(row, dict):
            report.foreign.append((no, _excerpt(line)))
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
        rows[row.get("cell_id", f"line{no}")] = (no, row)
    # Latest rows in the order they were written (a cell measured again moves to where its new row is).
    report.rows = [row for _, row in sorted(rows.values(), key=lambda x: x[0])] if latest_per_cell else order
    if not report.rows and not report.warnings:
        report.warnings.append(f"{path}: no result rows")
    return report


def _excerpt(line: str, n: int = 40) -> str:
    text = line.strip()
    return repr(text[:n] + ("…" if len(text) > n else ""))


def stored_rows(path: Path, log: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """The latest row of each cell already in ``path`` (empty when there is no file), by cell_id.

    Raises ResultsError (one line) when the file holds lines that are not results at all (a report
    written over it, a text file): a run would otherwise measure everything again beside them.
    Skipped lines (a row cut short by a kill, an unknown schema) are passed to ``log`` as warnings.
    """
    if not path.exists():
        return {}
    loaded = read_rows(path)
    if loaded.foreign:
        (no, start), more = loaded.foreign[0], len(loaded.foreign) - 1
        raise ResultsError(f"{path} is not a quantbench results file: line {no} is not a result row ({start})"
                           + (f", nor are {more} other line(s)" if more else "")
                           + "; move it away or choose another output folder (nothing was run)")
    if log is not None:
        for warning in loaded.warnings:
            if not warning.endswith(": no result rows"):
                log(f"warning: {warning}")
    return {row["cell_id"]: row for row in loaded.rows if isinstance(row.get("cell_id"), str)}


def measured_cell_ids(path: Path, include_failed: bool = True) -> set[str]:
    """Cell ids already in ``path`` (with ``include_failed=False`` only those whose latest row is ok)."""
    return {cid for cid, row in stored_rows(path).items() if include_failed or row.get("status") == "ok"}


# ---- generations -------------------------------------------------------------------------------
# A rerun into the same folder with other inputs (eval_samples, threads, calib_samples, new weights …)
# measures its cells again under new cell ids; the older rows stay in the file. A row is *current*
# when it is the latest row of its slot (what a reader sees as one line of the table: model, variant,
# runtime label, device, batch, fleet target or host) and belongs to the latest generation of its
# model and of its runtime there: rows measured under the same model and data (and, per runtime, the
# same runtime options and timing settings) as the latest row. A rerun interrupted half way so shows
# only what its new configuration measured, never a mix.


def _text(value: Any) -> Any:
    return value if isinstance(value, (str, int, float)) or value is None else json.dumps(value, sort_keys=True)


def _where(row: dict[str, Any]) -> tuple:
    fleet = row.get("fleet") if isinstance(row.get("fleet"), dict) else {}
    env = row.get("env") if isinstance(row.get("env"), dict) else {}
    target = fleet.get("target")
    return (_text(row.get("model")), _text(row.get("device")), ("target", target) if target else ("host", env.get("host")))


def _runtime(row: dict[str, Any]) -> Any:
    return _text(row.get("runtime_label") or row.get("runtime"))


def slot(row: dict[str, Any]) -> tuple:
    """What a row is a measurement *of*, as a reader sees it (one line of a table); its latest row counts."""
    return (*_where(row), _runtime(row), _text(row.get("variant")), _text(row.get("batch")))


def generation_key(row: dict[str, Any]) -> str | None:
    """Hash of what every cell of a model shares in one configuration, i.e. what its accuracy means (the
    model, the evaluation and calibration data, their preprocessing, the evaluation count); None for rows
    without a fingerprint (schema 1)."""
    parts = row.get("fingerprint_parts")
    if not isinstance(parts, dict):
        return None
    ds = row.get("dataset") if isinstance(row.get("dataset"), dict) else {}
    cal = ds.get("calibration") if isinstance(ds.get("calibration"), dict) else {}
    key = [parts.get("model"), ds.get("fingerprint"), cal.get("fingerprint"),
           ds.get("eval_samples", row.get("eval_samples")), ds.get("preprocess", row.get("preprocess"))]
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def pairing_key(row: dict[str, Any]) -> tuple:
    """Rows that may be compared (Δ vs FP32, % of FP32) share this: the same generation, and the same runtime
    options and timing settings (how the latency was measured)."""
    parts = row.get("fingerprint_parts") if isinstance(row.get("fingerprint_parts"), dict) else {}
    return (generation_key(row), parts.get("runtime"), parts.get("timing"))


def _when(row: dict[str, Any]) -> str:
    value = row.get("reused_at") or row.get("timestamp")
    return value if isinstance(value, str) else ""


def current_rows(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(current rows, superseded rows), each in the given order; see the comment above.

    ``rows`` are the latest row of each cell id, in the order they were written (several files:
    their rows one file after the other); "latest" is by ``reused_at`` / ``timestamp``, then order.
    """
    order = sorted(range(len(rows)), key=lambda i: (_when(rows[i]), i))
    latest: dict[tuple, int] = {}
    model_gen: dict[tuple, str] = {}
    runtime_gen: dict[tuple, tuple] = {}
    for i in order:
        row = rows[i]
        latest[slot(row)] = i
        key = pairing_key(row)
        if key[0] is not None:
            model_gen[_where(row)] = key[0]
            runtime_gen[(*_where(row), _runtime(row))] = key
    current, older = [], []
    for i, row in enumerate(rows):
        key = pairing_key(row)
        stale = key[0] is not None and (model_gen.get(_where(row)) != key[0]
                                        or runtime_gen.get((*_where(row), _runtime(row))) != key)
        (older if latest[slot(row)] != i or stale else current).append(row)
    return current, older


def superseded_note(n: int, flag: str = "--all-generations") -> str:
    """One line about the rows left out as superseded ("" when none were)."""
    if not n:
        return ""
    return (f"{n} row(s) measured under earlier inputs of the same cells (an older generation) are not shown; "
            f"{flag} shows them")


def reaffirm_rows(path: Path, reused: list[dict[str, Any]], run_id: str) -> int:
    """Append a copy of each reused stored row that is no longer current in ``path`` (its slot was measured
    again under other inputs since, e.g. a config changed and then changed back), so that the file's
    latest rows are this run's configuration. The copy keeps every measured field and gets ``reused_at``
    and ``reused_in_run``. Returns how many were appended."""
    if not reused or not path.exists():
        return 0
    rows = read_rows(path).rows
    _, older = current_rows(rows)
    stale = {id(r) for r in older}
    by_id = {r.get("cell_id"): r for r in rows}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    n = 0
    for row in reused:
        stored = by_id.get(row.get("cell_id"))
        if stored is not None and id(stored) in stale:
            append_row(path, {**stored, "reused_at": now, "reused_in_run": run_id})
            n += 1
    return n


def read_current(path: Path | str, all_generations: bool = False) -> LoadReport:
    """:func:`read_rows` of a results file or an output folder, less the superseded rows (unless
    ``all_generations``); a note in ``warnings`` says how many were left out."""
    path = Path(path)
    loaded = read_rows(path / RESULTS_NAME if path.is_dir() else path)
    if not all_generations:
        loaded.rows, older = current_rows(loaded.rows)
        note = superseded_note(len(older))
        if note:
            loaded.warnings.append(note)
    return loaded


def to_dataframe(rows: Iterable[dict[str, Any]]):  # -> pandas.DataFrame
    """Rows as a pandas DataFrame (pandas imported lazily)."""
    import pandas as pd

    return pd.DataFrame(list(rows))


def export_table(rows: list[dict[str, Any]], out: Path) -> list[str]:
    """Write rows to CSV or Parquet by file extension; list/dict columns are JSON-encoded. Returns warnings.

    Rows are checked as ``quantbench report`` checks them: a known field of the wrong type (a hand-edited
    ``"top1": "high"``) is written as null, and a column whose values still mix types (Parquet needs
    one per column) is written as text; each is named in a warning, no row is dropped.
    """
    import copy

    from quantbench.reports.rows import sanitize_row

    if out.suffix not in (".parquet", ".csv"):
        raise ResultsError(f"cannot export to '{out.suffix}': use .csv or .parquet")
    rows = copy.deepcopy(list(rows))
    warnings: list[str] = []
    bad: set[str] = set()
    for row in rows:
        bad |= sanitize_row(row)
    if bad:
        warnings.append(f"field(s) of the wrong type written as null: {', '.join(sorted(bad))}")
    df = to_dataframe(rows)
    mixed = []
    for col in df.columns:
        if df[col].map(lambda v: isinstance(v, (list, dict))).any():
            df[col] = df[col].map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v)
        kinds = {bool if isinstance(v, bool) else (float if isinstance(v, int) else type(v))
                 for v in df[col] if v is not None and not (isinstance(v, float) and math.isnan(v))}
        if len(kinds) > 1 and out.suffix == ".parquet":
            mixed.append(str(col))
            df[col] = df[col].map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    if mixed:
        warnings.append(f"column(s) with values of mixed types written as text: {', '.join(mixed)}")
    if out.suffix == ".parquet":
        df.to_parquet(out, index=False)
    else:
        df.to_csv(out, index=False)
    return warnings
