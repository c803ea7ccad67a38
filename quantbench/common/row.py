"""The result row: one typed declaration of every field a ``results.jsonl`` line may hold.

:class:`Row` is a ``TypedDict`` (rows stay plain dicts in memory and in JSON); each field is
``Annotated`` with a :class:`Doc` (meaning, unit, the schema version that first wrote it). The row
schema in ``docs/row-schema.md`` is generated from it (:func:`schema_markdown`; write it with
``python -m quantbench.common.row docs/row-schema.md``) and a test fails when the two disagree, so
a new field is documented here, once, beside its type.

Rows of every version in :data:`READABLE_VERSIONS` are read; fields added since a row's version
(:data:`ADDED_FIELDS`) are then null: "not measured". This module is the lowest layer: it imports
nothing from the rest of quantbench.
"""
from __future__ import annotations

import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict

SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
RESULTS_NAME = "results.jsonl"  # in an output folder
PHASES = ("io", "h2d", "compute", "d2h", "e2e")
STATS = ("mean", "std", "min", "p50", "p90", "p95", "p99", "max")
# Fewest samples for which a statistic means what its name says (p99 of 50 samples is their maximum).
MIN_SAMPLES = {"std": 2, "p90": 10, "p95": 20, "p99": 100}
# Fields added in schema 2; version-1 rows are read with these set to None (in this order).
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


@dataclass(frozen=True)
class Doc:
    """What a :class:`Row` field means.

    ``unit``: of its value ("" for text, flags and records); ``since``: the schema version that first wrote it;
    ``pattern``: a family of fields documented together (the phase statistics), shown once in the schema.
    """

    meaning: str
    unit: str = ""
    since: int = 1
    pattern: str = ""


def _stat(phase: str, stat: str) -> Doc:
    fewest = ", ".join(f"{k} {n}" for k, n in MIN_SAMPLES.items())
    return Doc(f"statistic S ({', '.join(STATS)}) of phase P's timed iterations (P: {', '.join(PHASES)}); null when "
               f"fewer samples were taken than S needs ({fewest}; MIN_SAMPLES), and h2d_*/d2h_* null when host_memory "
               "is true", "ms", 1, "{P}_{S}_ms")


def _raw(phase: str) -> Doc:
    return Doc("every timed iteration of phase P, in order", "ms", 1, "{P}_raw_ms")


class Identity(TypedDict, total=False):
    """Which cell, which run, and how it ended. Every row has these."""

    schema_version: Annotated[int, Doc("version of the schema the row was written in (READABLE_VERSIONS)")]
    run_id: Annotated[str, Doc("the run that wrote the row")]
    cell_id: Annotated[str, Doc("the cell: model source, label, eval_samples, variant table, runtime and options, "
                                "device, batch (and a fleet row's target)")]
    timestamp: Annotated[str, Doc("when the row was written, ISO-8601 UTC")]
    status: Annotated[Literal["ok", "failed", "skipped"], Doc("how the cell ended")]
    error: Annotated[str, Doc("one line: why it failed or was skipped; \"\" when ok")]
    duration_s: Annotated[float | None, Doc("wall time of the whole cell", "s")]


class Resume(TypedDict, total=False):
    """What a rerun compares to reuse a stored row, and the marks of a reused copy."""

    fingerprint: Annotated[str | None, Doc(
        "hash of every input that changes a number: timing settings, the data actually used, the FP32 model's and "
        "the variant artifact's content, resolved quantization settings, runtime options, package versions, machine. "
        "A rerun reuses a stored row only when it is unchanged", since=2)]
    fingerprint_parts: Annotated[dict[str, str] | None, Doc(
        "{group: hash} for the groups timing, data, model, variant, quant, runtime, versions, machine: a rerun says "
        "which changed", since=2)]
    measure_settings: Annotated[dict[str, Any] | None, Doc("the timing settings used (run.* timing keys)", since=2)]
    reused_at: Annotated[str, Doc(
        "only on a copy of a stored row that a later run reused after the same cell had been measured again under "
        "other inputs (a config changed and changed back): when, ISO-8601 UTC; every measured field is the "
        "original's", since=3)]
    reused_in_run: Annotated[str, Doc("on such a copy: the run_id that reused it", since=3)]


