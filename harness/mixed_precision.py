"""Mixed precision under an accuracy budget: which nodes to keep in float so INT8 loses at most N points.

Greedy along the sensitivity ranking: step 0 is the variant as configured, step k keeps the k most
sensitive nodes in float. Each step's model is quantized from the study's one calibration
(:mod:`.node_quant`, in a contained worker) and measured as a normal cell on the runtime — the cell
worker's timed loop, interleaved speedup against FP32 and accuracy on the evaluation set
(:func:`.measure.measure_cell`, in a contained subprocess under ``run.timeout_s``). The search stops at
the first step whose top-1 is within the budget of FP32's top-1 measured the same way; if none is,
the budget row says so and names the best point found.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

# Measured fields a step row keeps from the cell (what they mean: see harness/results.py).
STEP_FIELDS = ("status", "error", "top1", "top5", "agreement_top1", "max_abs_err", "eval_samples", "accuracy_note",
               "compute_p50_ms", "compute_p99_ms", "compute_mean_ms", "iterations", "stop_reason", "timing_valid",
               "speedup_interleaved", "speedup_interleaved_rounds", "speedup_error", "exec_precision",
               "int8_op_share", "load_avg")
EPS_PTS = 1e-9  # top-1 is a ratio of counts: compare points without float noise


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
            log(f"warning: [runtime_options.{runtime}] {key} is swept; the budget search uses its first value {value[0]!r}")
            value = value[0]
        options[key] = value
    return options


def check_runtime(cfg: Any, runtime: str, device: str) -> None:
    """The search's runtime exists, is available, runs ONNX INT8 on ``device``; else ConfigError (one line)."""
    from quantbench.runtimes import Artifact, get_runtime_class

    from .config import ConfigError

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
    from .measure import CellSpec, MeasureSettings
    from .runner import _run_worker
    from .sensitivity import _now, _pts, run_worker_job

    if not pm.labels_meaningful:
        raise ValueError(f"accuracy_budget needs top-1 on labelled data: {pm.accuracy.get('note') or 'no labels'}")
    options = _runtime_options(cfg, opts.runtime, log)
    batch = opts.budget_batch or cfg.run.batch_sizes[0]
    measure = {f.name: getattr(cfg.run, f.name) for f in fields(MeasureSettings)}
    fp32_payload = _payload(pm.fp32.path, "fp32", pm.fp32.path)
    cells = workdir / "cells"
    limit = len(ranking) if opts.max_float is None else min(opts.max_float, len(ranking))
    where = f"{opts.runtime} ({opts.device}), batch {batch}"

    def cell(cell_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        spec = CellSpec(cell_id=cell_id, runtime=opts.runtime, device=opts.device, batch=batch,
                        runtime_options=options, artifact=payload,
                        interleave_with=fp32_payload if payload["precision"] != "fp32" else None,
                        data={"dataset": pm.dataset, "preprocess": pm.preprocess, "eval_samples": pm.eval_samples,
                              "seed": 0},
                        measure=measure, reference_logits=pm.reference, accuracy=pm.accuracy)
        return _run_worker(spec, cells, cfg.run.timeout_s)

    common = {**base, "runtime": opts.runtime, "device": opts.device, "batch": batch, "budget_pts": budget}
    log(f"{pm.label}/{v.name}: accuracy budget {budget:g} points on {where}: measuring FP32 …")
    ref = cell("budget-fp32", fp32_payload)
    if ref.get("status") != "ok" or ref.get("top1") is None:
        raise ValueError(f"FP32 reference on {where} failed: {ref.get('error') or ref.get('accuracy_note')}")
    fp32_top1 = ref["top1"]
    study.budget_steps.append({**common, "kind": "budget_step", "step": None, "label": "fp32", "nodes_float": None,
                               "added_node": None, "timestamp": _now(), "top1_fp32": fp32_top1,
                               "drop_pts": 0.0, "meets_budget": True, "chosen": False,
                               **{k: ref.get(k) for k in STEP_FIELDS}})
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
            from .worker import one_line

            measured = {"status": "failed", "error": one_line(exc)}
        row.update({f: measured.get(f) for f in STEP_FIELDS})
        drop = _pts(fp32_top1, row.get("top1"))
        row["drop_pts"] = drop
        row["meets_budget"] = drop is not None and drop <= budget + EPS_PTS
        row["chosen"] = False
        out.unlink(missing_ok=True)
        study.budget_steps.append(row)
        p50 = row.get("compute_p50_ms")
        log(f"  step {k} ({len(kept)} node(s) float{': + ' + kept[-1] if kept else ''}): "
            + (f"top-1 {row['top1'] * 100:.2f}% ({-drop + 0.0:+.2f} pts)" if row.get("top1") is not None
               else f"failed: {row.get('error')}")
            + (f", p50 {p50:.3f} ms" if isinstance(p50, (int, float)) else ""))
        if row["meets_budget"]:
            chosen = row
            break
    steps = [s for s in study.budget_steps if s.get("step") is not None and s.get("top1") is not None]
    met = chosen is not None
    if not met and steps:  # the best found: highest top-1, then fewest float nodes
        chosen = max(steps, key=lambda s: (s["top1"], -len(s["nodes_float"])))
    if chosen is not None:
        chosen["chosen"] = True
    study.budget = {
        **common, "kind": "budget", "timestamp": _now(), "status": "ok" if chosen else "failed",
        "error": "" if chosen else "no step could be measured", "met": met, "top1_fp32": fp32_top1,
        "steps": len([s for s in study.budget_steps if s.get("step") is not None]),
        "max_float": limit, "candidates": len(ranking),
        "chosen_step": chosen.get("step") if chosen else None,
        "exclude_nodes": list(qs.exclude_nodes) + list(chosen["nodes_float"]) if chosen else None,
        "top1": chosen.get("top1") if chosen else None, "drop_pts": chosen.get("drop_pts") if chosen else None,
        "compute_p50_ms": chosen.get("compute_p50_ms") if chosen else None,
        "speedup_interleaved": chosen.get("speedup_interleaved") if chosen else None,
        "fp32_compute_p50_ms": ref.get("compute_p50_ms"),
        "message": _message(met, chosen, budget, limit, len(ranking)),
    }
    log(f"{pm.label}/{v.name}: {study.budget['message']}")


def _message(met: bool, chosen: dict[str, Any] | None, budget: float, limit: int, candidates: int) -> str:
    if chosen is None:
        return "budget search failed: no step could be measured"
    n = len(chosen["nodes_float"])
    what = f"{n} node(s) in float, top-1 {chosen['top1'] * 100:.2f}% ({-chosen['drop_pts'] + 0.0:+.2f} pts vs FP32)"
    if met:
        return f"budget of {budget:g} points met with {what}"
    tried = f"up to {limit} of {candidates} node(s) in float" if limit < candidates else f"all {candidates} node(s) tried"
    return f"budget of {budget:g} points NOT met ({tried}); best found: {what}"
