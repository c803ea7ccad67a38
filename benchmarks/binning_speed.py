"""Calibration's bin counting per value: numba's kernel against numpy's exact counting, on the same data.

Counts activation-like data (a Relu's output: half zeros; a Conv's: signed, heavy-tailed) into the bins a histogram
method uses, both ways, alternating, and prints ns per value (median of the repeats) and numba's speed-up. The counts
are checked equal each time. A kernel change that stops the loop vectorising (a float minimum without fast-math did:
1 -> 4 ns a value) shows here first.

    python benchmarks/binning_speed.py --values 16000000 --bins 512 --repeat 5
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--values", type=int, default=16_000_000, help="values per tensor (ResNet-50 at 224: ~17 M/image)")
    ap.add_argument("--bins", type=int, default=512, help="bins (Entropy's default 512, the others' 2048)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    from quantbench.exporters import calibrate as cal
    from quantbench.exporters import compiled_binning

    if not compiled_binning.available():
        raise SystemExit(f"numba is not installed: {compiled_binning.INSTALL_HINT}")
    rng = np.random.default_rng(0)
    data = {"relu": np.maximum(rng.standard_normal(args.values), 0).astype(np.float32),
            "conv": (rng.standard_t(4, args.values) * 0.7).astype(np.float32)}
    print(f"{args.values:,} values, {args.bins} bins, {args.repeat} repeats (median)")
    for name, x in data.items():
        top = np.float32(np.abs(x).max())
        hists = cal._Histograms({"x": (-top, top)}, args.bins, False)
        times: dict[str, list[float]] = {"numba": [], "numpy": []}
        for _ in range(args.repeat):
            for way in ("numba", "numpy"):
                hists.compiled = way == "numba"  # the one switch add_values reads
                hists.counts["x"][:] = 0
                t0 = time.perf_counter()
                hists.add_values("x", x)
                times[way].append(time.perf_counter() - t0)
                np.testing.assert_array_equal(hists.counts["x"], np.histogram(x, args.bins, range=(-top, top))[0])
        ns = {way: float(np.median(t)) / x.size * 1e9 for way, t in times.items()}
        print(f"{name:5s} numba {ns['numba']:.2f} ns/value   numpy {ns['numpy']:.2f} ns/value   "
              f"numba {ns['numpy'] / ns['numba']:.1f}x faster   (counts equal)")


if __name__ == "__main__":
    main()