class CellFields(TypedDict, total=False):
    """What was measured: model × variant × runtime × device × batch."""

    model: Annotated[str, Doc("the model's label")]
    variant: Annotated[str, Doc("the variant's name")]
    precision: Annotated[Literal["fp32", "fp16", "int8"], Doc("the variant's precision as asked")]
    runtime: Annotated[str, Doc("runtime name (ort-cpu, openvino, tensorrt, ...)")]
    runtime_label: Annotated[str, Doc("the runtime as a table shows it (name plus distinguishing options)")]
    device: Annotated[str, Doc("device the runtime ran on (cpu, cuda:0, ...)")]
    batch: Annotated[int, Doc("images per inference", "images")]
    variant_settings: Annotated[dict[str, Any], Doc(
        "resolved quantization settings (calibration method, per_channel, symmetric, op types, ...; builder and "
        "calibrator for TensorRT-built and prebuilt variants)")]
    runtime_settings: Annotated[dict[str, Any], Doc("runtime options as applied (threads, hints, providers)")]


class ModelFields(TypedDict, total=False):
    """The measured artifact, its weights and the data it was evaluated on."""

    weights: Annotated[str | None, Doc(
        "where the weights came from: \"trained:<file>\", \"random-init\", \"onnx:<path>\" or "
        "\"builtin:module:<pkg.mod:fn>\"")]
    size_bytes: Annotated[int | None, Doc("the artifact's file size", "bytes")]
    param_count: Annotated[int | None, Doc(
        "weight elements in this row's ONNX file (BatchNorm folded, Q/DQ parameters left out)", "parameters")]
    trainable_params: Annotated[int | None, Doc(
        "the model's trainable parameters (Keras' split: requires_grad), the same on every variant", "parameters",
        since=3)]
    non_trainable_params: Annotated[int | None, Doc(
        "frozen parameters and float buffers such as BatchNorm running statistics", "parameters", since=3)]
    params_from: Annotated[Literal["torch", "onnx-initializers"] | None, Doc(
        "where the parameter table was counted: the PyTorch model, or the FP32 ONNX file's initializers "
        "(BatchNormalization mean/var non-trainable)", since=3)]
    artifact_sha256: Annotated[str | None, Doc("SHA-256 of the artifact's content")]
    artifact_path: Annotated[str | None, Doc("the artifact file")]
    dataset: Annotated[dict[str, Any], Doc(
        "the evaluation source's describe() incl. fingerprint, eval_samples, \"calibration\" (the calibration "
        "source's identity and fingerprint) and \"preprocess\" (the resolved preprocessing); image folders add "
        "class_index_rule, ignored_folders, color_mode and pixel_scaling")]


class QuantFields(TypedDict, total=False):
    """What building the variant cost, and what it is."""

    quant_time_s: Annotated[float | None, Doc("time to build the variant (calibration and quantization)", "s")]
    quant_peak_mem_mb: Annotated[float | None, Doc("peak resident memory of the build", "MiB")]
    identical_to: Annotated[str, Doc("variant whose artifact is byte-identical to this one, or \"\"")]
    packed_size_bytes: Annotated[int | None, Doc(
        "int8 rows: file size with Conv/Gemm/MatMul weights packed at variant_settings.weight_bits bits (equals "
        "size_bytes unless weight_storage is \"simulated\"); null otherwise", "bytes", since=2)]
    sweep: Annotated[dict[str, Any], Doc(
        "{swept key: value} of a variant expanded from a [[variants]] table with list values, {} otherwise",
        since=2)]
    sweep_base: Annotated[str | None, Doc("that table's name, or null", since=2)]
    calib_time_s: Annotated[float | None, Doc(
        "calibration alone (its passes and threshold search); null when nothing was calibrated or the artifact was "
        "cached before floors were measured", "s", since=3)]
    calib_floor_s: Annotated[float | None, Doc(
        "calibration's floor: the FP32 forward time of its passes over the calibration images, one sample per run, "
        "measured interleaved in the same process", "s", since=3)]
    calib_time_ratio: Annotated[float | None, Doc("calib_time_s / calib_floor_s", "ratio", since=3)]
    calib_time_ratio_ci95: Annotated[list[float] | None, Doc(
        "95% interval of calib_time_ratio: calib_time_s over the ends of the floor's percentile-bootstrap interval "
        "(the floor is the mean of a sample of probe runs); null where no floor was measured", "ratio", since=3)]
    artifact_notes: Annotated[list[str], Doc("notes from building the artifact (e.g. a calibration count fitted to "
                                             "the data)")]


