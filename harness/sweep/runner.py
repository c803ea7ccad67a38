"""Run a sweep: plan it once, hand it to a launcher, append rows as cells end.

Nothing measured is lost: each row is appended and fsynced as its cell ends, a crashing or hanging
runtime fails only its own cell (each cell's worker is contained: killed on timeout, with the sweep,
or on SIGTERM/SIGINT), and a rerun skips cells whose stored row was measured under the same inputs
(:mod:`harness.sweep.resume`). One run at a time per output directory (a lock file).

The same steps whichever launcher measures the cells (:mod:`harness.sweep.launch`: this machine, or a
Ray cluster with ``run.ray``): the launcher's :meth:`~Launcher.offer` says where cells can run, the
planner (:mod:`harness.sweep.planner`) decides what to build and measure, this module writes the rows
about the sweep, says what the plan keeps and why it measures again, and counts every row written.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantbench.harness.config.schema import SweepConfig
from quantbench.harness.results.store import append_row, reaffirm_rows
from quantbench.harness.sweep.cells import calibration_cost
from quantbench.harness.sweep.environment import fingerprint
from quantbench.harness.sweep.launch.base import Launcher
from quantbench.harness.sweep.output import RESULTS_FILE, RunError, check_output_dir, output_lock
from quantbench.harness.sweep.planner import announce, plan_sweep

__all__ = ["RESULTS_FILE", "RunError", "SweepSummary", "calibration_cost", "check_output_dir", "default_log",
           "launcher_for", "output_lock", "run_sweep"]

logger = logging.getLogger("quantbench")


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

    def count(self, row: dict[str, Any]) -> None:
        """Add a written row to the counts."""
        if row["status"] == "ok":
            self.ran += 1
        elif row["status"] == "failed":
            self.failed += 1
        else:
            self.skipped += 1


def default_log(msg: str) -> None:
    """A sweep message to the ``"quantbench"`` logger, at the level its prefix says (``error:``, ``warning:``)."""
    level = (logging.ERROR if msg.startswith("error: ") else logging.WARNING if msg.startswith("warning: ")
             else logging.INFO)
    logger.log(level, msg)


def launcher_for(cfg: SweepConfig, log: Callable[[str], None]) -> Launcher:
    """The launcher ``cfg`` asks for: a Ray cluster with ``run.ray``, else this machine."""
    if cfg.run.ray:
        from quantbench.harness.sweep.launch.ray import RayLauncher

        return RayLauncher(cfg, log)
    from quantbench.harness.sweep.launch.local import LocalLauncher

    return LocalLauncher(cfg, log)


def run_sweep(cfg: SweepConfig, output: Path, retry_failed: bool = False,
              log: Callable[[str], None] = default_log, progress: Callable[[int], Any] | None = None,
              on_row: Callable[[dict[str, Any]], None] | None = None,
              on_plan: Callable[[int], None] | None = None) -> SweepSummary:
    """Run every cell of ``cfg`` whose stored row in ``output/results.jsonl`` is missing or out of date.

    One run at a time per output directory (a lock file); SIGTERM/SIGINT kill the running worker
    and raise (``KeyboardInterrupt``); rows already written stay. With ``run.ray`` set the cells run
    on a Ray cluster (:mod:`harness.sweep.launch.ray`). ``on_plan`` gets the number of cells to
    measure, ``on_row`` and ``progress`` each measured (or failed, or skipped) cell's row as it ends.
    """
    launcher = launcher_for(cfg, log)
    results = output / RESULTS_FILE
    summary = SweepSummary(results_path=results)
    with launcher.session(output):
        env = fingerprint()
        plan = plan_sweep(cfg, launcher.offer(env), env, results, retry_failed, log)
        summary.run_id, summary.notes, summary.unavailable = plan.run_id, list(plan.notes), dict(plan.unavailable)
        for row in plan.skipped:
            append_row(results, row)
            summary.count(row)
        reaffirm_rows(results, plan.reused, plan.run_id)  # reused rows of an older generation become the latest again
        summary.already, summary.remeasured = plan.already, plan.remeasured
        announce(plan, log)
        if on_plan:
            on_plan(len(plan.jobs))

        def finish(row: dict[str, Any]) -> None:
            row.setdefault("duration_s", None)
            append_row(results, row)
            summary.count(row)
            if on_row:
                on_row(row)
            if progress:
                progress(1)

        launcher.launch(plan, finish)
    return summary
