"""Progress of the long phases a sweep waits on: export, FP32 reference, calibration, sensitivity scan.

These run in contained subprocesses. A worker reports with :class:`Reporter` (JSON lines appended to
the file named by ``$QUANTBENCH_PROGRESS_FILE``, at most every half second, plus each phase's end);
the parent tails that file with :func:`watch` and hands each event to a sink: the CLI's live line
(rich, transient on a terminal; plain lines in a log) or, by default, ``logging`` records on the
``quantbench.progress`` logger for the API.

An event: ``phase`` (``export``, ``data``, ``reference``, ``calibration``, ``scan``, ...), ``what``
(model or model/variant, when the worker knows it), ``done``/``total`` and ``unit``, ``step``/``steps``
(calibration pass k of n), ``elapsed_s``, ``eta_s`` (remaining work at the rate measured so far) and
``floor_eta_s`` (remaining forward passes at the measured FP32 floor: what the wait cannot go below).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ENV = "QUANTBENCH_PROGRESS_FILE"
LABEL_ENV = "QUANTBENCH_PROGRESS_WHAT"
Sink = Callable[[dict[str, Any]], None]
logger = logging.getLogger("quantbench.progress")


class Reporter:
    """Appends progress events to ``path`` (default: ``$QUANTBENCH_PROGRESS_FILE``; none: does nothing)."""

    def __init__(self, path: str | Path | None = None, min_interval_s: float = 0.5, what: str | None = None) -> None:
        path = path if path is not None else os.environ.get(ENV)
        self.path = Path(path) if path else None
        self.min_interval_s = min_interval_s
        self.what = what if what is not None else os.environ.get(LABEL_ENV, "")
        self._last = float("-inf")  # the first event is always written
        self._started: dict[str, float] = {}

    def __call__(self, phase: str, force: bool = False, **fields: Any) -> None:
        now = time.monotonic()
        start = self._started.setdefault(phase, now)
        done, total = fields.get("done"), fields.get("total")
        last_step = fields.get("step") in (None, fields.get("steps"))
        finished = done is not None and total is not None and done >= total and last_step
        if self.path is None or not (force or finished or now - self._last >= self.min_interval_s):
            return
        self._last = now
        event = {"phase": phase, "what": self.what, "elapsed_s": round(now - start, 2), "time": time.time(), **fields}
        try:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(event, default=str) + "\n")
        except OSError:  # progress is a courtesy: never fail the work for it
            self.path = None

    def calibration(self, what: str = "") -> Callable[..., None]:
        """A :data:`quantbench.exporters.calibrate.ProgressFn` reporting ``calibration`` events with ETAs."""
        t0 = time.monotonic()

        def report(step: int, steps: int, done: int, total: int | None, floor_per_sample: float | None) -> None:
            fields: dict[str, Any] = {"step": step, "steps": steps, "done": done, "total": total, "unit": "images"}
            if total:
                ran = (step - 1) * total + done
                left = steps * total - ran
                if ran >= 3:  # the first runs carry session warm-up
                    fields["eta_s"] = round((time.monotonic() - t0) / ran * left, 1)
                if floor_per_sample is not None:
                    fields["floor_eta_s"] = round(floor_per_sample * left, 1)
            if what:
                fields["what"] = what
            self("calibration", **fields)

        return report


def read_new(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Complete JSON lines of ``path`` after byte ``offset``; returns them and the new offset."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return [], offset
    end = data.rfind(b"\n") + 1
    events = []
    for line in data[:end].splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events, offset + end


@contextlib.contextmanager
def watch(sink: Sink | None = None, interval_s: float = 0.5) -> Iterator[Path]:
    """Point ``$QUANTBENCH_PROGRESS_FILE`` (inherited by every worker started inside) at a fresh file and
    hand each event the workers write to ``sink`` (default :func:`log_sink`) from a background thread.
    Nested calls reuse the outer file and sink."""
    if os.environ.get(ENV):
        yield Path(os.environ[ENV])
        return
    sink = sink or log_sink()
    fd, name = tempfile.mkstemp(prefix="qb-progress-", suffix=".jsonl")
    os.close(fd)
    path = Path(name)
    os.environ[ENV] = name
    stop = threading.Event()

    def pump() -> None:
        offset = 0
        while True:
            events, offset = read_new(path, offset)
            for e in events:
                try:
                    sink(e)
                except Exception:
                    logger.debug("progress sink failed", exc_info=True)
            if stop.is_set():
                return
            stop.wait(interval_s)

    thread = threading.Thread(target=pump, name="quantbench-progress", daemon=True)
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        thread.join(timeout=5)
        os.environ.pop(ENV, None)
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def labelled(what: str) -> Iterator[None]:
    """Workers started inside report ``what`` (model/variant) with their events."""
    old = os.environ.get(LABEL_ENV)
    os.environ[LABEL_ENV] = what
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(LABEL_ENV, None)
        else:
            os.environ[LABEL_ENV] = old


def duration(seconds: float | None) -> str:
    """``1h02m``, ``3m05s``, ``42s``."""
    if seconds is None:
        return "?"
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


PHASES = {"export": "export to ONNX", "load": "loading the ONNX file", "data": "opening its data",
          "reference": "FP32 reference", "calibration": "calibration", "scan": "sensitivity scan",
          "local": "local sensitivity", "accuracy": "top-1 of the top nodes"}


def describe(event: dict[str, Any]) -> str:
    """One line for an event: ``resnet50/int8: calibration pass 1/2: 312/1000 images, ETA 1m20s (floor 55s)``."""
    parts = [PHASES.get(event.get("phase", ""), str(event.get("phase")))]
    if event.get("steps") and event["steps"] > 1:
        parts[0] += f" pass {event.get('step')}/{event['steps']}"
    done, total = event.get("done"), event.get("total")
    text = parts[0]
    if done is not None:
        text += f": {done}/{total if total else '?'} {event.get('unit', '')}".rstrip()
    if event.get("eta_s") is not None and not (total and done is not None and done >= total):
        text += f", ETA {duration(event['eta_s'])}"
        if event.get("floor_eta_s") is not None:
            text += f" (floor {duration(event['floor_eta_s'])})"
    elif event.get("elapsed_s") is not None:
        text += f" ({duration(event['elapsed_s'])})"
    return f"{event['what']}: {text}" if event.get("what") else text


def _finished(event: dict[str, Any]) -> bool:
    done, total = event.get("done"), event.get("total")
    return bool(done is not None and total and done >= total and event.get("step") in (None, event.get("steps")))


def _throttle(every_s: float) -> Callable[[dict[str, Any]], bool]:
    """True for a phase's first and last event and one every ``every_s`` in between."""
    state: dict[str, Any] = {"key": None, "at": float("-inf")}

    def due(event: dict[str, Any]) -> bool:
        key = (event.get("phase"), event.get("what"), event.get("step"))
        now = time.monotonic()
        if key != state["key"] or _finished(event) or now - state["at"] >= every_s:
            state.update(key=key, at=now)
            return True
        return False

    return due