class Timing(TypedDict, total=False):
    """How fast: the timed loop per phase, the interleaved speedup over FP32, and how noisy the machine was."""

    load_ms: Annotated[float | None, Doc("loading / compiling the artifact in the runtime", "ms")]
    first_infer_ms: Annotated[float | None, Doc("the first inference, untimed in the loop", "ms")]
    iterations: Annotated[int | None, Doc("timed iterations", "iterations")]
    clock: Annotated[str | None, Doc(
        "\"host-perf_counter_ns\", \"cuda-events\" or \"cuda-events; compute: host-perf_counter_ns\" (the last when "
        "the runtime waits for the GPU inside its run call)")]
    stop_reason: Annotated[Literal["min_iters_and_time", "max_iters", "max_time"] | None, Doc(
        "why the timed loop ended: both minimums met, or a cap hit first", since=2)]
    timing_valid: Annotated[bool | None, Doc(
        "false when the loop stopped before min_iters iterations (the numbers rest on fewer samples than asked)",
        since=2)]
    host_memory: Annotated[bool | None, Doc(
        "true when inputs and outputs stay in host memory (CPU devices; OpenVINO), so there is no separate "
        "host→device / device→host copy to time", since=2)]
    io_scope: Annotated[Literal["read+decode+preprocess", "index+preprocess"] | None, Doc(
        "what io_* covers: files opened, decoded and preprocessed in the timed region, or data held in memory "
        "since the source was opened (the file read not timed)", since=2)]
    io_mean_ms: Annotated[float | None, _stat("io", "mean")]
    io_std_ms: Annotated[float | None, _stat("io", "std")]
    io_min_ms: Annotated[float | None, _stat("io", "min")]
    io_p50_ms: Annotated[float | None, _stat("io", "p50")]
    io_p90_ms: Annotated[float | None, _stat("io", "p90")]
    io_p95_ms: Annotated[float | None, _stat("io", "p95")]
    io_p99_ms: Annotated[float | None, _stat("io", "p99")]
    io_max_ms: Annotated[float | None, _stat("io", "max")]
    io_raw_ms: Annotated[list[float] | None, _raw("io")]
    h2d_mean_ms: Annotated[float | None, _stat("h2d", "mean")]
    h2d_std_ms: Annotated[float | None, _stat("h2d", "std")]
    h2d_min_ms: Annotated[float | None, _stat("h2d", "min")]
    h2d_p50_ms: Annotated[float | None, _stat("h2d", "p50")]
    h2d_p90_ms: Annotated[float | None, _stat("h2d", "p90")]
    h2d_p95_ms: Annotated[float | None, _stat("h2d", "p95")]
    h2d_p99_ms: Annotated[float | None, _stat("h2d", "p99")]
    h2d_max_ms: Annotated[float | None, _stat("h2d", "max")]
    h2d_raw_ms: Annotated[list[float] | None, _raw("h2d")]
    compute_mean_ms: Annotated[float | None, _stat("compute", "mean")]
    compute_std_ms: Annotated[float | None, _stat("compute", "std")]
    compute_min_ms: Annotated[float | None, _stat("compute", "min")]
    compute_p50_ms: Annotated[float | None, _stat("compute", "p50")]
    compute_p90_ms: Annotated[float | None, _stat("compute", "p90")]
    compute_p95_ms: Annotated[float | None, _stat("compute", "p95")]
    compute_p99_ms: Annotated[float | None, _stat("compute", "p99")]
    compute_max_ms: Annotated[float | None, _stat("compute", "max")]
    compute_raw_ms: Annotated[list[float] | None, _raw("compute")]
    d2h_mean_ms: Annotated[float | None, _stat("d2h", "mean")]
    d2h_std_ms: Annotated[float | None, _stat("d2h", "std")]
    d2h_min_ms: Annotated[float | None, _stat("d2h", "min")]
    d2h_p50_ms: Annotated[float | None, _stat("d2h", "p50")]
    d2h_p90_ms: Annotated[float | None, _stat("d2h", "p90")]
    d2h_p95_ms: Annotated[float | None, _stat("d2h", "p95")]
    d2h_p99_ms: Annotated[float | None, _stat("d2h", "p99")]
    d2h_max_ms: Annotated[float | None, _stat("d2h", "max")]
    d2h_raw_ms: Annotated[list[float] | None, _raw("d2h")]
    e2e_mean_ms: Annotated[float | None, _stat("e2e", "mean")]
    e2e_std_ms: Annotated[float | None, _stat("e2e", "std")]
    e2e_min_ms: Annotated[float | None, _stat("e2e", "min")]
    e2e_p50_ms: Annotated[float | None, _stat("e2e", "p50")]
    e2e_p90_ms: Annotated[float | None, _stat("e2e", "p90")]
    e2e_p95_ms: Annotated[float | None, _stat("e2e", "p95")]
    e2e_p99_ms: Annotated[float | None, _stat("e2e", "p99")]
    e2e_max_ms: Annotated[float | None, _stat("e2e", "max")]
    e2e_raw_ms: Annotated[list[float] | None, _raw("e2e")]
    compute_p50_ci95: Annotated[list[float] | None, Doc(
        "[lo, hi]: order-statistics 95% interval of the median compute iteration; null under 6 iterations", "ms",
        since=3)]
    e2e_p50_ci95: Annotated[list[float] | None, Doc("the same interval for the median e2e iteration", "ms", since=3)]
    throughput_ips: Annotated[float | None, Doc("images per second from the e2e mean", "images/s")]
    load_avg: Annotated[float | None, Doc("1-minute load average at the cell's start", "processes")]
    speedup_interleaved: Annotated[float | None, Doc(
        "non-FP32 rows: FP32 compute median / this variant's, timed in alternating blocks in one process on the "
        "same runtime, rounds in A-B-B-A order; median over rounds; the only speedup estimator", "ratio")]
    speedup_interleaved_rounds: Annotated[list[float] | None, Doc("the per-round ratios", "ratio")]
    speedup_error: Annotated[str | None, Doc(
        "one line: why speedup_interleaved is null on a non-FP32 row (e.g. the interleave failed); \"\" otherwise",
        since=2)]
    speedup_interleaved_ci95: Annotated[list[float] | None, Doc(
        "[lo, hi]: order-statistics interval for the median round ratio (exact binomial ranks)", "ratio", since=3)]
    speedup_ci_level: Annotated[float | None, Doc(
        "that interval's exact confidence: >= 0.95 from 6 rounds on, e.g. 0.9375 for min..max of 5", "probability",
        since=3)]
    speedup_stop_reason: Annotated[Literal["ci_target", "max_rounds", "max_time"] | None, Doc(
        "why the rounds ended: the interval's half-width reached speedup_rel_ci of the median, "
        "interleave_max_rounds, or interleave_max_s", since=3)]
    interleave_variant_ms: Annotated[float | None, Doc("median block compute time of the variant in the interleave",
                                                       "ms", since=3)]
    interleave_fp32_ms: Annotated[float | None, Doc("median block compute time of FP32 in the interleave", "ms",
                                                    since=3)]
    interleave_fp32_ci95: Annotated[list[float] | None, Doc(
        "[lo, hi]: order-statistics interval of the FP32 block medians", "ms", since=3)]
    speedup_separate: Annotated[float | None, Doc(
        "interleave_fp32_ms / compute_p50_ms: the ratio the separately timed p50 columns imply", "ratio", since=3)]
    speedup_separate_ci95: Annotated[list[float] | None, Doc(
        "[interleave_fp32 lo / compute_p50 hi, interleave_fp32 hi / compute_p50 lo]: its range over both medians' "
        "intervals", "ratio", since=3)]
    interference: Annotated[dict[str, Any] | None, Doc(
        "{other_cpu_frac (CPU other processes used during the timed loop and the interleave, in cores), steal_frac "
        "(the VM's stolen time, in cores), load_start, load_end (1-min load average), wall_s, waited_s, quiet (the "
        "bounded wait for a quiet machine: quiet_wait_s)}; null values when /proc/stat is unreadable", since=3)]
    timing_noisy: Annotated[bool | None, Doc(
        "true when other_cpu_frac or steal_frac exceeded noisy_cpu_frac, or speedup_separate_ci95 does not overlap "
        "speedup_interleaved_ci95; null when interference could not be measured", since=3)]
    timing_noisy_reason: Annotated[str | None, Doc("one line, \"\" when not noisy", since=3)]
    timing_attempts: Annotated[int | None, Doc(
        "timed phases measured: a noisy cell is measured again up to noisy_retries times once the machine is quiet; "
        "the least disturbed attempt is kept", "attempts", since=3)]


