"""A sweep's output folder: the results file's name, a writability check and the one-run-at-a-time lock."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RESULTS_FILE = "results.jsonl"
LOCK_FILE = ".quantbench.lock"


class RunError(RuntimeError):
    """A problem that stops the whole sweep before any cell runs (one line)."""


def check_output_dir(out: Path) -> None:
    """Fail early, in one line, when results cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise RunError(f"output directory {out} is not writable: {exc.strerror or exc}") from None


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` for one run; a second run on it fails at once, in one line."""
    import fcntl

    path = out / LOCK_FILE
    fh = open(path, "a+")  # held open for the whole run: the lock lives as long as the file handle
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip()
            raise RunError(f"output directory {out} is in use by another quantbench run"
                           + (f" (pid {holder})" if holder.isdigit() else "")
                           + ": wait for it to finish or choose another --output") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fh.close()  # closing releases the lock; the file stays (removing it would race a waiting run)
