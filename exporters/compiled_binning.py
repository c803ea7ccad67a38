"""Compiled bin counting for calibration's histograms (numba; optional).

:func:`count` gives the counts of :func:`quantbench.exporters.calibrate._fast_counts` (numpy.histogram's bins):
the same float32 operations in the same order (a product, a sum, truncation, the bin's lower edge ``k * step +
first``, one comparison), compiled into one loop over a tensor instead of eight numpy passes and a bincount (on
ResNet-50's activations about 1 ns a value against numpy's 2.6 ns on one core here). :class:`ValueRange` gives a
tensor's smallest, largest and smallest absolute value in one read (calibration's pass 1). The loops themselves are
in :mod:`.binning_kernels`; without numba, calibration counts in numpy and reduces in ONNX Runtime: the same
figures, slower.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

_MAX_CALL = 1 << 30  # values per kernel call (int32 counts per table cannot overflow)
INSTALL_HINT = ("pip install .[calibration] (numba; without it calibration counts histogram bins in numpy, "
                "about 2.7x slower)")


@lru_cache(maxsize=1)
def _kernel() -> Any:
    """The compiled kernels' module (:mod:`.binning_kernels`), or None without numba."""
    try:
        import numba  # noqa: F401 - the one dependency that may be missing
    except ImportError:
        return None
    from . import binning_kernels

    return binning_kernels


def available() -> bool:
    """Whether the compiled kernel can be used (numba importable)."""
    return _kernel() is not None


def count(x: np.ndarray, params: tuple, last: np.float32, n: int, absolute: bool = False,
          track: bool = True) -> tuple[np.ndarray, int, np.float32]:
    """(counts of the ``n`` bins, values outside [first, ``last``], the smallest value) of the float32 values ``x``
    (of ``|x|`` with ``absolute``); ``params``: calibrate._bin_params of edges that passed
    calibrate._estimate_is_exact. The smallest value is exact where every value is >= 0 (|x| always; +inf when
    there is none), and only there; +inf without ``track`` (not looked for: about 0.1 ns a value less on |x|)."""
    kernels = _kernel()
    if kernels is None:
        raise RuntimeError(f"numba is not installed: {INSTALL_HINT}")
    scale, offset, step, lo = (np.float32(p) for p in params)
    flat = np.ascontiguousarray(x, np.float32).reshape(-1)
    out = np.zeros(n + 2, np.int64)
    least = np.full(1, np.float32(np.inf)).view(np.int32)  # +inf's bits: above every finite value's
    bits = flat.view(np.int32)
    bad = 0
    for start in range(0, flat.size, _MAX_CALL):
        end = start + _MAX_CALL
        bad += int(kernels.counts_of(flat[start:end], bits[start:end], bool(absolute), bool(track), scale, offset,
                                     step, lo, np.float32(last), np.int64(n), out, least))
    out[n] += out[n + 1]  # the last bin keeps its right edge
    smallest = np.float32(0) if least[0] < 0 else least.view(np.float32)[0]  # a sign bit: -0.0 (or a value < 0)
    return out[1:n + 1], bad, smallest


_ORDERED_POS_INF = 0x7F800000  # +inf's bits, its place in the integer order of float32 values
_ORDERED_NEG_INF = (0xFF800000 ^ 0x7FFFFFFF) - (1 << 32)  # -inf's place (its bits, sign-flipped, as int32)


class ValueRange:
    """The smallest value, the largest and the smallest absolute value of the float32 tensors :meth:`add` reads,
    exactly (every value read once, in numba's compiled loop). NaN shows as a NaN bound; no value read: +inf, -inf,
    +inf. -0.0 counts as 0.0."""

    def __init__(self) -> None:
        if _kernel() is None:
            raise RuntimeError(f"numba is not installed: {INSTALL_HINT}")
        self._acc = np.array([_ORDERED_POS_INF, _ORDERED_NEG_INF, _ORDERED_POS_INF], np.int32)

    def add(self, x: np.ndarray) -> None:
        """Read ``x`` (float32; other dtypes are converted, float64 rounded to nearest as ORT's Cast)."""
        flat = np.ascontiguousarray(x, np.float32).reshape(-1)
        _kernel().ranges_of(flat.view(np.int32), self._acc)

    @property
    def bounds(self) -> tuple[np.float32, np.float32, np.float32]:
        """(smallest, largest, smallest |x|)."""
        ordered = self._acc[:2]
        bits = ordered ^ ((ordered >> 31) & np.int32(0x7FFFFFFF))  # the order's map is its own inverse
        low, high = (np.float32(v) + np.float32(0) for v in bits.view(np.float32))  # + 0: -0.0 is 0.0
        return low, high, self._acc[2:].view(np.float32)[0]
