"""numba's compiled loops for calibration (imported only through :mod:`.compiled_binning`, which says when numba is
missing). Defined at module level so that numba's on-disk cache finds them again: compiled inside a function, the
kernel was compiled afresh in every process (0.9 s) and its cache index grew by one entry per run.

``counts_of``: the bin counts of :func:`.compiled_binning.count`; ``ranges_of``: the smallest value, the largest and
the smallest absolute value of a float32 tensor in one read (:func:`.compiled_binning.value_range`). Both compile
without fast-math: no fused multiply-add, the float32 roundings are numpy's."""
from __future__ import annotations

import numba
import numpy as np

BLOCK = 4096  # values whose bin indices are computed before they are counted (stay in L1)
STREAMS = 8  # interleaved count tables
_ABS = np.int32(0x7FFFFFFF)


@numba.njit(nogil=True, cache=True, boundscheck=False, error_model="numpy", inline="always")
def _bins_of(x, xi, absolute, track, scale, offset, step, lo, hi, top, idx, least):  # pragma: no cover - compiled
    bad = 0
    low = least[0]
    for j in range(x.size):
        v = abs(x[j]) if absolute else x[j]
        t = np.int32(v * scale + offset)  # truncated: the estimate, bin or bin + 1
        e = np.float32(t) * step + lo  # that bin's lower edge, numpy's float32 edge
        b = t + np.int32(v >= e)
        bad += np.int32((v < lo) | (v > hi) | (v != v))
        idx[j] = min(max(b, np.int32(0)), top)  # in bounds whatever the value (NaN, inf)
        # the smallest bit pattern, an integer minimum that vectorises (a float one does not without fast-math):
        # the smallest value wherever the values are >= 0 (|x|, or a tensor >= 0; -0.0 reads as negative)
        if track:  # loop-invariant: compiled as two loops
            low = min(low, (xi[j] & _ABS) if absolute else xi[j])
    least[0] = low
    return bad


@numba.njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def counts_of(x, xi, absolute, track, scale, offset, step, lo, hi, n, out, least):  # pragma: no cover - compiled
    """Add the counts of ``x`` (``xi``: its bits) in ``n`` bins to ``out`` (int64[n + 2], indices 0 and n + 1 as in
    calibrate._fast_counts; the caller folds them); ``least[0]`` is lowered to the smallest bit pattern counted.
    Returns the number of values outside [lo, hi] (NaN included): the caller raises, so their clamped counts are
    never used. Each block's bin indices are computed in a vectorised loop, then counted into eight interleaved
    tables, so runs of equal values (the zeros after a Relu) do not wait on one counter."""
    width = n + 2
    tables = np.zeros(STREAMS * width, np.int32)
    idx = np.empty(BLOCK, np.int32)
    top = np.int32(n + 1)
    bad = 0
    m = x.size
    for start in range(0, m, BLOCK):
        k = min(BLOCK, m - start)
        bad += _bins_of(x[start:start + k], xi[start:start + k], absolute, track, scale, offset, step, lo, hi, top,
                        idx, least)
        j = 0
        while j + STREAMS <= k:
            for s in range(STREAMS):
                tables[s * width + idx[j + s]] += 1
            j += STREAMS
        while j < k:
            tables[idx[j]] += 1
            j += 1
    for b in range(width):
        total = 0
        for s in range(STREAMS):
            total += tables[s * width + b]
        out[b] += total
    return bad


@numba.njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def ranges_of(xi, acc):  # pragma: no cover - compiled
    """Widen ``acc`` = [smallest, largest, smallest |x|] by the float32 values whose bits are ``xi``, each taken in
    the integer order of float32 values (``b ^ ((b >> 31) & 0x7FFFFFFF)``: -inf < ... < -0.0 < 0.0 < ... < +inf,
    NaN beyond the infinity of its sign; |x|'s bits are ordered as its values), so the loop is integer minima and
    maxima, which vectorise (float ones do not without fast-math)."""
    low, high, low_abs = acc[0], acc[1], acc[2]
    for j in range(xi.size):
        b = xi[j]
        m = b ^ ((b >> 31) & _ABS)
        low = min(low, m)
        high = max(high, m)
        low_abs = min(low_abs, b & _ABS)
    acc[0], acc[1], acc[2] = low, high, low_abs
