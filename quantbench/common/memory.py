"""Giving freed heap memory back to the system."""
from __future__ import annotations

import ctypes


def release_freed_memory() -> None:
    """Give the heap's freed pages back to the system (glibc's ``malloc_trim``; nothing elsewhere).

    glibc keeps freed memory for reuse, so a process's resident size stays at its largest: after a
    calibration or an export the next phase started hundreds of MB higher (a sensitivity scan's worker
    held 730 MB of freed calibration buffers while it built and ran ResNet-50's per-node models).
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
