"""The launcher interface: where a planned sweep's cells are measured.

As optimum-benchmark's launchers share ``Launcher.launch(worker, args)``, every quantbench launcher
answers the same three calls, and the sweep (:func:`harness.sweep.runner.run_sweep`) runs one way:
hold the :meth:`~Launcher.session`, ask for the :meth:`~Launcher.offer`, plan it
(:func:`harness.sweep.planner.plan_sweep`), then :meth:`~Launcher.launch` the plan's jobs. Rows are
written, counted and reported by the sweep, not the launcher: one place for messages and resume.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar

from quantbench.harness.config.schema import SweepConfig
from quantbench.harness.measure.cell import CellSpec
from quantbench.harness.sweep.cells import cell_job
from quantbench.harness.sweep.plan import Offer
from quantbench.harness.sweep.planner import Job, Plan

Finish = Callable[[dict[str, Any]], None]  # called with each cell's finished row, as it ends


class Launcher(ABC):
    """Measures a plan's cells somewhere: this machine (:mod:`.local`) or a Ray cluster (:mod:`.ray`)."""

    name: ClassVar[str]

    def __init__(self, cfg: SweepConfig, log: Callable[[str], None]) -> None:
        self.cfg, self.log = cfg, log

    @abstractmethod
    def session(self, output: Path) -> AbstractContextManager[None]:
        """What the whole sweep runs inside: the output folder checked and locked, SIGTERM/SIGINT handled,
        and whatever the launcher needs (a cluster connection). Fails in one line (``RunError``)."""

    @abstractmethod
    def offer(self, env: dict[str, Any]) -> Offer:
        """Where this launcher can run the sweep's cells (``env``: this machine's environment)."""

    @abstractmethod
    def launch(self, plan: Plan, finish: Finish) -> None:
        """Measure every job of ``plan`` (each cell in its own contained worker process) and call
        ``finish`` with each job's row, completed with the result, as its cell ends."""


def job_spec(plan: Plan, job: Job) -> CellSpec | None:
    """What the job's worker measures; None when the cell fails or is skipped before any worker runs (a model
    that could not be prepared, an artifact the runtime cannot load): then its row says so."""
    spec, error, skipped = cell_job(plan.cfg, job.cell, plan.models[job.cell.model_index], plan.measure)
    if error:
        job.row.update({"status": "failed", "error": error})
    elif skipped:
        job.row.update({"status": "skipped", "error": skipped})
    return spec
