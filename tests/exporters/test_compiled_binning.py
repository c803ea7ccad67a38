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


# ---- ValueRange: pass 1's one-read minimum, maximum and minimum |x| ------------------------------------------------

def _bounds(*chunks: np.ndarray) -> tuple[np.float32, np.float32, np.float32]:
    found = compiled_binning.ValueRange()
    for c in chunks:
        found.add(c)
    return found.bounds


@pytest.mark.parametrize("size", [1, 7, 16, 4097, 100_003])
def test_value_range_is_numpys_min_max_and_min_abs_over_every_chunk(size):
    rng = np.random.default_rng(size)
    x = (rng.standard_normal(size) * rng.uniform(1e-3, 1e3)).astype(np.float32)
    low, high, low_abs = _bounds(*np.array_split(x, 3))
    assert (low, high, low_abs) == (x.min(), x.max(), np.abs(x).min())
    assert all(type(v) is np.float32 for v in (low, high, low_abs))


def test_value_range_orders_signs_infinities_and_tiny_values_as_floats_do():
    x = np.array([-1e-45, 3e38, -np.inf, 1e-45, -2.5, np.inf, -3e38], np.float32)  # subnormals, both infinities
    assert _bounds(x) == (-np.inf, np.inf, np.float32(1e-45))
    y = np.array([-5.0, -1e-3, -2.0], np.float32)  # all negative: the largest is the one nearest 0
    assert _bounds(y) == (np.float32(-5.0), np.float32(-1e-3), np.float32(1e-3))
    z = np.array([7.0, 0.5, 3.0], np.float32)
    assert _bounds(z) == (np.float32(0.5), np.float32(7.0), np.float32(0.5))


def test_value_range_reads_negative_zero_as_zero():
    low, high, low_abs = _bounds(np.array([-0.0, 0.0, -0.0], np.float32))
    assert (low, high, low_abs) == (0.0, 0.0, 0.0)
    assert not np.signbit(low) and not np.signbit(high) and not np.signbit(low_abs)
    low, high, _ = _bounds(np.array([-0.0, 2.0], np.float32))
    assert not np.signbit(low) and low == 0.0 and high == 2.0


@pytest.mark.parametrize("nan", [np.float32(np.nan), -np.float32(np.nan)], ids=["nan", "negative-nan"])
def test_value_range_shows_a_nan_as_a_non_finite_bound(nan):
    x = np.linspace(-1, 1, 1001, dtype=np.float32)
    x[500] = nan
    low, high, _ = _bounds(x)
    assert not (np.isfinite(low) and np.isfinite(high))


def test_value_range_of_nothing_is_empty_and_other_dtypes_are_read_as_float32():
    assert _bounds() == (np.inf, -np.inf, np.inf)
    assert _bounds(np.zeros(0, np.float32)) == (np.inf, -np.inf, np.inf)
    half = np.array([-3.5, 0.25, 65504.0], np.float16)
    assert _bounds(half) == (np.float32(-3.5), np.float32(65504.0), np.float32(0.25))
    wide = np.array([0.1, -2.5, 1 + 1e-12], np.float64)  # rounded to nearest float32, as ORT's Cast
    assert _bounds(wide) == (np.float32(-2.5), np.float32(1.0), np.float32(0.1))


def test_value_range_without_numba_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(compiled_binning, "_kernel", lambda: None)
    with pytest.raises(RuntimeError, match=r"pip install \.\[calibration\]"):
        compiled_binning.ValueRange()


def test_the_kernels_compile_once_and_later_processes_load_them_from_numbas_cache(tmp_path):
    """Each calibration process used to compile the kernel afresh (0.9 s here) and add an entry to numba's cache
    index: defined where numba's cache finds them again, a second process loads them and saves nothing."""
    import os
    import subprocess
    import sys

    script = ("import numpy as np\n"
              "from quantbench.exporters import calibrate as cal, compiled_binning as cb\n"
              "edges = np.histogram_bin_edges(np.zeros(0, np.float32), 8, range=(np.float32(-1), np.float32(1)))\n"
              "x = np.linspace(-1, 1, 100, dtype=np.float32)\n"
              "cb.count(x, cal._bin_params(edges), edges[-1], 8)\n"
              "cb.ValueRange().add(x)\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), NUMBA_DEBUG_CACHE="1")
    logs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
            for _ in range(2)]
    assert "data saved" in logs[0]
    assert "data loaded" in logs[1] and "data saved" not in logs[1] and "index saved" not in logs[1]
