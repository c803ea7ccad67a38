"""numba's bin counting (exporters/compiled_binning.py) counts as numpy.histogram does, on the data shapes that
stress it: runs of one value (a Relu's zeros), lengths that are not a multiple of its block or its eight tables,
values outside the range (NaN, infinities), and inputs split across kernel calls."""
from __future__ import annotations

import numpy as np
import pytest

from quantbench.exporters import calibrate as cal
from quantbench.exporters import compiled_binning

pytestmark = pytest.mark.numba


def _edges(low: float, high: float, bins: int) -> np.ndarray:
    edges = np.histogram_bin_edges(np.zeros(0, np.float32), bins, range=(np.float32(low), np.float32(high)))
    assert cal._estimate_is_exact(edges)
    return edges


def _count(x: np.ndarray, edges: np.ndarray, absolute: bool = False) -> tuple[np.ndarray, int, np.float32]:
    return compiled_binning.count(x, cal._bin_params(edges), edges[-1], len(edges) - 1, absolute)


@pytest.mark.parametrize("size", [0, 1, 7, 8, 4095, 4096, 4097, 3 * 4096 + 13])
def test_relu_like_data_of_any_length_counts_as_numpy(size):
    rng = np.random.default_rng(size)
    x = np.maximum(rng.standard_normal(size), 0).astype(np.float32)  # half zeros, in runs and alone
    x[: size // 3] = 0.0  # a long run of one bin
    edges = _edges(-3.0, 5.5, 512)
    counts, outside, least = _count(x, edges)
    assert outside == 0
    np.testing.assert_array_equal(counts, np.histogram(x, 512, range=(edges[0], edges[-1]))[0])
    assert counts.sum() == size
    assert least == (x.min() if size else np.inf)  # values >= 0: the smallest is exact


def test_the_smallest_value_of_a_nonnegative_tensor_without_zeros_and_with_negative_zero():
    x = np.random.default_rng(4).uniform(0.25, 3.0, 9000).astype(np.float32)
    edges = _edges(0.0, 3.0, 64)
    assert _count(x, edges)[2] == x.min()
    x[17] = np.float32(-0.0)  # a Relu may write -0.0: it is 0
    assert _count(x, edges)[2] == 0.0


def test_absolute_values_count_as_numpy_of_their_absolute_values():
    x = np.random.default_rng(1).standard_normal(20000).astype(np.float32)
    a = np.abs(x)
    edges = _edges(a.min(), a.max(), 2048)
    counts, outside, least = _count(x, edges, absolute=True)
    assert outside == 0 and least == a.min()
    np.testing.assert_array_equal(counts, np.histogram(a, 2048, range=(edges[0], edges[-1]))[0])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e30, -1.0000001, 1.0000001])
def test_values_outside_the_range_are_counted_as_outside_and_nothing_else_moves(bad):
    x = np.linspace(-1, 1, 10001, dtype=np.float32)
    edges = _edges(-1.0, 1.0, 128)
    clean, _, _ = _count(x, edges)
    x[[3, 5000, 9999]] = np.float32(bad)
    counts, outside, _ = _count(x, edges)
    assert outside == 3
    # the in-range values are those of the clean count minus the three replaced (clamped ones land at the ends)
    assert counts.sum() <= clean.sum()
    np.testing.assert_array_equal(counts[1:-1], np.histogram(np.delete(x, [3, 5000, 9999]), 128,
                                                              range=(edges[0], edges[-1]))[0][1:-1])


def test_inputs_split_across_kernel_calls_add_up(monkeypatch):
    x = np.random.default_rng(2).uniform(-4, 4, 50001).astype(np.float32)
    edges = _edges(-4.0, 4.0, 300)
    whole, _, _ = _count(x, edges)
    monkeypatch.setattr(compiled_binning, "_MAX_CALL", 999)
    split, _, _ = _count(x, edges)
    np.testing.assert_array_equal(split, whole)
    np.testing.assert_array_equal(whole, np.histogram(x, 300, range=(edges[0], edges[-1]))[0])
    a = np.abs(x)
    _, _, low = _count(x, _edges(a.min(), a.max(), 300), absolute=True)
    _, _, split_low = _count(x[::-1], _edges(a.min(), a.max(), 300), absolute=True)
    assert split_low == low == a.min()


def test_without_numba_count_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(compiled_binning, "_kernel", lambda: None)
    assert not compiled_binning.available()
    with pytest.raises(RuntimeError, match=r"pip install \.\[calibration\]"):
        _count(np.zeros(3, np.float32), _edges(-1.0, 1.0, 8))


def test_without_tracking_the_counts_are_the_same_and_no_smallest_value_is_read():
    x = np.random.default_rng(5).standard_normal(10007).astype(np.float32)
    edges = _edges(-5.0, 5.0, 256)
    counts, outside, least = _count(x, edges)
    assert least == 0  # negative values: a sign bit was read (the smallest is exact only for values >= 0)
    untracked = compiled_binning.count(x, cal._bin_params(edges), edges[-1], 256, track=False)
    np.testing.assert_array_equal(untracked[0], counts)
    assert untracked[1] == outside == 0 and untracked[2] == np.inf
