"""Mixed precision under an accuracy budget: which nodes to keep in float so INT8 loses at most N points.

Greedy along the sensitivity ranking: step 0 is the variant as configured, step k keeps the k most
sensitive nodes in float. Each step's model is quantized from the study's one calibration
(:mod:`.node_quant`, in a contained worker) and measured as a normal cell on the runtime — the cell
worker's timed loop, interleaved speedup against FP32 and accuracy on the evaluation set
(:func:`.measure.measure_cell`, in a contained subprocess under ``run.timeout_s``). The search stops at
the first step that meets the budget; if none does, the budget row says so and names the best point found.

Selection and report use disjoint halves of the evaluation images (a label-stratified split, seed
:data:`HOLDOUT_SEED`, :func:`.accuracy.holdout_mask`), so the reported loss is not biased by the search:

- decision rule: a step meets the budget when its top-1 loss against FP32 (paired on the same images)
  on the *selection* half is at most the budget (a point estimate; the search compares many steps);
- report: the chosen step's top-1 and loss on the *other* half with the 95% paired interval (Newcombe)
  and exact McNemar p, and ``budget_check``: "within" (the interval's upper end of the loss is within
  the budget), "beyond" (its lower end exceeds it) or "not significantly beyond" (the interval spans it).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

# Measured fields a step row keeps from the cell (what they mean: quantbench/common/row.py, docs/row-schema.md).
STEP_FIELDS = ("status", "error", "top1", "top5", "agreement_top1", "max_abs_err", "eval_samples", "accuracy_note",
               "compute_p50_ms", "compute_p99_ms", "compute_mean_ms", "iterations", "stop_reason", "timing_valid",
               "speedup_interleaved", "speedup_interleaved_rounds", "speedup_error", "exec_precision",
               "int8_op_share", "load_avg", "speedup_interleaved_ci95", "speedup_stop_reason", "compute_p50_ci95",
               "interference", "timing_noisy", "timing_noisy_reason")
EPS_PTS = 1e-9  # top-1 is a ratio of counts: compare points without float noise
HOLDOUT_SEED = 0  # which half of the evaluation images selects (the other reports)


def _payload(path: Path, precision: str, fp32: Path) -> dict[str, Any]:
    from quantbench.exporters.artifacts import onnx_input_info

    name, shape, _ = onnx_input_info(path)
    return {"format": "onnx", "precision": precision, "path": str(path), "input_name": name,
            "input_shape": [d if isinstance(d, int) else -1 for d in shape], "reference_path": str(fp32),
            "settings": {}}


def _runtime_options(cfg: Any, runtime: str, log: Callable[[str], None]) -> dict[str, Any]:
    options = {}
    for key, value in (cfg.runtime_options.get(runtime) or {}).items():
        if isinstance(value, list):  # a swept option: the search measures one configuration
            log(f"warning: [runtime_options.{runtime}] {key} is swept; "
                f"the budget search uses its first value {value[0]!r}")
            value = value[0]
        options[key] = value
    return options


def check_runtime(cfg: Any, runtime: str, device: str) -> None:
    """The search's runtime exists, is available, runs ONNX INT8 on ``device``; else ConfigError (one line)."""
    from quantbench.harness.config.schema import ConfigError
    from quantbench.runtimes import Artifact, get_runtime_class

    options = _runtime_options(cfg, runtime, lambda _msg: None)

    try:
        cls = get_runtime_class(runtime)
    except (ValueError, ImportError) as exc:
        raise ConfigError(f"--runtime: {str(exc).splitlines()[0]}") from None
    avail = cls.availability()
    if not avail.ok:
        raise ConfigError(f"--runtime: {runtime} is not available here: {avail.reason}")
    if "onnx" not in cls.formats:
        raise ConfigError(f"--runtime: {runtime} does not run ONNX models (the search measures QDQ ONNX files)")
    reason = cls(device, options).supports(Artifact(format="onnx", precision="int8"))
    if reason:
        raise ConfigError(f"--runtime: {runtime}: {reason}")


