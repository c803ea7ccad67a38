"""``calibration = "mse"``: the L2 range search of PyTorch's ``HistogramObserver``.

torch's ``HistogramObserver`` (torch/ao/quantization/observer.py, also the "MSE" range search NNCF and
ModelOpt offer) keeps a histogram of a tensor over its [min, max] and picks the range that minimises
the L2 quantization error of 8-bit (256-bin) uniform quantization, modelling the values as uniform
within each histogram bin. The search is torch's ``_non_linear_param_search``: from the whole range,
move whichever end cuts fewer values, in quantile steps of 1e-5, and stop as soon as the error grows.

Here the histogram is the batch-invariant two-pass one of :mod:`.calibrate` over the tensor's exact
[min, max] (torch's is that histogram only when one call sees all the data; over several calls it
re-bins earlier counts, so its thresholds depend on the batching). The quantile comparisons are float32
as torch's; the error sums are float64 (torch: float32).
"""
from __future__ import annotations

import bisect

import numpy as np

DST_BINS = 256  # 8-bit target, as torch's 2 ** bits of quint8/qint8
STEP = 1e-5  # torch's quantile step


def quantization_error(counts: np.ndarray, bin_width: float, start: int, end: int, dst_bins: int = DST_BINS) -> float:
    """L2 error of quantizing the histogram ``counts`` (bins of ``bin_width``) to ``dst_bins`` uniform
    levels over bins ``start..end`` (values outside clamp to the end levels); values are taken as uniform
    within each bin. torch's ``HistogramObserver._compute_quantization_error``."""
    bins = len(counts)
    dst_width = bin_width * (end - start + 1) / dst_bins
    if dst_width == 0.0:
        return 0.0
    src_begin = (np.arange(bins, dtype=np.float64) - start) * bin_width
    src_end = src_begin + bin_width
    dst_of_begin = np.clip(np.floor(src_begin / dst_width), 0, dst_bins - 1)
    dst_of_end = np.clip(np.floor(src_end / dst_width), 0, dst_bins - 1)
    density = np.asarray(counts, dtype=np.float64) / bin_width

    def norm(begin: np.ndarray | float, stop: np.ndarray | float) -> np.ndarray:
        return density * (np.power(stop, 3) - np.power(begin, 3)) / 3  # ∫ x² over [begin, stop]

    half = dst_width / 2
    total = norm(src_begin - (dst_of_begin + 0.5) * dst_width, half)
    total = total + (dst_of_end - dst_of_begin - 1) * norm(-half, half)
    total = total + norm(-half, src_end - (dst_of_end * dst_width + half))
    return float(total.sum())


def search_bins(counts: np.ndarray, bin_width: float = 1.0, dst_bins: int = DST_BINS) -> tuple[int, int]:
    """The first and last bin of the range torch's ``_non_linear_param_search`` chooses."""
    counts = np.asarray(counts)
    bins = len(counts)
    # torch compares its float32 cumulative counts with float32 quantiles: the rounding decides which
    # tail bins a step cuts (in float64 the search ended 19 bins away on a heavy-tailed tensor)
    csum32 = np.cumsum(counts, dtype=np.float64).astype(np.float32)
    csum = csum32.astype(np.float64).tolist()
    total = float(np.sum(counts, dtype=np.float64))
    if total <= 0:
        return 0, bins - 1
    alpha, beta = 0.0, 1.0
    start, end = 0, bins - 1
    norm_min = float("inf")
    while alpha < beta:
        next_alpha, next_beta = alpha + STEP, beta - STEP
        # torch walks l up from start (r down from end) while the cumulative count is below (above) the quantile
        left = min(max(bisect.bisect_left(csum, float(np.float32(next_alpha * total))), start), end)
        right = max(min(bisect.bisect_right(csum, float(np.float32(next_beta * total))) - 1, end), start)
        next_start, next_end = start, end
        if left - start > end - right:
            next_start, alpha = left, next_alpha
        else:
            next_end, beta = right, next_beta
        if next_start == start and next_end == end:
            continue
        norm = quantization_error(counts, bin_width, next_start, next_end, dst_bins)
        if norm > norm_min:
            break
        norm_min, start, end = norm, next_start, next_end
    return start, end


def l2_range(counts: np.ndarray, low: float, high: float, dst_bins: int = DST_BINS) -> tuple[np.float32, np.float32]:
    """The (min, max) torch's HistogramObserver would quantize a tensor with, from ``counts`` in equal
    bins over [``low``, ``high``] (float32, as torch's ``min_val + bin_width * bin``)."""
    low32, high32 = np.float32(low), np.float32(high)
    start, end = search_bins(counts, (float(high32) - float(low32)) / len(counts), dst_bins)
    width = np.float32((high32 - low32) / np.float32(len(counts)))
    return np.float32(low32 + width * np.float32(start)), np.float32(low32 + width * np.float32(end + 1))