class Accuracy(TypedDict, total=False):
    """How accurate, with its uncertainty, and how close to the FP32 reference (the FP32 model on ORT CPU)."""

    top1: Annotated[float | None, Doc("top-1 accuracy; null when labels don't apply (accuracy_note says why)",
                                      "fraction 0..1")]
    top5: Annotated[float | None, Doc("top-5 accuracy", "fraction 0..1")]
    restricted_outputs: Annotated[list[int], Doc(
        "the model's outputs (classes) top-k was restricted to, when the task uses a subset of its classes",
        since=3)]
    accuracy_note: Annotated[str | None, Doc(
        "\"\" when top1 is given, else one line saying why not: random weights, output not (N, classes) logits, "
        "labels outside the model's classes")]
    eval_samples: Annotated[int | None, Doc("images evaluated", "images")]
    eval_wall_s: Annotated[float | None, Doc(
        "wall time of the whole evaluation pass: reading, decoding, preprocessing and inference of every evaluated "
        "image at the cell's batch (or run.eval_batch)", "s", since=3)]
    agreement_top1: Annotated[float | None, Doc("share of images whose top-1 matches the FP32 reference's",
                                                "fraction 0..1")]
    max_abs_err: Annotated[float | None, Doc("largest absolute difference of the outputs from the FP32 reference's",
                                             "output units")]
    mean_abs_err: Annotated[float | None, Doc("mean absolute difference of the outputs from the FP32 reference's",
                                              "output units")]
    top1_ci95: Annotated[list[float] | None, Doc("[lo, hi]: Wilson 95% score interval of top1", "fraction 0..1",
                                                 since=3)]
    agreement_ci95: Annotated[list[float] | None, Doc("the same for agreement_top1", "fraction 0..1", since=3)]
    fp32_only_correct: Annotated[int | None, Doc("images FP32 gets right and this row wrong", "images", since=3)]
    variant_only_correct: Annotated[int | None, Doc("images this row gets right and FP32 wrong", "images", since=3)]
    delta_top1: Annotated[float | None, Doc(
        "(variant_only - fp32_only) / eval_samples: top1 minus FP32's top-1 on the same images (≈ 0 on FP32 rows)",
        "fraction", since=3)]
    delta_top1_ci95: Annotated[list[float] | None, Doc(
        "[lo, hi]: Newcombe's 1998 hybrid score interval for paired proportions (method 10), 95%", "fraction",
        since=3)]
    delta_top1_p: Annotated[float | None, Doc(
        "exact McNemar: two-sided binomial test of the discordant counts at 1/2", "probability", since=3)]
    holdout: Annotated[dict[str, Any], Doc(
        "only cells of the accuracy_budget search: {seed, select: {...}, report: {...}}, the same top-1 and paired "
        "fields on each half of a label-stratified split of the evaluation images", since=3)]


