"""Plan a sweep once, for any launcher: its cells, what to build, and which stored rows still hold.

A launcher (:mod:`harness.sweep.launch`) says where cells can run (an :class:`~harness.sweep.plan.Offer`:
this machine's runtimes and devices, or the targets of a Ray cluster's nodes); :func:`plan_sweep` turns
the config and that offer into a :class:`Plan` — the run id, the cells, rows about what nothing offers,
the artifacts to build (built here: their content is part of every cell's fingerprint), and for each
cell whether its stored row is reused, kept or measured again, with the reason (:mod:`harness.sweep.resume`).
:func:`announce` says so in the same words whichever launcher then measures the cells.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from quantbench.harness.config.schema import SweepConfig, VariantConfig
from quantbench.harness.measure.cell import MeasureSettings
from quantbench.harness.results.store import stored_rows
from quantbench.harness.sweep.cells import base_row, calibration_settings, describe, sweep_row
from quantbench.harness.sweep.output import RunError
from quantbench.harness.sweep.plan import Cell, Offer, Skip, expand_cells, unserved_devices
from quantbench.harness.sweep.prepare import PreparedModel, cache_dir, model_key, prepare_artifacts, resolve_models
from quantbench.harness.sweep.resume import combine, fingerprint_parts, model_content, reuse_decision

MAX_REASON_LINES = 10  # per-cell "re-measured" warnings before they are summarised

MEASURE, REUSE, KEEP = "measure", "reuse", "keep"  # what a plan does with a cell (KEEP: a good row, unchecked)


@dataclass
class Job:
    """A cell to measure, with its row so far and the inputs its fingerprint is taken over."""

    cell: Cell
    row: dict[str, Any]
    inputs: dict[str, Any]  # :func:`fingerprint_parts` keyword arguments, less ``env``

    def parts(self, env: dict[str, Any]) -> dict[str, str]:
        """The fingerprint groups of this cell measured under ``env``."""
        return fingerprint_parts(env=env, **self.inputs)

    def stamp(self, env: dict[str, Any]) -> None:
        """Record in the row that it is (to be) measured under ``env``: the env and its fingerprint."""
        parts = self.parts(env)
        self.row.update({"env": env, "fingerprint": combine(parts), "fingerprint_parts": parts})


@dataclass
class Decision:
    """What the plan does with one cell, and why (``why`` is "" for a new or retried cell)."""

    cell: Cell
    what: str  # the cell in words (:func:`describe`)
    action: str  # MEASURE, REUSE or KEEP
    why: str = ""


@dataclass
class Plan:
    """A sweep planned for one launcher's offer: everything decided before any cell is measured."""

    cfg: SweepConfig
    results: Path
    run_id: str
    env: dict[str, Any]  # this machine's environment (rows about the sweep itself carry it)
    offer: Offer
    models: list[PreparedModel]
    cells: list[Cell]
    measure: dict[str, Any]  # the timing settings every cell is measured with
    notes: list[str] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # rows about what nothing offers
    artifacts: dict[int, list[VariantConfig]] = field(default_factory=dict)  # model index -> variants to build
    decisions: list[Decision] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)  # the cells to measure, in order
    reused: list[dict[str, Any]] = field(default_factory=list)  # stored rows that still hold

    @property
    def unavailable(self) -> dict[str, str]:
        """Runtimes that do not run, and why."""
        return self.offer.runtimes.unavailable

    @property
    def already(self) -> int:
        """Cells whose stored rows stand (reused or kept)."""
        return sum(d.action != MEASURE for d in self.decisions)

    @property
    def remeasured(self) -> int:
        """Cells measured again because an input changed."""
        return sum(d.action == MEASURE and bool(d.why) for d in self.decisions)


