"""Uncertainty of accuracy figures: one proportion, and a variant against FP32 on the same images.

Methods (95% unless ``z`` says otherwise), each usable on numbers or numpy arrays:

- :func:`wilson`: Wilson score interval for a proportion (Wilson 1927), well behaved near 0 and 1.
- :func:`paired_diff_ci`: Newcombe's hybrid score interval for a difference of paired proportions
  (Newcombe 1998, method 10: Wilson limits of both proportions, squared and added with their
  correlation phi, where phi's positive part is shrunk by n/2 as in Newcombe & Altman 2000).
- :func:`mcnemar_exact_p`: exact McNemar test, the two-sided binomial test of the discordant pairs
  at 1/2 (Dietterich 1998 recommends it for comparing two classifiers on one test set).
- :func:`images_to_resolve`: how many images a paired difference needs for a given half-width.

Conventions: ``fp32_only`` (b) counts images FP32 gets right and the variant wrong, ``variant_only``
(c) the reverse; the difference is variant − FP32 = (c − b) / n, in the unit of top-1 (a fraction).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson(successes: Any, n: Any, z: float = Z95) -> tuple[Any, Any]:
    """Wilson score interval (lo, hi) for ``successes`` of ``n``; (nan, nan) where n is 0."""
    x, m = np.asarray(successes, float), np.asarray(n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = x / m
        denom = 1 + z * z / m
        centre = (p + z * z / (2 * m)) / denom
        half = z * np.sqrt(p * (1 - p) / m + z * z / (4 * m * m)) / denom
    lo, hi = np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)
    # Exact limits at the boundaries (rounding otherwise leaves 1e-17 instead of 0).
    lo, hi = np.where(x == 0, 0.0, lo), np.where(x == m, 1.0, hi)
    return _out(lo), _out(hi)


def paired_diff_ci(both: Any, variant_only: Any, fp32_only: Any, neither: Any,
                   z: float = Z95) -> tuple[Any, Any]:
    """Newcombe's (1998, method 10) interval (lo, hi) for variant − FP32 accuracy on the same n images.

    The four arguments are the cells of the paired 2×2 table: images both get right, only the variant,
    only FP32, neither.
    """
    a, c, b, d = (np.asarray(v, float) for v in (both, variant_only, fp32_only, neither))
    n = a + b + c + d
    p1, p2 = (a + c) / n, (a + b) / n  # variant's accuracy, FP32's accuracy
    l1, u1 = (np.asarray(v) for v in wilson(a + c, n, z))
    l2, u2 = (np.asarray(v) for v in wilson(a + b, n, z))
    diff = p1 - p2
    margins = (a + c) * (b + d) * (a + b) * (c + d)
    assoc = a * d - b * c
    with np.errstate(invalid="ignore", divide="ignore"):
        phi = np.where(assoc > n / 2, (assoc - n / 2), np.where(assoc < 0, assoc, 0.0)) / np.sqrt(margins)
    phi = np.where(margins > 0, phi, 0.0)
    lower = np.sqrt(np.maximum((p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2), 0.0))
    upper = np.sqrt(np.maximum((u1 - p1) ** 2 + (p2 - l2) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2), 0.0))
    return _out(np.maximum(diff - lower, -1.0)), _out(np.minimum(diff + upper, 1.0))


def mcnemar_exact_p(fp32_only: int, variant_only: int) -> float:
    """Two-sided exact McNemar p-value: binomial test of ``variant_only`` of the discordant pairs at 1/2.

    At 1/2 the binomial is symmetric, so the two-sided p is twice the smaller tail (capped at 1). Summed
    in log space with the standard library only: workers that hide torch from imports break scipy.stats.
    """
    b, c = int(fp32_only), int(variant_only)
    n, k = b + c, min(b, c)
    if n == 0 or 2 * k == n:
        return 1.0
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k + 1)]
    top = max(logs)
    tail = math.exp(top) * math.fsum(math.exp(v - top) for v in logs)
    return float(min(1.0, 2 * tail))


def paired_accuracy(fp32_correct: np.ndarray, variant_correct: np.ndarray) -> dict[str, Any]:
    """The paired comparison of two per-image correctness vectors (same images, same order), as row fields.

    ``delta_top1`` (variant − FP32), ``delta_top1_ci95`` [lo, hi], ``delta_top1_p`` (exact McNemar),
    ``fp32_only_correct`` and ``variant_only_correct`` (the discordant counts).
    """
    f, v = np.asarray(fp32_correct, bool), np.asarray(variant_correct, bool)
    if f.shape != v.shape or f.ndim != 1 or f.size == 0:
        raise ValueError(f"paired correctness needs two equal 1-D vectors, not {f.shape} and {v.shape}")
    both, b, c = int((f & v).sum()), int((f & ~v).sum()), int((~f & v).sum())
    neither = f.size - both - b - c
    lo, hi = paired_diff_ci(both, c, b, neither)
    return {"delta_top1": round((c - b) / f.size, 6), "delta_top1_ci95": [round(lo, 6), round(hi, 6)],
            "delta_top1_p": round(mcnemar_exact_p(b, c), 6), "fp32_only_correct": b, "variant_only_correct": c}


def proportion_ci(successes: int, n: int) -> list[float] | None:
    """Wilson 95% interval as a row field ``[lo, hi]`` rounded to 6 digits (None for n = 0)."""
    if n <= 0:
        return None
    lo, hi = wilson(successes, n)
    return [round(lo, 6), round(hi, 6)]


def images_to_resolve(discordant_rate: float, delta: float, half_width: float, z: float = Z95) -> int | None:
    """Images a paired difference needs for a 95% half-width of ``half_width`` (a fraction).

    The variance of (c − b)/n per image is (b + c)/n − Δ²; None when the data show no disagreement
    to extrapolate from.
    """
    var = discordant_rate - delta * delta
    if not var > 0 or not half_width > 0:
        return None
    return math.ceil(z * z * var / (half_width * half_width))


def significant(ci: Any) -> bool | None:
    """True when a difference's interval excludes 0, False when it contains 0, None when unknown."""
    if not (isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci)):
        return None
    return bool(ci[0] > 0 or ci[1] < 0)


def _out(v: np.ndarray) -> Any:
    return float(v) if np.ndim(v) == 0 else v