class Audit(TypedDict, total=False):
    """What really ran, as the runtime reports it."""

    exec_precision: Annotated[str | None, Doc("precision that ran (fp32, fp16, int8, mixed, ...)")]
    int8_op_share: Annotated[float | None, Doc("share of compute ops that ran in INT8", "fraction 0..1")]
    op_precisions: Annotated[dict[str, Any] | None, Doc("ops per precision as the runtime reports them")]
    audit_note: Annotated[str | None, Doc("how the audit was made")]
    audit_warning: Annotated[str | None, Doc("\"\" or one line when what ran does not match the label")]


class Environment(TypedDict, total=False):
    """Where it ran."""

    env: Annotated[dict[str, Any], Doc(
        "machine fingerprint: host, cpu_model, cpu_flags_subset, cores, memory_gb, gpu, os, python, versions "
        "{pkg: ver}, git_rev (a fleet row: its node's)")]
    runtime_versions: Annotated[dict[str, Any] | None, Doc("the runtime's package versions")]


class Fleet(TypedDict, total=False):
    """Only on rows of a fleet sweep (``quantbench run --ray``)."""

    fleet: Annotated[dict[str, Any], Doc(
        "target (the Ray resource the cell was pinned to, part of its cell_id), demand (resources the task asked "
        "for), node_id (null when no node measured it), node_ip, host, resources (the node's Ray resources), "
        "started/ended (UTC on the node), lost (true when its node left the cluster)", since=2)]