def new_run_id() -> str:
    """A run's id: its UTC start time and a random suffix."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + os.urandom(3).hex()


def plan_sweep(cfg: SweepConfig, offer: Offer, env: dict[str, Any], results: Path, retry_failed: bool,
               log: Callable[[str], None]) -> Plan:
    """Plan ``cfg`` on ``offer``: expand the cells, build their artifacts, decide each stored row's fate.

    Writes nothing to ``results`` (the caller writes :attr:`Plan.skipped` and reaffirms :attr:`Plan.reused`);
    raises a one-line :class:`RunError` when there is nothing to run or ``results`` is not a results file.
    """
    resolution = offer.runtimes
    for name, reason in resolution.unavailable.items():
        log(f"runtime {name} unavailable: {reason}" if not resolution.explicit
            else f"warning: runtime {name} unavailable: {reason}")
    # Explicitly requested but unavailable runtimes get rows, so reports show why they are missing.
    skips = [Skip(f"unavailable:{name}", f"runtime unavailable: {reason}", name, "*")
             for name, reason in resolution.unavailable.items() if resolution.explicit] + offer.skips
    models = resolve_models(cfg)
    cells = expand_cells(cfg, offer.placements, [model_key(pm) for pm in models])
    notes = [offer.unserved(d) for d in unserved_devices(cfg, offer.placements)]
    for note in notes:
        log(f"warning: {note}")
    if not cells and not skips:
        raise RunError(offer.nothing_to_run(notes))
    stored = stored_rows(results, log)  # stops, in one line, on a file that is not only results
    run_id = new_run_id()
    plan = Plan(cfg, results, run_id, env, offer, models, cells,
                measure={f.name: getattr(cfg.run, f.name) for f in fields(MeasureSettings)}, notes=notes,
                skipped=[sweep_row(run_id, s.key, s.error, s.runtime, s.device, env, offer.sweep_fields(s.target))
                         for s in skips])
    for mi in sorted({c.model_index for c in cells}):
        variants = {c.variant.name for c in cells if c.model_index == mi}
        plan.artifacts[mi] = [v for v in cfg.variants if v.name in variants]
    # Artifacts are built (or found in the cache) for every cell, stored or not: their content is
    # part of the fingerprint that decides whether a stored row still holds.
    cache = cache_dir(cfg)
    for mi, variants in plan.artifacts.items():
        prepare_artifacts(models[mi], variants, cache, log)
    decide(plan, stored, retry_failed)
    return plan


def decide(plan: Plan, stored: dict[str, dict[str, Any]], retry_failed: bool) -> None:
    """Fill ``plan.decisions``, ``plan.jobs`` and ``plan.reused``: a stored row is reused when some
    environment its cell would be measured under gives the same fingerprint."""
    contents = {mi: model_content(plan.models[mi]) for mi in {c.model_index for c in plan.cells}}
    for cell in plan.cells:
        pm = plan.models[cell.model_index]
        what = describe(cell, pm)
        previous = stored.get(cell.cell_id)
        prep_error = pm.error or pm.artifact_errors.get(cell.variant.name, "")
        if prep_error and previous is not None and previous.get("status") == "ok":
            # Nothing to compare with and nothing better to offer: a good row is not replaced by a failure.
            plan.decisions.append(Decision(cell, what, KEEP, prep_error))
            continue
        envs = plan.offer.envs.get(cell.target) or []
        row = base_row(plan.run_id, cell, pm, envs[0] if envs else plan.env)
        row.update(plan.offer.row_fields(cell))
        job = Job(cell, row, {
            "measure": plan.measure, "pm": pm, "artifact_sha256": row["artifact_sha256"],
            "variant_settings": row["variant_settings"], "runtime": cell.runtime.name,
            "runtime_options": dict(cell.runtime.options), "device": cell.device,
            "model": contents[cell.model_index], "calibration": calibration_settings(cell, pm)})
        job.stamp(row["env"])
        row["measure_settings"] = plan.measure
        why = ""
        lost = previous is not None and (previous.get("fleet") or {}).get("lost")  # its node died: measure again
        if previous is not None and not lost:
            decisions = [reuse_decision(previous, row["fingerprint_parts"] if env is row["env"] else job.parts(env),
                                        env, retry_failed) for env in envs]
            if any(reuse for reuse, _ in decisions):
                plan.decisions.append(Decision(cell, what, REUSE))
                plan.reused.append(previous)
                continue
            why = next((w for _, w in decisions if w), "")
        plan.decisions.append(Decision(cell, what, MEASURE, why))
        plan.jobs.append(job)


def announce(plan: Plan, log: Callable[[str], None]) -> None:
    """Say what the plan keeps and why it measures cells again (first ``MAX_REASON_LINES`` cells by name,
    the rest counted by reason)."""
    unchecked: dict[str, str] = {}
    for d in plan.decisions:
        if d.action == KEEP:
            unchecked.setdefault(f"{plan.models[d.cell.model_index].label}/{d.cell.variant.name}", d.why)
    for what, error in unchecked.items():
        log(f"warning: {what}: stored rows kept without checking them: {error}")
    if plan.already:
        log(f"{plan.already} cell(s) already in {plan.results} with unchanged inputs: skipped "
            f"(delete the file to measure again)")
    reasons = [(d.what, d.why) for d in plan.decisions if d.action == MEASURE and d.why]
    for what, why in reasons[:MAX_REASON_LINES]:
        log(f"warning: {what}: re-measured, {why}")
    rest: dict[str, int] = {}
    for _, why in reasons[MAX_REASON_LINES:]:
        rest[why] = rest.get(why, 0) + 1
    for why, n in rest.items():
        log(f"warning: {n} more cell(s) re-measured, {why}")
