"""calibration = "mse": PyTorch HistogramObserver's L2 range search, on our batch-invariant histograms.

The error model is checked against a brute-force computation of the quantization error of the values
themselves; the search against torch's own ``_non_linear_param_search`` on the same histograms; the
end-to-end thresholds against torch's ``HistogramObserver`` fed the same data.
"""
from __future__ import annotations

import numpy as np
import pytest

from quantbench.exporters.histogram_mse import (
    DST_BINS,
    l2_range,
    quantization_error,
    search_bins,
)


def _direct_error(x: np.ndarray, low: float, width: float, start: int, end: int, dst: int) -> float:
    """Brute force: quantize every value to the centre of its level among ``dst`` equal levels over
    bins start..end (clamped at the ends) and sum the squared errors."""
    a = low + start * width
    step = (end - start + 1) * width / dst
    k = np.clip(np.floor((x - a) / step), 0, dst - 1)
    return float(((x - (a + (k + 0.5) * step)) ** 2).sum())


@pytest.mark.parametrize("dst", [DST_BINS, 16])
def test_error_model_is_the_l2_error_of_the_values_for_every_range(dst):
    """Every (start, end) of a small histogram whose values are spread evenly inside their bins (the
    model's assumption): the modelled error equals the brute-force error of those values."""
    rng = np.random.default_rng(0)
    bins, per_unit, low, width = 24, 4000, -1.5, 0.125
    counts = rng.integers(0, 6, size=bins)
    counts[[0, 7, 8]] = [3, 0, 9]
    # n evenly spread values in a bin: the midpoints of n equal slices of it
    x = np.concatenate([low + (i + (np.arange(c * per_unit) + 0.5) / (c * per_unit)) * width
                        for i, c in enumerate(counts) if c])
    for start in range(bins):
        for end in range(start, bins):
            model = quantization_error(counts, width, start, end, dst) * per_unit
            direct = _direct_error(x, low, width, start, end, dst)
            assert model == pytest.approx(direct, rel=2e-3, abs=1e-12), (start, end)


def _torch_search(counts: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """torch's own search on the histogram ``counts`` over [low, high] (its buffers set directly)."""
    import torch

    obs = torch.ao.quantization.HistogramObserver(bins=len(counts))
    obs.histogram.copy_(torch.as_tensor(counts, dtype=torch.float32))
    obs.min_val.copy_(torch.tensor(low))
    obs.max_val.copy_(torch.tensor(high))
    lo, hi = obs._non_linear_param_search()
    return float(lo), float(hi)


@pytest.mark.torch
@pytest.mark.parametrize("seed", range(12))
def test_search_chooses_torchs_bins(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.choice([10, 1000, 200_000]))
    kind = seed % 4
    x = [rng.standard_normal(n), rng.laplace(size=n), rng.lognormal(0, 1.2, n), rng.standard_t(2, n)][kind]
    x = np.concatenate([x, rng.uniform(5, 40, seed % 3)]).astype(np.float32)
    bins = int(rng.choice([64, 512, 2048]))
    low, high = np.float32(x.min()), np.float32(x.max())
    counts, _ = np.histogram(x, bins, range=(low, high))
    ours = l2_range(counts, low, high)
    ref = _torch_search(counts, low, high)
    width = (float(high) - float(low)) / bins
    assert float(ours[0]) == pytest.approx(ref[0], abs=width * 1e-3)
    assert float(ours[1]) == pytest.approx(ref[1], abs=width * 1e-3)


@pytest.mark.torch
def test_thresholds_close_to_torchs_histogram_observer():
    """End to end on data: our numpy histogram + search against HistogramObserver(x) (torch.histc bins
    the values itself; a value on an edge may land in the next bin)."""
    import torch

    rng = np.random.default_rng(3)
    for x in (rng.standard_normal(300_000), np.concatenate([rng.laplace(size=300_000), [40.0, -25.0]]),
              np.maximum(rng.normal(0.5, 2, 300_000), 0), rng.standard_t(3, 300_000)):
        x = x.astype(np.float32)
        obs = torch.ao.quantization.HistogramObserver(bins=2048)
        obs(torch.from_numpy(x))
        ref = [float(v) for v in obs._non_linear_param_search()]
        low, high = np.float32(x.min()), np.float32(x.max())
        counts, _ = np.histogram(x, 2048, range=(low, high))
        ours = l2_range(counts, low, high)
        width = (float(high) - float(low)) / 2048
        assert abs(float(ours[0]) - ref[0]) <= 1.01 * width and abs(float(ours[1]) - ref[1]) <= 1.01 * width


def test_greedy_search_is_torchs_not_the_exhaustive_minimum():
    """What the docs say: the search stops at the first step that raises the error, so an exhaustive
    search over all ranges can do better (here a Gaussian with two outliers); its first step is always taken."""
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.standard_normal(100_000), [30.0, -20.0]]).astype(np.float32)
    bins = 128
    counts, _ = np.histogram(x, bins, range=(x.min(), x.max()))
    width = float(x.max() - x.min()) / bins
    best = min(quantization_error(counts, width, s, e) for s in range(bins) for e in range(s, bins))
    start, end = search_bins(counts, width)
    assert (start, end) != (0, bins - 1)
    assert quantization_error(counts, width, start, end) > 1.2 * best
    # uniform data: nothing to clip, and the search moves one bin at most
    flat = np.full(bins, 50)
    s, e = search_bins(flat, 1.0)
    assert (e - s) >= bins - 2


def test_empty_and_constant_histograms():
    assert search_bins(np.zeros(16, np.int64)) == (0, 15)
    counts = np.zeros(8, np.int64)
    counts[3] = 100
    low, high = l2_range(counts, -0.5, 0.5)
    assert -0.5 <= float(low) <= float(high) <= 0.5
