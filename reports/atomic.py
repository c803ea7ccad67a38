"""Write a file so that a reader sees either the previous version or the whole new one, never a part."""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path


def _new_file_mode(path: Path) -> int:
    """The existing file's permissions, else what ``open()`` would give a new file under the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_atomic(path: Path | str, content: str | Iterable[str]) -> Path:
    """Write ``content`` (text, or chunks of text as a renderer produces them) to ``path`` atomically.

    The text goes to a temporary file in the same folder, is flushed to disk, and only then replaces
    ``path`` (``os.replace``). If rendering raises, or the process is killed, midway, ``path`` keeps its
    previous content; the temporary file is removed when Python can still do so.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _new_file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            for chunk in [content] if isinstance(content, str) else content:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the OS allows it
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path