def search(cfg: Any, pm: Any, v: Any, qs: Any, budget: float, ranking: list[str], opts: Any, workdir: Path,
           base: dict[str, Any], study: Any, log: Callable[[str], None]) -> None:
    """Greedy search; fills ``study.budget_steps`` (one row per step) and ``study.budget`` (the outcome)."""
    from quantbench.harness.measure.cell import CellSpec, MeasureSettings
    from quantbench.harness.studies.worker_jobs import now as _now
    from quantbench.harness.studies.worker_jobs import run_worker_job
    from quantbench.harness.sweep.launch.local import run_worker

    if not pm.labels_meaningful:
        raise ValueError(f"accuracy_budget needs top-1 on labelled data: {pm.accuracy.get('note') or 'no labels'}")
    options = _runtime_options(cfg, opts.runtime, log)
    batch = opts.budget_batch or cfg.run.batch_sizes[0]
    measure = {f.name: getattr(cfg.run, f.name) for f in fields(MeasureSettings)}
    fp32_payload = _payload(pm.fp32.path, "fp32", pm.fp32.path)
    plan = {**(pm.accuracy or {}), "holdout": {"seed": HOLDOUT_SEED}}  # per-half statistics from each cell
    cells = workdir / "cells"
    limit = len(ranking) if opts.max_float is None else min(opts.max_float, len(ranking))
    where = f"{opts.runtime} ({opts.device}), batch {batch}"

    def cell(cell_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        spec = CellSpec(cell_id=cell_id, runtime=opts.runtime, device=opts.device, batch=batch,
                        runtime_options=options, artifact=payload,
                        interleave_with=fp32_payload if payload["precision"] != "fp32" else None,
                        data={"dataset": pm.dataset, "preprocess": pm.preprocess, "eval_samples": pm.eval_samples,
                              "seed": 0},
                        measure=measure, reference_logits=pm.reference, accuracy=plan)
        return run_worker(spec, cells, cfg.run.timeout_s)

    common = {**base, "runtime": opts.runtime, "device": opts.device, "batch": batch, "budget_pts": budget}
    log(f"{pm.label}/{v.name}: accuracy budget {budget:g} points on {where}: measuring FP32 …")
    ref = cell("budget-fp32", fp32_payload)
    if ref.get("status") != "ok" or ref.get("top1") is None:
        raise ValueError(f"FP32 reference on {where} failed: {ref.get('error') or ref.get('accuracy_note')}")
    fp32_top1 = ref["top1"]
    study.budget_steps.append({**common, "kind": "budget_step", "step": None, "label": "fp32", "nodes_float": None,
                               "added_node": None, "timestamp": _now(), "top1_fp32": fp32_top1,
                               "drop_pts": selection_drop(ref), "meets_budget": True, "chosen": False,
                               "holdout": ref.get("holdout"), **{k: ref.get(k) for k in STEP_FIELDS}})
    chosen: dict[str, Any] | None = None
    for k in range(limit + 1):
        kept = ranking[:k]
        out = workdir / f"step{k}.onnx"
        job = {"mode": "quantize", "fp32": str(pm.fp32.path), "settings": qs.to_config(), "data": pm.dataset,
               "calib_data": pm.calib_data, "preprocess": pm.preprocess, "input_name": fp32_payload["input_name"],
               "exclude": kept, "out": str(out)}
        row = {**common, "kind": "budget_step", "step": k, "label": f"{k} float", "nodes_float": kept,
               "added_node": kept[-1] if kept else None, "timestamp": _now(), "top1_fp32": fp32_top1}
        try:
            run_worker_job(job, workdir, f"step{k}", cfg.run.timeout_s, log, "quantized")
            from quantbench.exporters.artifacts import artifact_size

            row["size_bytes"] = artifact_size(out)
            measured = cell(f"budget-step{k}", _payload(out, "int8", pm.fp32.path))
        except Exception as exc:  # noqa: BLE001 - a failed step is a row; the search goes on
            from quantbench.harness.measure.worker import one_line

            measured = {"status": "failed", "error": one_line(exc)}
        row.update({f: measured.get(f) for f in STEP_FIELDS})
        row["holdout"] = measured.get("holdout")
        drop = selection_drop(measured)  # the decision looks at the selection half only
        row["drop_pts"] = drop
        row["meets_budget"] = drop is not None and drop <= budget + EPS_PTS
        row["chosen"] = False
        out.unlink(missing_ok=True)
        study.budget_steps.append(row)
        p50 = row.get("compute_p50_ms")
        log(f"  step {k} ({len(kept)} node(s) float{': + ' + kept[-1] if kept else ''}): "
            + (f"top-1 {row['top1'] * 100:.2f}%, loss on the selection half {drop:.2f} pts" if drop is not None
               else f"top-1 {row['top1'] * 100:.2f}%, no paired loss" if row.get("top1") is not None
               else f"failed: {row.get('error')}")
            + (f", p50 {p50:.3f} ms" if isinstance(p50, (int, float)) else ""))
        if row["meets_budget"]:
            chosen = row
            break
    steps = [s for s in study.budget_steps if s.get("step") is not None and s.get("drop_pts") is not None]
    met = chosen is not None
    if not met and steps:  # the best found on the selection half: least loss, then fewest float nodes
        chosen = min(steps, key=lambda s: (s["drop_pts"], len(s["nodes_float"])))
    if chosen is not None:
        chosen["chosen"] = True
    study.budget = {
        **common, "kind": "budget", "timestamp": _now(), "status": "ok" if chosen else "failed",
        "error": "" if chosen else "no step could be measured", "met": met, "top1_fp32": fp32_top1,
        "steps": len([s for s in study.budget_steps if s.get("step") is not None]),
        "max_float": limit, "candidates": len(ranking),
        "chosen_step": chosen.get("step") if chosen else None,
        "exclude_nodes": list(qs.exclude_nodes) + list(chosen["nodes_float"]) if chosen else None,
        **held_out_report(chosen, budget),
        "compute_p50_ms": chosen.get("compute_p50_ms") if chosen else None,
        "speedup_interleaved": chosen.get("speedup_interleaved") if chosen else None,
        "fp32_compute_p50_ms": ref.get("compute_p50_ms"),
    }
    study.budget["message"] = _message(met, chosen, budget, limit, len(ranking), study.budget)
    log(f"{pm.label}/{v.name}: {study.budget['message']}")


def selection_drop(measured: dict[str, Any]) -> float | None:
    """Top-1 points lost against FP32 on the selection half (None when the cell has no paired top-1)."""
    sel = (measured.get("holdout") or {}).get("select")
    return round(-sel["delta_top1"] * 100 + 0.0, 4) if sel else None


def held_out_report(chosen: dict[str, Any] | None, budget: float) -> dict[str, Any]:
    """The budget row's figures for the chosen step, from the half of the images the search did not see."""
    split = (chosen or {}).get("holdout") or {}
    rep, sel = split.get("report"), split.get("select")
    if not rep:
        return {"top1": None, "drop_pts": None, "drop_ci95_pts": None, "drop_p": None, "budget_check": None,
                "evaluated_on": "", "select_n": None, "report_n": None}
    lo, hi = rep["delta_top1_ci95"]
    drop_lo, drop_hi = round(-hi * 100 + 0.0, 4), round(-lo * 100 + 0.0, 4)
    check = "within" if drop_hi <= budget + EPS_PTS else "beyond" if drop_lo > budget + EPS_PTS else \
        "not significantly beyond"
    return {"top1": rep["top1"], "top1_ci95": rep["top1_ci95"], "drop_pts": round(-rep["delta_top1"] * 100 + 0.0, 4),
            "drop_ci95_pts": [drop_lo, drop_hi], "drop_p": rep["delta_top1_p"], "budget_check": check,
            "selection_drop_pts": chosen.get("drop_pts") if chosen else None, "select_n": sel["n"] if sel else None,
            "report_n": rep["n"],
            "evaluated_on": (f"selected on {sel['n'] if sel else '?'} evaluation images (a label-stratified half, seed "
                             f"{split.get('seed')}); reported on the other {rep['n']}")}


def _message(met: bool, chosen: dict[str, Any] | None, budget: float, limit: int, candidates: int,
             report: dict[str, Any] | None = None) -> str:
    if chosen is None:
        return "budget search failed: no step could be measured"
    n = len(chosen["nodes_float"])
    rule = (f"rule: top-1 loss vs FP32 on the selection half ≤ {budget:g} points; {n} node(s) in float, loss "
            f"{chosen['drop_pts']:.2f} pts there")
    held = ""
    if report and report.get("drop_ci95_pts"):
        lo, hi = report["drop_ci95_pts"]
        held = (f"; on the {report['report_n']} held-out images: top-1 "
                f"{report['top1'] * 100:.2f}%, loss {report['drop_pts']:.2f} pts (95% interval {lo:.2f} to {hi:.2f}, "
                f"McNemar p = {report['drop_p']:.3g}): {report['budget_check']} the budget at 95%")
    if met:
        return f"budget of {budget:g} points met ({rule}){held}"
    tried = (f"up to {limit} of {candidates} node(s) in float" if limit < candidates
             else f"all {candidates} node(s) tried")
    return f"budget of {budget:g} points NOT met ({tried}); best found ({rule}){held}"
