"""The Entropy threshold search gives ORT's thresholds exactly, on many kinds of histograms."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from quantbench.exporters.histogram_entropy import entropy_threshold

pytestmark = pytest.mark.ort_cpu


def _histograms():
    rng = np.random.default_rng(0)
    for bins in (512, 2048, 257, 300):
        for kind in ("normal", "relu", "sparse", "spiky", "one", "skewed"):
            top = np.float32(rng.uniform(0.1, 20))
            if kind == "normal":
                x = rng.standard_normal(20000) * top / 4
            elif kind == "relu":
                x = np.maximum(rng.standard_normal(20000), 0) * top / 3
            elif kind == "sparse":
                x = rng.choice([-top / 2, 0, top / 3, top * 0.9], 500)
            elif kind == "spiky":
                x = np.concatenate([np.zeros(5000), rng.laplace(0, top / 20, 3000)])
            elif kind == "one":
                x = np.full(10, top / 7)
            else:
                x = rng.exponential(top / 10, 20000) - top / 50
            x = np.clip(x, -top, top).astype(np.float32)
            counts, edges = np.histogram(x, bins, range=(-top, top))
            yield counts, edges, np.float32(x.min()), np.float32(x.max()), np.array(top, np.float32)


@pytest.mark.parametrize("quantized", [128, 64, 255])
def test_thresholds_equal_orts_get_entropy_threshold(quantized):
    from onnxruntime.quantization.calibrate import HistogramCollector

    collector = HistogramCollector("entropy", False, 512, quantized, 99.99, "same")
    for histogram in _histograms():
        if histogram[0].size // 2 < quantized // 2:
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            ref = collector.get_entropy_threshold(histogram, quantized)
        ours = entropy_threshold(histogram, quantized)
        assert [float(v) for v in ours] == [float(v) for v in ref]
        assert all(a.dtype == b.dtype for a, b in zip(ours, ref, strict=True))
