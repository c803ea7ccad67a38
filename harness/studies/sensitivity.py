"""Per-layer sensitivity of a model to INT8 quantization (``quantbench sensitivity``).

For every node the variant's QDQ quantizer quantizes: SQNR of the model output against FP32 when
ONLY that node is quantized and when ONLY that node stays float (on ``sqnr_samples`` evaluation
images), then top-1 of both models for the ``top`` most sensitive nodes. The graph is calibrated
once and every per-node model reuses those ranges (:mod:`.node_quant`). All ONNX Runtime work runs
in contained subprocesses (:mod:`.sensitivity_worker`) under ``run.timeout_s``; a worker that runs
out of time is restarted where it stopped, and a node that alone exhausts the timeout is recorded
as failed. Rows go to ``OUTPUT/sensitivity.jsonl`` (``kind`` = ``sensitivity``, ``sensitivity_summary``;
the budget search adds ``budget_step`` and ``budget``, see :mod:`.mixed_precision`).

``--scan local`` (``scan = "local"``) scores each node by the SQNR of its own output instead
(``sqnr_local_db``; :mod:`.node_local`): one FP32 pass plus each node's own work, a first look.
Every row says which scan made it (``scan_mode``: ``full`` | ``local``). What a scan cost against its
floor, the FP32 forward passes it needs over the SQNR images (one pass, ``fp32_pass_s``, timed in the
worker at the scan's batch without session creation): the summary row's ``scan_time_s``,
``scan_floor_s`` (full: 1 + 2 per node measured alone passes; local: 2, FP32 and whole INT8) and ``scan_time_ratio``
(= time / floor) with ``scan_time_ratio_ci95`` (full scans: the FP32 pass is timed batch by batch before the scan
and again after it, and the interval is a bootstrap of those batches, :func:`floor_unit`), ``scan_lanes``
(nodes measured at once, when idle cores allowed more than one; the floor is one lane's), and
``calib_floor_s``/``calib_time_ratio`` of its one calibration; full-scan node rows carry ``node_floor_s``
(two passes) and ``node_time_ratio`` (``node_seconds`` / that).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from quantbench.harness.config.schema import ConfigError, SweepConfig, VariantConfig
from quantbench.harness.studies.worker_jobs import now as _now
from quantbench.harness.studies.worker_jobs import read_events, run_worker_job

SENSITIVITY_FILE = "sensitivity.jsonl"
SCHEMA_VERSION = 1
RANK_BY = ("float-only", "quantized-only")
# "full": SQNR of the model's output with only each node quantized and with only it in float (two
# whole-model passes per node); "local": each node's own output error from one FP32 pass (harness/studies/node_local.py)
SCANS = ("full", "local")


@dataclass
class SensitivityOptions:
    """How much to measure (CLI flags; defaults suit a CNN on 2 cores)."""

    sqnr_samples: int = 256  # evaluation images for the SQNR of every per-node model
    top: int = 5  # most sensitive nodes whose per-node models also get top-1 on the evaluation set
    # ONNX Runtime batch for the SQNR and top-1 passes: at 32, ResNet-50's activations took the scan's worker
    # past 1.1 GiB; at 8 it stays under 0.9 GiB and a forward pass over the images takes about as long
    batch: int = 8
    runtime: str = "ort-cpu"  # where the budget search measures accuracy and latency
    device: str = "cpu"
    budget: float | None = None  # overrides a variant's accuracy_budget (points of top-1)
    max_float: int | None = None  # most nodes the budget search keeps in float (None: all candidates)
    budget_batch: int | None = None  # batch of the search's timing (None: the first of run.batch_sizes)
    rank_by: str = "float-only"  # "float-only": highest SQNR with only the node in float first; "quantized-only"
    scan: str = "full"  # "full" or "local" (SCANS): local ranks by each node's own output error, in seconds

    def validate(self) -> None:
        for key in ("sqnr_samples", "batch"):
            if getattr(self, key) < 1:
                raise ConfigError(f"--{key.replace('_', '-')} must be >= 1, not {getattr(self, key)}")
        if self.top < 0:
            raise ConfigError(f"--top must be >= 0, not {self.top}")
        if self.budget is not None and not (self.budget >= 0 and self.budget != float("inf")):
            raise ConfigError(f"--budget must be a number of top-1 points >= 0, not {self.budget}")
        if self.max_float is not None and self.max_float < 0:
            raise ConfigError(f"--max-float must be >= 0, not {self.max_float}")
        if self.scan not in SCANS:
            raise ConfigError(f"--scan must be one of {', '.join(SCANS)}, not '{self.scan}'")
        if self.rank_by not in RANK_BY:
            raise ConfigError(f"--rank-by must be one of {', '.join(RANK_BY)}, not '{self.rank_by}'")
        if self.budget_batch is not None and self.budget_batch < 1:
            raise ConfigError(f"--budget-batch must be >= 1, not {self.budget_batch}")


@dataclass
class StudyResult:
    """One (model, variant) study: its ranked node rows, summary row and, with a budget, the search."""

    model: str
    variant: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # kind = sensitivity, ranked
    summary: dict[str, Any] = field(default_factory=dict)  # kind = sensitivity_summary
    budget_steps: list[dict[str, Any]] = field(default_factory=list)
    budget: dict[str, Any] | None = None
    error: str = ""


def rank_nodes(nodes: list[dict[str, Any]], by: str = "float-only") -> list[dict[str, Any]]:
    """Most sensitive first.

    ``float-only`` (leave-one-out, the order accuracy-aware searches such as NNCF's revert layers in):
    highest SQNR with only the node in float, i.e. the most the model gains from keeping that node
    float; ``quantized-only``: lowest SQNR with only the node quantized. The other metric breaks ties.
    Nodes whose per-node model failed come last (unranked); an SQNR of None (outputs identical to
    FP32) counts as infinite.
    """
    inf = float("inf")

    def key(n: dict[str, Any]) -> tuple[int, float, float]:
        if n.get("error"):
            return (1, inf, 0.0)
        if by == "local":  # a local scan: lowest SQNR of the node's own output first
            local = n.get("sqnr_local_db")
            return (0, inf if local is None else local, 0.0)
        q = n.get("sqnr_quant_only_db")
        f = n.get("sqnr_float_only_db")
        q, f = (inf if q is None else q), (inf if f is None else f)
        return (0, -f, q) if by == "float-only" else (0, q, -f)

    ranked = sorted(nodes, key=key)
    for i, n in enumerate(ranked, 1):
        n["rank"] = i if not n.get("error") else None
    return ranked


def _select(cfg: SweepConfig, variant: list[str] | None) -> list[VariantConfig]:
    candidates = [v for v in cfg.variants if v.precision == "int8" and v.builder == "onnx"]
    if variant:
        known = {v.name: v for v in cfg.variants}
        missing = [w for w in variant if w not in known]
        if missing:
            raise ConfigError(f"--variant: unknown variant(s) {', '.join(missing)}; this config has {', '.join(known)}")
        bad = [w for w in variant if known[w] not in candidates]
        if bad:
            raise ConfigError(f"--variant: {', '.join(bad)} is not an ONNX INT8 variant (sensitivity needs one)")
        return [known[w] for w in variant]
    if not candidates:
        raise ConfigError("the config has no ONNX INT8 variant to study (add a [[variants]] with precision = \"int8\")")
    return candidates


def _settings(v: VariantConfig) -> Any:
    from quantbench.harness.studies.node_quant import unsupported_settings

    qs = v.quant_settings()
    bad = unsupported_settings(qs)
    if bad:
        raise ConfigError(f"variant '{v.name}': sensitivity builds static QDQ models with 8-bit weights; "
                          f"it cannot reproduce {', '.join(bad)} "
                          f"(leave {'it' if len(bad) == 1 else 'them'} at the default)")
    return qs


def run_study(cfg: SweepConfig, output: Path, opts: SensitivityOptions, *, models: list[str] | None = None,
              variants: list[str] | None = None, log: Callable[[str], None] = print) -> list[StudyResult]:
    """Sensitivity (and, where a budget is set, the mixed-precision search) for each model × INT8 variant.

    Rows are appended to ``output/sensitivity.jsonl`` as each study ends. Raises ConfigError for bad
    input (before anything runs); a model or variant that fails gets a StudyResult with ``error``.
    """
    from quantbench.common.subproc import signal_guard
    from quantbench.harness.results.store import append_row
    from quantbench.harness.sweep.environment import fingerprint
    from quantbench.harness.sweep.prepare import cache_dir, fit_calibration, prepare_model, resolve_models
    from quantbench.harness.sweep.runner import check_output_dir, output_lock

    opts.validate()
    chosen = _select(cfg, variants)
    settings = {v.name: _settings(v) for v in chosen}
    if models:
        labels = [m.label or m.name for m in cfg.models]
        missing = [m for m in models if m not in labels]
        if missing:
            raise ConfigError(f"--model: unknown model(s) {', '.join(missing)}; this config has {', '.join(labels)}")
        cfg.models = [m for m in cfg.models if (m.label or m.name) in models]
    if opts.budget is not None or any(settings[v.name].accuracy_budget is not None for v in chosen):
        from quantbench.harness.studies.mixed_precision import check_runtime

        check_runtime(cfg, opts.runtime, opts.device)
    check_output_dir(output)
    prepared = resolve_models(cfg)
    cache = cache_dir(cfg)
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + os.urandom(3).hex()
    env = fingerprint()
    results: list[StudyResult] = []
    state: dict[str, Any] = {"workdir": None, "written": 0}  # for the message when interrupted
    from quantbench.common.progress import watch

    with output_lock(output), signal_guard(), watch():  # workers' progress: log records, or the CLI's display
        try:
            for pm in prepared:
                try:
                    prepare_model(pm, cache, log)
                except Exception as exc:  # noqa: BLE001 - fails this model's studies, in one line
                    from quantbench.common.worker_protocol import one_line

                    for v in chosen:
                        results.append(StudyResult(pm.label, v.name, error=f"model {pm.label}: {one_line(exc)}"))
                        log(f"error: {pm.label}/{v.name}: {results[-1].error}")
                    continue
                for v in chosen:
                    qs, fit_note = fit_calibration(settings[v.name], v, pm)  # a default calib_samples fits the data
                    if fit_note:
                        log(f"warning: {pm.label}/{v.name}: {fit_note}")
                    base = {"sensitivity_schema": SCHEMA_VERSION, "run_id": run_id, "model": pm.label,
                            "variant": v.name,
                            "variant_settings": qs.to_dict(), "weights": getattr(pm.fp32, "weights", None),
                            "dataset": {**pm.dataset_info, "eval_samples": pm.eval_samples}, "env": env}
                    workdir = state["workdir"] = study_dir(output, cfg, pm, v.name, qs, opts, env)
                    workdir.mkdir(parents=True, exist_ok=True)
                    study = StudyResult(pm.label, v.name)
                    results.append(study)
                    try:
                        _one_study(cfg, pm, v, qs, opts, workdir, base, study, log)
                    except Exception as exc:  # noqa: BLE001 - one study's failure is its summary row
                        from quantbench.common.worker_protocol import one_line

                        study.error = one_line(exc)
                        log(f"error: {pm.label}/{v.name}: {study.error}")
                        study.summary = {**base, "kind": "sensitivity_summary", "status": "failed",
                                         "error": study.error, "timestamp": _now()}
                    budget = [study.budget] if study.budget else []
                    for row in [*study.rows, study.summary, *study.budget_steps, *budget]:
                        if row:
                            append_row(output / SENSITIVITY_FILE, row)
                    state["written"] += 1
                    state["workdir"] = None
                    if not study.error:
                        shutil.rmtree(workdir, ignore_errors=True)  # models and logs; kept when something failed
        except KeyboardInterrupt as exc:
            raise KeyboardInterrupt(interrupted_message(output, state["workdir"], state["written"])) from exc
        finally:
            work = output / "sensitivity-work"
            if work.is_dir() and not any(work.iterdir()):
                work.rmdir()
    return results


def study_dir(output: Path, cfg: SweepConfig, pm: Any, variant: str, qs: Any, opts: SensitivityOptions,
              env: dict[str, Any]) -> Path:
    """``OUTPUT/sensitivity-work/<model>-<variant>-<key>``: the study's work folder, where a rerun finds what an
    interrupted one measured. ``key`` hashes every input that changes a number (the FP32 file, the resolved
    quantization settings, the data and its fingerprints, preprocessing, image counts, batch, threads and
    package versions, as a sweep's resume does); ``--top``, ``--budget`` or ``--rank-by`` do not change it."""
    import hashlib

    info = pm.dataset_info or {}
    key = {"fp32": getattr(pm.fp32, "sha256", None), "settings": qs.to_config(), "data": pm.dataset,
           "calib_data": pm.calib_data, "fingerprint": info.get("fingerprint"),
           "calibration": (info.get("calibration") or {}).get("fingerprint"), "preprocess": pm.preprocess,
           "sqnr_samples": opts.sqnr_samples, "eval_samples": pm.eval_samples, "batch": opts.batch,
           "threads": cfg.run.threads, "versions": env.get("versions")}  # as a sweep's resume: no git revision
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{pm.label}-{variant}")[:80]
    return output / "sensitivity-work" / f"{name}-{digest}"


def interrupted_message(output: Path, workdir: Path | None, written: int) -> str:
    """What an interrupted ``quantbench sensitivity`` kept, in one line (only what is true)."""
    kept = []
    if written:
        kept.append(f"the rows of {written} finished study(ies) are in {output / SENSITIVITY_FILE}")
    nodes = [e for e in read_events(workdir / "sqnr.progress.jsonl")] if workdir is not None else []
    done = sum(1 for e in nodes if e.get("event") == "node")
    if done:
        kept.append(f"{done} node(s) done so far are kept in {workdir}; rerun the same command to resume from them")
    if not kept:
        return "interrupted before any node was measured; nothing was written"
    return "interrupted: " + "; ".join(kept)


def _one_study(cfg: SweepConfig, pm: Any, v: VariantConfig, qs: Any, opts: SensitivityOptions, workdir: Path,
               base: dict[str, Any], study: StudyResult, log: Callable[[str], None]) -> None:
    from quantbench.exporters.artifacts import onnx_input_info

    t_start = time.perf_counter()
    input_name = onnx_input_info(pm.fp32.path)[0]
    job = {"fp32": str(pm.fp32.path), "settings": qs.to_config(), "data": pm.dataset, "calib_data": pm.calib_data,
           "preprocess": pm.preprocess, "input_name": input_name, "sqnr_samples": opts.sqnr_samples,
           "eval_samples": pm.eval_samples, "batch": opts.batch, "threads": cfg.run.threads}
    n_eval = pm.dataset_info.get("n_evaluation") or pm.eval_samples  # the images there are, not those asked for
    local = opts.scan == "local"
    what = "each node's own output error (local scan)" if local else "SQNR of each node's models"
    log(f"{pm.label}/{v.name}: calibrating once, then {what} on {min(opts.sqnr_samples, n_eval)} images …")
    name = "local" if local else "sqnr"  # the same work folder: pre.onnx, ranges and the whole model are shared
    before = sum(1 for e in read_events(workdir / f"{name}.progress.jsonl") if e.get("event") == "node")
    if before and not local:  # an interrupted run with the same inputs (the folder's key): its finished nodes count
        log(f"{pm.label}/{v.name}: resuming: {before} node(s) already done in {workdir}")
    from quantbench.common.progress import labelled

    with labelled(f"{pm.label}/{v.name}"):
        events = run_worker_job({**job, "mode": "local" if local else "sensitivity"}, workdir, name,
                                cfg.run.timeout_s, log, "node", resume=not local)
    setup = next((e for e in events if e.get("event") == "setup"), {})
    whole = next((e for e in events if e.get("event") == "whole"), {})
    nodes = [e for e in events if e.get("event") == "node"]
    alone = [n for n in nodes if n.get("alone", True)]
    followers = [n["node"] for n in nodes if not n.get("alone", True)]
    keys = ("node", "op_type", "sqnr_quant_only_db", "sqnr_float_only_db", "seconds", "infer_seconds", "error")
    ranked = rank_nodes([{k: e.get(k) for k in keys + (("sqnr_local_db",) if local else ())} for e in alone],
                        "local" if local else opts.rank_by)
    t_sqnr = time.perf_counter() - t_start
    cost = scan_cost(events, local)

    top = [n["node"] for n in ranked if n.get("rank") and n["rank"] <= opts.top]
    accuracy: dict[str, dict[str, Any]] = {}
    whole_acc: dict[str, Any] = {}
    plan_note = "" if pm.labels_meaningful else (pm.accuracy.get("note") or "top-1 not computed for this model")
    if top and pm.labels_meaningful:
        log(f"{pm.label}/{v.name}: top-1 of the {len(top)} most sensitive nodes on {min(pm.eval_samples, n_eval)} "
            "images …")
        acc_events = run_worker_job({**job, "mode": "accuracy", "nodes": top}, workdir, "accuracy",
                                    cfg.run.timeout_s, log, "accuracy", resume=True)
        whole_acc = next((e for e in acc_events if e.get("event") == "whole_accuracy"), {})
        accuracy = {e["node"]: e for e in acc_events if e.get("event") == "accuracy"}
    fp32_top1 = whole_acc.get("top1_fp32")
    for n in ranked:
        a = accuracy.get(n["node"], {})
        q, f = a.get("top1_quant_only"), a.get("top1_float_only")
        n.update({
            **base, "kind": "sensitivity", "status": "failed" if n.get("error") else "ok",
            "error": n.get("error") or "",
            "timestamp": _now(), "sqnr_samples": whole.get("sqnr_samples"), "rank_by": opts.rank_by,
            "top1_quant_only": q, "top1_float_only": f, "top1_fp32": fp32_top1,
            "top1_drop_quant_only_pts": _pts(fp32_top1, q), "top1_drop_float_only_pts": _pts(fp32_top1, f),
            **loss_fields("top1_drop_quant_only", a.get("paired_quant_only")),
            **loss_fields("top1_drop_float_only", a.get("paired_float_only")),
            "accuracy_note": a.get("error") or ("" if a else plan_note if plan_note else
                                                "top-1 measured for the top candidates only"),
        })
        n["node_seconds"] = n.pop("seconds", None)  # both models: quantize_static + SQNR inference
        n["infer_seconds"] = n.get("infer_seconds")  # of which running the two models
        n["scan_mode"] = opts.scan
        if not local:  # this node's floor: two FP32 passes over the SQNR images
            floor = 2 * cost["fp32_pass_s"] if cost["fp32_pass_s"] else None
            n["node_floor_s"] = _sig(floor)
            n["node_time_ratio"] = _sig(n["node_seconds"] / floor) if floor and n["node_seconds"] else None
    study.rows = ranked
    study.summary = {
        **base, "kind": "sensitivity_summary", "status": "ok", "error": "", "timestamp": _now(),
        "nodes": len(ranked), "nodes_failed": sum(1 for n in ranked if n.get("error")), "rank_by": opts.rank_by,
        "not_quantized_alone": followers, "sqnr_whole_int8_db": whole.get("sqnr_db"),
        "sqnr_samples": whole.get("sqnr_samples"), "eval_samples": whole_acc.get("eval_samples"),
        "top1_fp32": fp32_top1, "top1_int8": whole_acc.get("top1_int8"),
        "top1_drop_int8_pts": _pts(fp32_top1, whole_acc.get("top1_int8")), "accuracy_note": plan_note,
        **loss_fields("top1_drop_int8", whole_acc.get("paired_int8")),
        "calibration_s": setup.get("calibration_s"), "sqnr_s": round(t_sqnr, 3),
        "calib_floor_s": setup.get("calib_floor_s"), "calib_time_ratio": setup.get("calib_time_ratio"),
        "calib_time_ratio_ci95": setup.get("calib_time_ratio_ci95"),
        "scan_mode": opts.scan, "scan_time_s": cost["scan_time_s"], "scan_floor_s": cost["scan_floor_s"],
        "scan_time_ratio": cost["scan_time_ratio"], "scan_time_ratio_ci95": cost["scan_time_ratio_ci95"],
        "scan_lanes": cost["scan_lanes"],
        "elapsed_s": round(time.perf_counter() - t_start, 3), "notes": setup.get("notes") or [],
    }
    budget = opts.budget if opts.budget is not None else qs.accuracy_budget
    if budget is not None:
        from quantbench.harness.studies.mixed_precision import search

        search(cfg, pm, v, qs, budget, [n["node"] for n in ranked if n.get("rank")], opts, workdir, base, study, log)
    study.summary["elapsed_s"] = round(time.perf_counter() - t_start, 3)


def scan_cost(events: list[dict[str, Any]], local: bool) -> dict[str, Any]:
    """The scan's time, its floor and their ratio from the worker's events.

    The floor is what the scan's forward passes cost on their own: one FP32 pass over the SQNR images
    (``fp32_pass_s``, timed in the worker at the scan's batch) for the whole model and two per node measured
    alone (a full scan), or the FP32 pass the activations come from and the whole model's (a local scan:
    ``passes`` in its ``local`` event). The time is the whole-model pass, setting up the per-node builds
    (``builder`` events) and every node's quantization and passes (full: the wall time of a worker's loop,
    its ``scan`` event, where it finished; the nodes' own seconds of a loop that was cut short), or the probed
    pass with the per-node work and the whole model's pass (local). ``scan_lanes``: the most nodes a loop
    measured at once (idle cores allowing); the floor stays that of one lane.
    """
    whole = next((e for e in events if e.get("event") == "whole"), {})
    unit, unit_ci = floor_unit(whole, [e for e in events if e.get("event") == "floor"])
    if local:
        done = next((e for e in events if e.get("event") == "local"), {})
        time_s, floor = done.get("seconds"), unit * done.get("passes", 1) if unit else None
    else:
        nodes = [e for e in events if e.get("event") == "node"]
        measured = [e for e in nodes if e.get("alone", True) and not e.get("error")]
        loops = [e for e in events if e.get("event") == "scan"]  # a worker's whole loop: its nodes' wall time
        covered = {n for e in loops for n in e.get("nodes") or []}
        time_s = (whole.get("seconds") or 0.0) + sum(e.get("seconds") or 0.0 for e in loops) + sum(
            e.get("seconds") or 0.0 for e in nodes if e.get("node") not in covered) + sum(
            e.get("seconds") or 0.0 for e in events if e.get("event") == "builder")  # setting up the per-node builds
        floor = unit * (1 + 2 * len(measured)) if unit else None
        lanes = max((e.get("lanes") or 1 for e in loops), default=1)
    ratio_ci = None
    if unit_ci and floor and time_s and not local:
        ratio_ci = [_sig(time_s / (floor * unit_ci[1] / unit)), _sig(time_s / (floor * unit_ci[0] / unit))]
    return {"fp32_pass_s": unit, "scan_time_s": _sig(time_s), "scan_floor_s": _sig(floor),
            "scan_time_ratio": _sig(time_s / floor) if floor and time_s is not None else None,
            "scan_time_ratio_ci95": ratio_ci, "scan_lanes": 1 if local else lanes}


def floor_unit(whole: dict[str, Any], later: list[dict[str, Any]],
               resamples: int = 2000) -> tuple[float | None, tuple[float, float] | None]:
    """One FP32 pass over the SQNR images, and its 95% interval, from the batches the worker timed: the pass before
    the scan (``whole``'s ``fp32_batches``) and the one after it (``floor`` events), pooled per image (a machine
    busier at the end than at the start widens the interval). The interval is a percentile bootstrap of the
    batches (seeded: reproducible); None below two batches. Events without batches: ``fp32_pass_s``, no interval."""
    import numpy as np

    first = whole.get("fp32_batches") or []
    batches = [b for b in first + [b for e in later for b in e.get("fp32_batches") or []] if b[0] > 0]
    images = sum(n for n, _ in first)
    if not first or not images:
        return whole.get("fp32_pass_s"), None
    n = np.array([b[0] for b in batches], float)
    t = np.array([b[1] for b in batches], float)
    unit = float(t.sum() / n.sum() * images)
    if len(batches) < 2:
        return unit, None
    idx = np.random.default_rng(0).integers(0, len(batches), (resamples, len(batches)))
    per_image = t[idx].sum(axis=1) / n[idx].sum(axis=1)
    lo, hi = np.quantile(per_image * images, [0.025, 0.975])
    return unit, (min(float(lo), unit), max(float(hi), unit))


def _sig(x: float | None) -> float | None:
    """5 significant digits (a tiny model's floor is milliseconds), None for None or 0."""
    return float(f"{x:.5g}") if x else None


def loss_fields(prefix: str, paired: dict[str, Any] | None) -> dict[str, Any]:
    """``{prefix}_ci95_pts`` ([lo, hi] top-1 points lost vs FP32, paired on the same images, 95%) and
    ``{prefix}_p`` (exact McNemar) from :func:`.accuracy_stats.paired_accuracy`'s fields (nulls without)."""
    if not paired:
        return {f"{prefix}_ci95_pts": None, f"{prefix}_p": None}
    lo, hi = paired["delta_top1_ci95"]
    return {f"{prefix}_ci95_pts": [round(-hi * 100 + 0.0, 4), round(-lo * 100 + 0.0, 4)],
            f"{prefix}_p": paired["delta_top1_p"]}


def _pts(reference: float | None, value: float | None) -> float | None:
    """Top-1 points lost from ``reference`` to ``value`` (None when either is missing)."""
    if reference is None or value is None:
        return None
    return round((reference - value) * 100, 4)
