"""Run a child process that cannot outlive its parent, its timeout or a SIGTERM/SIGINT of its parent.

:func:`run_contained` starts the child in its own session (so its own process group), asks the
kernel to SIGKILL it when the parent dies (``PR_SET_PDEATHSIG`` on Linux), kills its whole group
on timeout and when the parent gets SIGTERM or SIGINT, and kills any process left in the group
when the child itself exits. Python children may also call :func:`watch_parent` at start-up: a
parent-pid watch that kills the child's group when the parent goes away (the fallback where
``prctl`` does not exist, and it also takes grandchildren with it); it also makes the child the
subreaper of everything it starts, ended at its exit even in sessions of their own
(:func:`adopt_descendants`, Linux).

Used for everything that runs user code or a runtime: cell workers, export, the FP32 reference,
quantization, sensitivity; Python workers through :mod:`.worker_protocol` (payload in, result or
one-line error out).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PARENT_ENV = "QUANTBENCH_PARENT_PID"
# The checkout's root (quantbench/common/ is two levels down), first on every child's PYTHONPATH: workers
# import this copy (quantbench/__init__.py finds the sibling harness/, exporters/, … from there).
_ROOT = str(Path(__file__).resolve().parents[2])
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_POLL_S = 0.05
_TAIL_LINES = 20
_TAIL_CHARS = 4000

_live_lock = threading.Lock()
_live_groups: set[int] = set()


class Terminated(KeyboardInterrupt):
    """The parent got SIGTERM while a contained child ran; the child's group is already killed."""


@dataclass
class ContainedResult:
    """How a contained child ended.

    ``returncode`` is the exit status (negative: killed by that signal, as in :mod:`subprocess`);
    ``timed_out`` is True when it was killed for running past ``timeout_s``; ``signal_name`` names
    the signal that ended it ("" when it exited); ``log_tail`` holds the last lines of its log.
    """

    returncode: int
    timed_out: bool
    signal_name: str
    log_tail: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def last_line(self) -> str:
        """The last non-empty line of the log ("" when there is none)."""
        lines = [ln for ln in self.log_tail.splitlines() if ln.strip()]
        return lines[-1].strip() if lines else ""

    def describe(self, timeout_s: float | None = None) -> str:
        """One line: why the child failed ("" when it succeeded)."""
        if self.timed_out:
            return f"timed out after {timeout_s:g} s" if timeout_s is not None else "timed out"
        if self.signal_name:
            oom = " (out of memory?)" if self.signal_name == "SIGKILL" else ""
            return f"crashed with {self.signal_name}{oom}"
        if self.returncode:
            return f"exited with status {self.returncode}"
        return ""


def _load_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.prctl
        fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        fn.restype = ctypes.c_int
        return fn
    except (OSError, AttributeError):
        return None


# Resolved once in the parent: the pre-exec hook runs between fork and exec and must not import or load.
_PRCTL = _load_prctl()


