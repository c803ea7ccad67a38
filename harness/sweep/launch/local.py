"""The local launcher: each cell in its own contained subprocess on this machine, one after another."""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from quantbench.common.subproc import signal_guard
from quantbench.harness.measure.cell import CellSpec
from quantbench.harness.sweep.launch.base import Finish, Launcher, job_spec
from quantbench.harness.sweep.output import check_output_dir, output_lock
from quantbench.harness.sweep.plan import Offer, local_placements, resolve_runtimes
from quantbench.harness.sweep.planner import Plan


def run_worker(spec: CellSpec, workdir: Path, timeout_s: float) -> dict[str, Any]:
    """Measure one cell in a fresh, contained Python process; turn crashes and timeouts into a failed result."""
    from quantbench.harness.measure.worker import run_cell_worker

    return run_cell_worker(spec, workdir, timeout_s)


class LocalLauncher(Launcher):
    """Cells on this machine's runtimes and devices, measured in turn (never two at once: they would share cores)."""

    name = "local"

    @contextmanager
    def session(self, output: Path) -> Iterator[None]:
        from quantbench.common.progress import watch

        check_output_dir(output)
        # export, reference, calibration progress from the workers: logging records, or the CLI's own display
        with output_lock(output), signal_guard(), watch():
            yield

    def offer(self, env: dict[str, Any]) -> Offer:
        resolution = resolve_runtimes(self.cfg.run.runtimes)
        return Offer(resolution, local_placements(self.cfg, resolution.usable), envs={None: [env]})

    def launch(self, plan: Plan, finish: Finish) -> None:
        workdir = plan.results.parent / "cells" / plan.run_id  # private to this run
        for job in plan.jobs:
            t0 = time.perf_counter()
            spec = job_spec(plan, job)
            if spec is not None:
                job.row.update(run_worker(spec, workdir, plan.cfg.run.timeout_s))
            job.row["duration_s"] = round(time.perf_counter() - t0, 3)
            finish(job.row)