class Row(Identity, Resume, CellFields, ModelFields, QuantFields, Timing, Accuracy, Audit, Environment, Fleet,
          total=False):
    """One line of ``results.jsonl``: one cell's measurement (or why there is none).

    Missing values are null. On a failed or skipped row every measured field (timing, stop_reason,
    timing_valid, host_memory, io_scope, speedup_*, accuracy) is null or absent. Readers add keys
    starting with ``_`` (``_source``, ``_superseded``) that are never written.
    """


GROUPS: tuple[type, ...] = (Identity, Resume, CellFields, ModelFields, QuantFields, Timing, Accuracy, Audit,
                            Environment, Fleet)
TITLES = {Identity: "Identity", Resume: "Resume", CellFields: "Cell", ModelFields: "Model and data",
          QuantFields: "Quantization", Timing: "Timing", Accuracy: "Accuracy", Audit: "Audit",
          Environment: "Environment", Fleet: "Fleet"}


@dataclass(frozen=True)
class Field:
    """One field of :class:`Row`: its name, type, documentation and group."""

    name: str
    type: Any
    doc: Doc
    group: type


def fields() -> dict[str, Field]:
    """Every :class:`Row` field by name, in declaration order (groups in :data:`GROUPS` order)."""
    out: dict[str, Field] = {}
    for group in GROUPS:
        hints = typing.get_type_hints(group, include_extras=True)
        for name in group.__dict__.get("__annotations__", {}):
            hint = hints[name]
            doc = next((m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Doc)), None)
            if doc is None:
                raise TypeError(f"Row field {name} has no Doc")
            out[name] = Field(name, hint.__origin__, doc, group)
    return out


FIELDS = fields()


def type_text(tp: Any) -> str:
    """A field type in JSON terms: ``number or null``, ``[number]``, ``"ok" or "failed"``."""
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_text(a) for a in typing.get_args(tp))
    if origin is Literal:
        return " or ".join(f'"{a}"' for a in typing.get_args(tp))
    if origin is list:
        return f"[{type_text(typing.get_args(tp)[0])}]"
    if origin is dict or tp is dict:
        return "object"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp, getattr(tp, "__name__", str(tp)))