def _make_preexec(parent_pid: int):
    def preexec() -> None:
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before the death signal was armed
            os._exit(1)
    return preexec


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def descendants(pid: int) -> list[int]:
    """Pids of the live (not zombie) processes below ``pid``, read from /proc (Linux; [] elsewhere)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()  # the name before ")" may hold spaces
        except (OSError, IndexError):
            continue
        if fields and fields[0] != b"Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_descendants(pid: int, outside_group_only: bool = False) -> int:
    """SIGKILL every process below ``pid`` (with ``outside_group_only``, those not in this process's group,
    i.e. the ones a group kill misses); a few rounds, for children forked meanwhile. Returns how many."""
    killed = 0
    group = os.getpgrp()
    for _ in range(5):
        found = [p for p in descendants(pid) if not (outside_group_only and _pgid(p) == group)]
        if not found:
            break
        for child in found:
            try:
                os.kill(child, signal.SIGKILL)
                killed += 1
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)
    return killed


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _end_escaped_descendants() -> None:
    """At exit of a contained child: end what it started in sessions of their own, and reap what was adopted."""
    kill_descendants(os.getpid(), outside_group_only=True)
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break


def adopt_descendants() -> None:
    """In a contained child: keep every process it starts, even in a new session or double-forked, as its
    descendant (``PR_SET_CHILD_SUBREAPER``, Linux) and end them when it exits, so that user code (a
    ``module:`` model that starts a server with ``start_new_session=True``) leaves nothing running after
    the cell. :func:`run_contained` ends the same tree on a timeout. Not possible elsewhere, nor when the
    child itself is SIGKILLed (the kernel's parent-death signal, an OOM kill): then its orphans live on.
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    import atexit

    atexit.register(_end_escaped_descendants)


def kill_live_groups() -> None:
    """SIGKILL every contained child's process group still running (used by the signal handlers)."""
    with _live_lock:
        groups = list(_live_groups)
    for pgid in groups:
        kill_descendants(pgid)  # the leader's pid: a subreaper child keeps every descendant below it
        _kill_group(pgid)


def _on_signal(signum: int, frame: Any, previous: Any) -> None:
    kill_live_groups()
    if callable(previous):
        previous(signum, frame)
    elif signum == signal.SIGINT:
        raise KeyboardInterrupt
    else:
        raise Terminated(f"terminated by {signal.Signals(signum).name}")


class _SignalGuard:
    """Kill the live children on SIGTERM/SIGINT, then behave as the previous handler would.

    Only the main thread can install handlers; elsewhere the guard does nothing and the parent-death
    signal still takes the child down if the parent is killed.
    """

    def __enter__(self) -> _SignalGuard:
        self.saved: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            if previous is signal.SIG_IGN or previous is None:  # ignored (or set outside Python): leave it
                continue
            if getattr(previous, "__qualname__", "") == "_SignalGuard._handler":  # nested: already guarded
                continue
            self.saved[sig] = previous
            signal.signal(sig, self._make_handler(previous))
        return self

    @staticmethod
    def _make_handler(previous: Any):
        def _handler(signum: int, frame: Any) -> None:
            _on_signal(signum, frame, previous if previous is not signal.SIG_DFL else None)
        _handler.__qualname__ = "_SignalGuard._handler"
        return _handler

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self.saved.items():
            signal.signal(sig, previous)


def signal_guard() -> _SignalGuard:
    """``with signal_guard():`` SIGTERM/SIGINT kill every contained child, then raise as usual.

    SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``) unless a handler was set before;
    nested guards (e.g. a sweep around :func:`run_contained`) leave the outer one in place.
    """
    return _SignalGuard()


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = text.splitlines()[-_TAIL_LINES:]
    return "\n".join(lines)[-_TAIL_CHARS:]


def _exited(proc: subprocess.Popen) -> bool:
    if hasattr(os, "waitid"):
        # WNOWAIT: see the exit but keep the pid reserved, so the group kill that follows cannot hit a reused id.
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    return proc.poll() is not None


def run_contained(cmd: Sequence[str], *, timeout_s: float | None, log_path: Path | str,
                  env: Mapping[str, str] | None = None, cwd: Path | str | None = None) -> ContainedResult:
    """Run ``cmd`` with stdout and stderr to ``log_path``, contained; never raises for the child's fate.

    The child runs in its own process group, dies with this process (``PR_SET_PDEATHSIG``; Python
    children can add :func:`watch_parent`), and its whole group is SIGKILLed on timeout
    (``timeout_s``; None or <= 0: no limit), on SIGTERM/SIGINT of this process (which then raises
    :class:`Terminated` / ``KeyboardInterrupt`` as usual), and when the child exits (leftovers).
    The child's ``PYTHONPATH`` starts with this checkout's root, so ``python -m quantbench.…``
    workers import the same code as the parent.
    Raises OSError only when the child cannot be started (e.g. the log cannot be written).
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    child_env = dict(os.environ if env is None else env)
    child_env[PARENT_ENV] = str(os.getpid())
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in [_ROOT, child_env.get("PYTHONPATH", "")] if p)
    deadline = time.monotonic() + timeout_s if timeout_s and timeout_s > 0 else None
    timed_out = False
    with open(log_path, "wb") as log, _SignalGuard():
        proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=child_env, cwd=cwd, start_new_session=True,
                                # The death signal must be armed in the child before exec; the hook only
                                # calls a C function resolved beforehand, so it takes no lock a thread may hold.
                                preexec_fn=_make_preexec(os.getpid()))
        pgid = proc.pid  # a new session's leader: its pid is the group id
        with _live_lock:
            _live_groups.add(pgid)
        try:
            while True:
                if _exited(proc):
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    timed_out = True
                    kill_descendants(proc.pid)  # those in sessions of their own too (see adopt_descendants)
                    _kill_group(pgid)
                    break
                time.sleep(_POLL_S)
        finally:
            _kill_group(pgid)  # leftovers of a finished child, or everything on timeout / exception
            with _live_lock:
                _live_groups.discard(pgid)
            proc.wait()
    rc = proc.returncode
    signal_name = ""
    if rc < 0:
        try:
            signal_name = signal.Signals(-rc).name
        except ValueError:
            signal_name = f"signal {-rc}"
    return ContainedResult(returncode=rc, timed_out=timed_out, signal_name=signal_name, log_tail=_tail(log_path))


def watch_parent(interval_s: float = 0.5) -> None:
    """In a contained Python child: kill this process group when the parent that started it is gone.

    A no-op unless started by :func:`run_contained` (which sets ``QUANTBENCH_PARENT_PID``). The
    daemon thread costs one ``getppid`` per ``interval_s``. Also :func:`adopt_descendants`: what the
    child starts in a session of its own ends with it.
    """
    try:
        parent = int(os.environ.get(PARENT_ENV, ""))
    except ValueError:
        return
    watched = os.getppid()
    if watched != parent and not _alive(parent):  # started by run_contained, whose process already died
        os._exit(1)
    # A grandchild that inherited the variable watches its own parent instead.

    adopt_descendants()

    def watch() -> None:
        while True:
            if os.getppid() != watched:
                try:
                    kill_descendants(os.getpid(), outside_group_only=True)
                    os.killpg(os.getpgrp(), signal.SIGKILL)
                finally:
                    os._exit(1)
            time.sleep(interval_s)

    threading.Thread(target=watch, name="quantbench-parent-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
