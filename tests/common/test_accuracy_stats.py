"""Intervals and tests for accuracy: coverage by simulation, known values, the paired bookkeeping."""
from __future__ import annotations

import numpy as np
import pytest

from quantbench.common.accuracy_stats import (
    images_to_resolve,
    mcnemar_exact_p,
    paired_accuracy,
    paired_diff_ci,
    significant,
    wilson,
)
from quantbench.harness.measure.accuracy import holdout_mask, holdout_stats

# (n images, P(both right), P(only the variant right), P(only FP32 right)): from a large, tight
# comparison to a small one with a real loss, and one where the variant never wins an image.
SCENARIOS = [(390, 0.80, 0.02, 0.025), (2000, 0.88, 0.01, 0.015), (10000, 0.90, 0.003, 0.004),
             (500, 0.60, 0.05, 0.03), (1000, 0.85, 0.02, 0.02), (300, 0.70, 0.0, 0.02)]


@pytest.mark.parametrize(("n", "both", "v_only", "f_only"), SCENARIOS)
def test_95_intervals_cover_the_true_accuracy_and_difference_about_95_percent_of_the_time(n, both, v_only, f_only):
    rng = np.random.default_rng(n)
    sims = 2500
    counts = rng.multinomial(n, [both, v_only, f_only, 1 - both - v_only - f_only], size=sims)
    lo, hi = paired_diff_ci(*counts.T)
    true_delta = v_only - f_only
    covered = np.mean((lo <= true_delta) & (true_delta <= hi))
    assert 0.93 <= covered <= 0.97 or (v_only == 0 and 0.93 <= covered <= 1.0), covered
    wl, wh = wilson(counts[:, 0] + counts[:, 1], n)
    true_top1 = both + v_only
    assert 0.93 <= np.mean((wl <= true_top1) & (true_top1 <= wh)) <= 0.97


def test_wilson_matches_known_values_and_its_boundaries():
    lo, hi = wilson(82, 100)  # textbook: 0.7333 .. 0.8829
    assert lo == pytest.approx(0.7333, abs=1e-4) and hi == pytest.approx(0.8829, abs=1e-4)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    lo, hi = wilson(320, 390)  # the "±3.8 points on 82% of 390 images"
    assert (hi - lo) / 2 == pytest.approx(0.038, abs=0.001)


def test_newcombe_paired_interval_approaches_the_paired_wald_interval_on_many_images():
    # For large n every sound paired interval tends to delta ± z·sqrt((b + c)/n − delta²)/sqrt(n);
    # the unpaired width (from the two accuracies alone) would be about 8× wider here.
    n, both, v_only, f_only = 100_000, 88_000, 1_500, 2_500
    lo, hi = paired_diff_ci(both, v_only, f_only, n - both - v_only - f_only)
    delta = (v_only - f_only) / n
    half = 1.959964 * np.sqrt(((v_only + f_only) / n - delta ** 2) / n)
    assert (lo + hi) / 2 == pytest.approx(delta, abs=half * 0.02)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.03)


def test_mcnemar_exact_p_is_the_two_sided_binomial_of_the_discordant_pairs():
    assert mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(3, 3) == 1.0
    assert mcnemar_exact_p(10, 0) == pytest.approx(2 * 0.5 ** 10)
    assert mcnemar_exact_p(0, 10) == mcnemar_exact_p(10, 0)  # symmetric in the direction
    from scipy.stats import binomtest

    for b, c in ((7, 2), (2, 7), (30, 12), (100, 0), (500, 430), (1200, 1100), (3, 2000)):
        assert mcnemar_exact_p(b, c) == pytest.approx(binomtest(c, b + c, 0.5).pvalue, rel=1e-9)


def test_mcnemar_works_where_torch_is_hidden_from_imports(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # what the sensitivity worker does (scipy.stats then breaks)
    assert mcnemar_exact_p(10, 0) == pytest.approx(2 * 0.5 ** 10)


def test_identical_predictions_give_zero_difference_p_one_and_an_interval_around_zero():
    correct = np.random.default_rng(1).random(2000) < 0.9
    out = paired_accuracy(correct, correct.copy())
    assert out["delta_top1"] == 0 and out["delta_top1_p"] == 1.0
    assert out["fp32_only_correct"] == out["variant_only_correct"] == 0
    lo, hi = out["delta_top1_ci95"]
    assert lo < 0 < hi and hi - lo < 0.005 and significant(out["delta_top1_ci95"]) is False


def test_a_planted_five_percent_loss_is_significant_with_the_right_sign():
    fp32 = np.ones(2000, bool)
    variant = fp32.copy()
    variant[::20] = False  # exactly 5% flipped to wrong
    out = paired_accuracy(fp32, variant)
    assert out["delta_top1"] == pytest.approx(-0.05) and out["fp32_only_correct"] == 100
    assert out["delta_top1_p"] < 1e-20 and out["delta_top1_ci95"][1] < 0
    back = paired_accuracy(variant, fp32)
    assert back["delta_top1"] == pytest.approx(0.05) and back["delta_top1_ci95"][0] > 0


def test_images_to_resolve_half_a_point_follows_the_discordance():
    # 3% of images disagree: the paired half-width shrinks as 1/sqrt(n)
    n = images_to_resolve(0.03, -0.005, 0.005)
    assert 4400 < n < 4700
    assert images_to_resolve(0.0, 0.0, 0.005) is None
    assert images_to_resolve(0.06, 0.0, 0.005) == pytest.approx(2 * n, rel=0.02)


def test_holdout_halves_are_disjoint_stratified_and_reproducible():
    labels = np.repeat(np.arange(5), [11, 10, 9, 1, 40])
    mask = holdout_mask(labels, seed=3)
    assert abs(int(mask.sum()) - len(labels) / 2) <= 1
    for c in range(5):
        assert abs(int(mask[labels == c].sum()) - (labels == c).sum() / 2) <= 1
    assert (mask == holdout_mask(labels, seed=3)).all() and not (mask == holdout_mask(labels, seed=4)).all()
    fp32 = np.ones(len(labels), bool)
    stats = holdout_stats(fp32, ~mask, labels, {"seed": 3})  # the variant is wrong on exactly the selection half
    assert stats["select"]["top1"] == 0.0 and stats["report"]["top1"] == 1.0
    assert stats["select"]["n"] + stats["report"]["n"] == len(labels)