def conforms(value: Any, tp: Any) -> bool:
    """Whether ``value`` (as JSON decoded it) is of the declared type ``tp`` exactly (an int is a number, a bool
    is not; a Literal's value must be one of its values)."""
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, a) for a in typing.get_args(tp))
    if origin is Literal:
        return value in typing.get_args(tp)
    if origin is list:
        return isinstance(value, list) and all(conforms(v, typing.get_args(tp)[0]) for v in value)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def row_problems(row: dict[str, Any]) -> list[str]:
    """Keys of ``row`` that :class:`Row` does not declare, and values not of their declared type (one line each)."""
    out = []
    for key, value in row.items():
        if key.startswith("_"):
            continue
        f = FIELDS.get(key)
        if f is None:
            out.append(f"{key}: not a Row field")
        elif not conforms(value, f.type):
            out.append(f"{key}: {value!r:.60} is not {type_text(f.type)}")
    return out


def value_kind(tp: Any) -> str | None:
    """What a reader checks a field's value against, ignoring null: "text", "number", "bool", "dict",
    "number_list", "text_list"; None when the type allows several kinds."""
    args = [a for a in (typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,))
            if a is not type(None)]
    kinds = set()
    for a in args:
        origin = typing.get_origin(a)
        if a is str or origin is Literal and all(isinstance(v, str) for v in typing.get_args(a)):
            kinds.add("text")
        elif a in (int, float):
            kinds.add("number")
        elif a is bool:
            kinds.add("bool")
        elif a is dict or origin is dict:
            kinds.add("dict")
        elif origin is list and typing.get_args(a)[0] in (int, float):
            kinds.add("number_list")
        elif origin is list and typing.get_args(a)[0] is str:
            kinds.add("text_list")
        else:
            return None
    return kinds.pop() if len(kinds) == 1 else None


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def schema_markdown() -> str:
    """The row schema as Markdown, generated from :class:`Row` (``docs/row-schema.md`` holds this text)."""
    out = ["# The result row (`results.jsonl`)", "",
           "<!-- Generated from quantbench/common/row.py by `python -m quantbench.common.row docs/row-schema.md`; "
           "do not edit by hand (tests/common/test_row.py fails when this file and the type disagree). -->", "",
           f"One JSON object per line, one line per cell (schema version {SCHEMA_VERSION}; versions "
           f"{', '.join(map(str, READABLE_VERSIONS))} are read). {_prose(Row.__doc__)}", "",
           "Fields added in a later version are read as null from older rows: "
           + "; ".join(f"version {v}: {', '.join(f'`{k}`' for k in keys)}" for v, keys in ADDED_FIELDS.items())
           + ".", ""]
    seen_patterns: set[str] = set()
    by_group: dict[type, list[Field]] = {}
    for f in FIELDS.values():
        by_group.setdefault(f.group, []).append(f)
    for group in GROUPS:
        out += [f"## {TITLES[group]}", "", _prose(group.__doc__), "",
                "| field | type | unit | since | meaning |", "|---|---|---|---:|---|"]
        for f in by_group[group]:
            name = f.doc.pattern or f.name
            if f.doc.pattern:
                if f.doc.pattern in seen_patterns:
                    continue
                seen_patterns.add(f.doc.pattern)
            out.append(f"| `{name}` | {_cell(type_text(f.type))} | {_cell(f.doc.unit)} | {f.doc.since} | "
                       f"{_cell(f.doc.meaning)} |")
        out.append("")
    return "\n".join(out)


def _prose(doc: str | None) -> str:
    return " ".join(line.strip() for line in (doc or "").strip().splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    """``python -m quantbench.common.row [FILE]``: print the schema, or write it to FILE."""
    args = sys.argv[1:] if argv is None else argv
    if args:
        Path(args[0]).write_text(schema_markdown(), encoding="utf-8")
    else:
        sys.stdout.write(schema_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
