"""The cell worker: measure one cell in a fresh, contained Python process.

``python -m quantbench.harness.measure.worker SPEC.json OUT.json`` (:mod:`quantbench.common.worker_protocol`):
OUT.json gets the measured fields or a one-line error. :func:`run_cell_worker` is the parent's side: it
turns every way a worker can end (an error it reported, a crash, a timeout) into a result a row can take.
"""
from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from quantbench.common.worker_protocol import one_line, run_worker, worker_main

__all__ = ["main", "measure", "one_line", "run_cell_worker"]  # one_line: still imported from here by launchers


def run_cell_worker(spec: Any, workdir: Path, timeout_s: float) -> dict[str, Any]:
    """Measure ``spec`` (a :class:`~quantbench.harness.measure.cell.CellSpec`) in a worker under ``workdir``.

    Returns the worker's fields with ``status`` "ok", or ``{"status": "failed", "error": one line}``:
    the worker's own error, or how it ended ("timed out after 600 s (log: …)", "crashed with SIGSEGV: …").
    Files: ``CELL.spec.json``, ``CELL.out.json``, ``CELL.log`` in ``workdir``.
    """
    log_path = workdir / f"{spec.cell_id}.log"
    outcome = run_worker("quantbench.harness.measure.worker", asdict(spec), timeout_s=timeout_s, log_path=log_path,
                         job_path=workdir / f"{spec.cell_id}.spec.json", out_path=workdir / f"{spec.cell_id}.out.json")
    if outcome.ok:  # written before any hang at exit: the measurement stands
        return outcome.result
    return {"status": "failed", "error": outcome.failure()}


def measure(payload: dict[str, Any]) -> dict[str, Any]:
    """The worker's job: the cell's measured fields (``status`` "ok"); raises on any failure."""
    from quantbench.harness.measure.cell import CellSpec, measure_cell
    from quantbench.harness.results.store import clean_floats

    return clean_floats({"status": "ok", "error": "", **measure_cell(CellSpec(**payload))})


def _default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def main(argv: list[str] | None = None) -> int:
    return worker_main(measure, argv, json_default=_default, allow_nan=False)


if __name__ == "__main__":
    sys.exit(main())