def log_sink(level: int = logging.INFO, every_s: float = 10.0) -> Sink:
    """Events as ``logging`` records on ``quantbench.progress`` (throttled; the event in ``record.progress``)."""
    due = _throttle(every_s)

    def sink(event: dict[str, Any]) -> None:
        if due(event):
            logger.log(level, describe(event), extra={"progress": event})

    return sink


def rich_sink(bar: Any, console: Any, every_s: float = 10.0) -> Sink:
    """The CLI's display: on a terminal a transient line of ``bar`` (a rich ``Progress``) follows the phase;
    otherwise (a log file, a pipe) plain lines, throttled as :func:`log_sink`."""
    if not console.is_terminal:
        due = _throttle(every_s)

        def plain(event: dict[str, Any]) -> None:
            if due(event):
                console.print(describe(event), markup=False, highlight=False)

        return plain
    task = bar.add_task("", total=None, visible=False)
    current: dict[str, Any] = {"key": None}

    def live(event: dict[str, Any]) -> None:
        key = (event.get("phase"), event.get("what"), event.get("step"))
        if key != current["key"]:  # a new phase: its own elapsed time
            current["key"] = key
            bar.reset(task)
        bar.update(task, description=describe(event), completed=event.get("done") or 0, total=event.get("total"),
                   visible=not _finished(event))

    return live
