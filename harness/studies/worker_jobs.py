"""Sensitivity-worker jobs, shared by the scan (:mod:`.sensitivity`) and the budget search
(:mod:`.mixed_precision`): run one to completion through the worker protocol, restarting after a
timeout or crash, and read its progress lines."""
from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from quantbench.common.row_file import NOT_JSON, iter_json_lines


def now() -> str:
    """UTC timestamp to the second, as the study rows write it."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_events(path: Path) -> list[dict[str, Any]]:
    """The worker's progress lines (a truncated last line, from a kill mid-write, is ignored), read by the one
    JSON Lines reader (:func:`quantbench.common.row_file.iter_json_lines`)."""
    if not path.exists():
        return []
    return [event for _, event, _ in iter_json_lines(path) if event is not NOT_JSON]


def run_worker_job(job: dict[str, Any], workdir: Path, name: str, timeout_s: float,
                   log: Callable[[str], None], item_event: str, resume: bool = False) -> list[dict[str, Any]]:
    """Run a sensitivity-worker job to completion, restarting it after a timeout or crash.

    A restart skips the items already finished (``item_event`` events); an item the worker was on
    when it died without finishing anything is recorded as failed (an ``item_event`` with
    ``error``), so one hanging node costs one timeout, not the study. With ``resume`` the items a
    previous run left in ``workdir`` (one keyed by every input that changes the numbers, see
    :func:`.sensitivity.study_dir`) count as finished too. Returns every event.
    """
    from quantbench.common.worker_protocol import run_worker

    progress = workdir / f"{name}.progress.jsonl"
    if resume and progress.exists():  # keep what finished; a previous end (done, error, a node begun) is not this one's
        kept = [e for e in read_events(progress) if e.get("event") not in ("done", "error", "start")]
        progress.write_text("".join(json.dumps(e) + "\n" for e in kept))
    else:
        progress.unlink(missing_ok=True)
    job = {**job, "progress": str(progress), "workdir": str(workdir)}
    attempt = 0
    while True:
        attempt += 1
        events = read_events(progress)
        done = [e["node"] for e in events if e.get("event") == item_event]
        skip = done + (["whole"] if any(e.get("event", "").startswith("whole") for e in events) else [])
        log_path = workdir / f"{name}.{attempt}.log"
        before = len(events)
        outcome = run_worker("quantbench.harness.studies.sensitivity_worker", {**job, "skip": skip},
                             timeout_s=timeout_s, log_path=log_path, job_path=workdir / f"{name}.job.json",
                             out_path=workdir / f"{name}.out.json")
        events = read_events(progress)
        if outcome.ok:
            return events
        if outcome.error:  # the job itself failed (a node's own failure is its event): no restart helps
            raise ValueError(f"{outcome.error} (log: {log_path})")
        why = outcome.reason()
        new = events[before:]
        finished_some = any(e.get("event") in (item_event, "setup") or e.get("event", "").startswith("whole")
                            for e in new)
        started = [e["node"] for e in new if e.get("event") == "start"]
        if not finished_some:
            if not started:
                raise ValueError(outcome.failure("sensitivity worker"))
            culprit = started[-1]
            log(f"warning: node {culprit}: worker {why}; recorded as failed, continuing with the next node")
            _append(progress, {"event": item_event, "node": culprit, "error": outcome.failure("worker")})
        else:
            log(f"sensitivity worker {why} after finishing some nodes: continuing where it stopped")


def _append(path: Path, event: dict[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(event) + "\n")
