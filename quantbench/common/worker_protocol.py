"""One protocol for every contained Python worker: a JSON payload in, a result or a one-line error out.

Parent side: :func:`run_worker` writes the payload to a file, runs ``python -m MODULE JOB.json OUT.json``
with :func:`.subproc.run_contained` (its own process group; killed on timeout, with its parent, on
SIGTERM/SIGINT) and reads OUT.json back as a :class:`WorkerOutcome`, whose :meth:`~WorkerOutcome.failure`
is the one line saying why there is no result: the child's own one-line error, or how the process ended
(timed out, crashed with a signal, exited with a status, ended without a result), with its last log line
and the log's path.

Child side: ``sys.exit(worker_main(fn))`` reads the payload, watches its parent
(:func:`.subproc.watch_parent`), runs ``fn(payload)`` and writes ``{"result": …, "peak_rss_mb": …}``, or
``{"error": "one line"}`` with the traceback in the log. A result written stands even if the process then
hangs or crashes on its way out. :func:`mark_stage` lines in the log say where a worker that gave no
result was.

Used by the cell worker, the preparation and export workers, quantization, QAT and the sensitivity worker.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .subproc import ContainedResult, run_contained, watch_parent

STAGE_PREFIX = "stage: "
_DETAIL_CHARS = 200  # of the log's last line in a failure text
# Exception types whose message says everything: their one line leaves the type name out.
_SELF_EXPLAINING = {"RuntimeFailure", "RuntimeUnavailable", "DataError", "ValueError", "ConfigError"}


def one_line(exc: BaseException) -> str:
    """A single line describing ``exc`` (first line of its message, with the type when unclear)."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return msg if (name in _SELF_EXPLAINING and msg) else f"{name}: {msg}" if msg else name


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MiB (unrounded): the kernel's ``VmHWM``.

    ``ru_maxrss`` (the fallback where /proc is missing) survives ``exec``, so a worker started by a large
    process reported its parent's size (a 158 MiB preparation worker read 634 MiB when started from a
    test process that had run a sweep).
    """
    kib = _status_kib("VmHWM:")
    return (kib if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def rss_mb() -> float:
    """This process's resident memory now, MiB (``VmRSS``; 0.0 where /proc is missing)."""
    kib = _status_kib("VmRSS:")
    return kib / 1024 if kib is not None else 0.0


def mark_stage(name: str) -> None:
    """In a worker: say in its log that it entered stage ``name`` (:meth:`WorkerOutcome.stage` reads it back)."""
    print(f"{STAGE_PREFIX}{name}", flush=True)


@dataclass
class WorkerOutcome:
    """What a worker left: its result, or its one-line error, or neither (see ``process``)."""

    result: Any  # what ``fn`` returned (None when it returned nothing or gave no result)
    error: str  # the child's own one-line error ("" when none)
    done: bool  # the child wrote its result (an error is not one)
    peak_rss_mb: float | None  # the child's peak resident memory when ``fn`` returned, MiB (0.1)
    process: ContainedResult
    log_path: Path
    timeout_s: float | None
    unreadable: bool = False  # OUT.json was there but not JSON

    @property
    def ok(self) -> bool:
        return self.done and not self.error

    def stage(self) -> str:
        """The last :func:`mark_stage` name in the log ("" when there is none)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        stages = [ln[len(STAGE_PREFIX):].strip() for ln in lines if ln.startswith(STAGE_PREFIX)]
        return stages[-1] if stages else ""

    def reason(self) -> str:
        """How the process ended without a result: "timed out after 8 s", "crashed with SIGSEGV", …"""
        if self.unreadable:
            return "wrote an unreadable result"
        return self.process.describe(self.timeout_s) or "ended without a result"

    def failure(self, what: str = "", timeout_hint: str = "") -> str:
        """One line: why there is no result ("" when there is one).

        The child's own error as ``"{what} failed: {error}"`` (just the error without ``what``); else
        ``"{what} {reason}: {last log line} (log: PATH)"``, the last line left out after a timeout (it
        says only where the child was) and ``timeout_hint`` added after one.
        """
        if self.ok:
            return ""
        if self.error:
            return f"{what} failed: {self.error}" if what else self.error
        text = f"{what} {self.reason()}" if what else self.reason()
        if self.process.timed_out:
            text += f": {timeout_hint}" if timeout_hint else ""
        else:
            last = self.last_line()
            text += f": {last[:_DETAIL_CHARS]}" if last else ""
        return f"{text} (log: {self.log_path})"

    def last_line(self) -> str:
        """The log's last non-empty line that is not a stage mark ("" when none)."""
        for line in reversed(self.process.log_tail.splitlines()):
            if line.strip() and not line.startswith(STAGE_PREFIX):
                return line.strip()
        return ""


