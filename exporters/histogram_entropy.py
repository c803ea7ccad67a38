"""ORT's Entropy threshold search (``HistogramCollector.get_entropy_threshold``), with its integer work in numpy.

ORT merges and expands the bins of every candidate threshold in Python loops (``sum()`` over numpy
slices, one bin at a time): about 80 ms per tensor at 512 bins, 10 s for ResNet-50's 123 tensors. Here
the reference distribution ``p`` and the candidate ``q`` of each threshold are built with whole-array
numpy operations on the same int64 counts, which gives the same integers, and then go through ORT's own
``smooth_distribution`` and ``entropy``; the choice and the clamping are ORT's. The thresholds are
therefore ORT's exactly (tests compare them with ORT's function on many histograms).
"""
from __future__ import annotations

from typing import Any

import numpy as np


def entropy_threshold(histogram: tuple, num_quantized_bins: int) -> tuple[Any, Any]:
    """``(low, high)`` as ORT's ``get_entropy_threshold(histogram, num_quantized_bins)`` returns them;
    ``histogram`` is ``(counts, edges, min, max, ...)``."""
    from onnxruntime.quantization.calibrate import entropy
    from onnxruntime.quantization.quant_utils import smooth_distribution

    hist, edges = histogram[0], histogram[1]
    num_bins = hist.size
    zero = num_bins // 2
    half = num_quantized_bins // 2
    dtype = edges.dtype
    divergences = np.zeros(zero - half + 1)
    thresholds = []
    cumulative = np.concatenate([[0], np.cumsum(hist, dtype=np.int64)])  # exact: int64 counts
    total = cumulative[-1]
    for i in range(half, zero + 1):
        start, end = zero - i, min(zero + i + 1, num_bins)
        thresholds.append((edges[start], edges[end]))
        sliced = hist[start:end].astype(np.int64)
        p = sliced.copy()
        p[0] += cumulative[start]  # the outliers on either side join the end bins
        p[-1] += total - cumulative[end]
        nonzeros = (p != 0).astype(np.int64)
        merged = sliced.size // num_quantized_bins
        whole = num_quantized_bins * merged
        quantized = sliced[:whole].reshape(num_quantized_bins, merged).sum(axis=1)
        quantized[-1] += sliced[whole:].sum()
        norms = nonzeros[:whole].reshape(num_quantized_bins, merged).sum(axis=1)
        spread = np.zeros(num_quantized_bins)
        np.divide(quantized, norms, out=spread, where=norms != 0)  # ORT: quantized / norm, stored as int64
        q = np.zeros(p.size, dtype=np.int64)
        q[:whole] = np.repeat(spread.astype(np.int64), merged)
        p_s, q_s = smooth_distribution(p), smooth_distribution(q)
        if p_s is None or q_s is None:
            divergences[i - half] = np.array(np.inf, dtype=dtype)
        else:
            divergences[i - half] = np.array(entropy(p_s, q_s), dtype=dtype)
    best = thresholds[int(np.argmin(divergences))]
    if best[0] < histogram[2]:
        best = (histogram[2], best[1])
    if best[1] > histogram[3]:
        best = (best[0], histogram[3])
    return best
