"""Freed heap memory goes back to the system."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

from quantbench.common.memory import release_freed_memory


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmRSS:"))


def _glibc() -> bool:
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "malloc_trim")
    except OSError:
        return False


@pytest.mark.skipif(not _glibc(), reason="malloc_trim is glibc's")
def test_freed_heap_pages_below_a_live_block_are_returned():
    # 160 MiB in 64 KiB blocks (under glibc's mmap threshold: heap memory), then one live block above them,
    # so the heap cannot shrink from its top: only the trim hands the freed pages back
    blocks = [np.ones(16 * 1024, np.float32) for _ in range(2560)]
    keep = np.ones(16 * 1024, np.float32)
    del blocks
    before = _rss_mib()
    release_freed_memory()
    after = _rss_mib()
    assert keep.sum() == 16 * 1024
    assert before - after > 100, (before, after)