def run_worker(module: str, payload: Any, *, timeout_s: float | None, log_path: Path | str,
               job_path: Path | str | None = None, out_path: Path | str | None = None,
               env: Mapping[str, str] | None = None, cwd: Path | str | None = None) -> WorkerOutcome:
    """Run ``python -m module JOB OUT`` contained (:func:`.subproc.run_contained`) on ``payload``.

    ``payload`` is written as JSON to ``job_path`` (default: beside ``log_path``, ``*.job.json``); the
    child's answer is read from ``out_path`` (``*.out.json``). Never raises for the child's fate (a
    timeout, a crash, an error it reported: see :class:`WorkerOutcome`); raises OSError when the files
    cannot be written or the child cannot be started.
    """
    log_path = Path(log_path)
    job_path = Path(job_path) if job_path is not None else log_path.with_suffix(".job.json")
    out_path = Path(out_path) if out_path is not None else log_path.with_suffix(".out.json")
    job_path.parent.mkdir(parents=True, exist_ok=True)
    job_path.write_text(json.dumps(payload, default=str))
    out_path.unlink(missing_ok=True)
    process = run_contained([sys.executable, "-m", module, str(job_path), str(out_path)], timeout_s=timeout_s,
                            log_path=log_path, env=env, cwd=cwd)
    answer: dict[str, Any] = {}
    unreadable = False
    if out_path.exists():
        try:
            answer = json.loads(out_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            unreadable = True
        if not isinstance(answer, dict):
            answer, unreadable = {}, True
    error = str(answer.get("error") or "")
    return WorkerOutcome(result=answer.get("result"), error=error, done="result" in answer,
                         peak_rss_mb=answer.get("peak_rss_mb"), process=process, log_path=log_path,
                         timeout_s=timeout_s, unreadable=unreadable)


def worker_main(fn: Callable[[Any], Any], argv: list[str] | None = None, *,
                describe: Callable[[BaseException], str] = one_line,
                json_default: Callable[[Any], Any] = str, allow_nan: bool = True) -> int:
    """The body of a worker's ``main``: ``python -m MODULE JOB.json OUT.json`` runs ``fn(payload)``.

    OUT.json gets ``{"result": fn's return, "peak_rss_mb": …}`` or ``{"error": describe(exc)}`` (one
    line; the traceback goes to stderr, i.e. the log); ``json_default``/``allow_nan`` encode the result.
    Written atomically, so a kill mid-write leaves no half file. Returns the exit status (1 on an error).
    """
    args = sys.argv[1:] if argv is None else argv
    job_path, out_path = Path(args[0]), Path(args[1])
    watch_parent()  # die with the parent even where the parent-death signal is not available
    answer: dict[str, Any]
    try:
        answer = {"result": fn(json.loads(job_path.read_text())), "peak_rss_mb": round(peak_rss_mb(), 1)}
    except Exception as exc:  # noqa: BLE001 - every failure reaches the parent, in one line
        traceback.print_exc()
        answer = {"error": describe(exc)}
    try:
        text = json.dumps(answer, default=json_default, allow_nan=allow_nan)
    except (TypeError, ValueError) as exc:
        traceback.print_exc()
        answer = {"error": f"the worker's result cannot be written as JSON: {one_line(exc)}"}
        text = json.dumps(answer)
    tmp = out_path.with_name(f"{out_path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, out_path)
    return 1 if "error" in answer else 0
