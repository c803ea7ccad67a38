"""Top-1/top-5, agreement and the label-range rule, on logits chosen by hand.

A fake runtime returns fixed logits per image (the "image" it is given is the image's index), so
each expected figure is counted by hand from the table below, not computed with the code under test.
"""
from __future__ import annotations

import types

import numpy as np
import pytest

from quantbench.harness.measure.accuracy import NonFiniteOutputs, evaluate_outputs
from quantbench.harness.sweep.prepare_worker import accuracy_plan

CLASSES = 10


def _logits_ranking(label: int, rank: int, n: int = CLASSES) -> np.ndarray:
    """Logits over ``n`` classes where class ``label`` has the ``rank``-th largest value (1 = the top)."""
    order = [c for c in range(n) if c != label]
    order.insert(rank - 1, label)  # order[0] gets the largest logit
    out = np.zeros(n, np.float32)
    for position, c in enumerate(order):
        out[c] = float(n - position)
    return out


class IndexRuntime:
    """Returns ``logits[i]`` for each image index ``i`` in the batch."""

    def __init__(self, logits: np.ndarray) -> None:
        self.logits = logits

    def stage(self, x):
        return x

    def infer(self, x):
        return self.logits[np.asarray(x, dtype=np.int64)]

    def fetch(self, out):
        return out


def _reader(labels: list[int], batch: int):
    """(indices, labels, n_valid) batches; the last one padded with copies of index 0 (as pad_last does)."""
    out = []
    for start in range(0, len(labels), batch):
        idx = list(range(start, min(start + batch, len(labels))))
        n_valid = len(idx)
        idx += [0] * (batch - n_valid)
        out.append((np.array(idx), np.array([labels[i] for i in idx]), n_valid))
    return out


PLAN = {"top_k": True, "num_classes": CLASSES, "note": ""}


def _evaluate(rows: list[tuple[int, int]], batch: int = 3, plan=PLAN, reference=None, n: int = CLASSES):
    """``rows``: (true label, rank of the true label in the logits)."""
    logits = np.stack([_logits_ranking(label, rank, n) for label, rank in rows])
    return evaluate_outputs(IndexRuntime(logits), _reader([label for label, _ in rows], batch), reference, plan)


def test_top5_counts_the_true_label_in_5th_place_but_not_in_6th():
    # ranks of the true label: 1st, 2nd, 5th, 6th, 6th  ->  top-1 1/5, top-5 3/5
    row = _evaluate([(3, 1), (7, 2), (0, 5), (9, 6), (4, 6)])
    assert row["eval_samples"] == 5
    assert row["top1"] == 0.2
    assert row["top5"] == 0.6
    assert row["accuracy_note"] == ""


def test_top5_where_top1_is_always_wrong():
    row = _evaluate([(c, 2 + c % 4) for c in range(CLASSES)])  # ranks 2..5: never first, always in the top 5
    assert row["top1"] == 0.0 and row["top5"] == 1.0


def test_top5_with_fewer_than_5_classes_is_1():
    row = _evaluate([(0, 3), (1, 2), (2, 1)], plan={"top_k": True, "num_classes": 3, "note": ""}, n=3)
    assert row["top1"] == pytest.approx(1 / 3, abs=1e-6) and row["top5"] == 1.0


def test_padding_of_the_last_batch_is_not_counted():
    # 4 images in batches of 3: the second batch holds 1 real image and 2 copies of image 0 (a hit).
    row = _evaluate([(1, 1), (2, 6), (3, 6), (4, 6)], batch=3)
    assert row["eval_samples"] == 4 and row["top1"] == 0.25 and row["top5"] == 0.25


def test_agreement_and_error_against_a_hand_made_reference():
    rows = [(3, 1), (7, 2), (0, 5), (9, 6)]
    logits = np.stack([_logits_ranking(label, rank) for label, rank in rows])
    reference = logits.copy()
    reference[1] = _logits_ranking(7, 1)  # the reference ranks image 1's label first: argmax differs there
    reference[3, 0] += 0.25
    row = evaluate_outputs(IndexRuntime(logits), _reader([r[0] for r in rows], 2), reference, PLAN)
    assert row["agreement_top1"] == 0.75
    # image 1: class 7 moved from 9.0 to 10.0 and the old first class from 10.0 to 9.0; image 3: +0.25
    assert row["max_abs_err"] == 1.0
    assert row["mean_abs_err"] == pytest.approx((1.0 + 1.0 + 0.25) / 40, abs=1e-6)


@pytest.mark.parametrize(("top", "accepted"), [(CLASSES - 1, True), (CLASSES, False)])
def test_evaluation_refuses_a_label_equal_to_the_class_count(top, accepted):
    # 12 logits per image, 10 declared classes: label 10 can be indexed but is not a class of the model.
    rows = [(0, 1), (top, 1)]
    row = _evaluate(rows, plan={"top_k": True, "num_classes": CLASSES, "note": ""}, n=12)
    if accepted:
        assert row["top1"] == 1.0 and row["accuracy_note"] == ""
    else:
        assert row["top1"] is None and row["top5"] is None
        assert row["accuracy_note"] == f"labels 0..{CLASSES} fall outside the model's {CLASSES} classes"


def test_evaluation_refuses_a_negative_label():
    logits = np.stack([_logits_ranking(0, 1), _logits_ranking(1, 1)])
    reader = [(np.array([0, 1]), np.array([0, -1]), 2)]
    row = evaluate_outputs(IndexRuntime(logits), reader, None, PLAN)
    assert row["top1"] is None and "labels -1..0 fall outside" in row["accuracy_note"]


def test_labels_are_not_narrowed_to_a_small_integer_type():
    # label 300 in a 1000-class model (uint8 would wrap it to 44)
    rows = [(300, 1), (44, 2)]
    row = _evaluate(rows, batch=2, plan={"top_k": True, "num_classes": 1000, "note": ""}, n=1000)
    assert row["top1"] == 0.5


def test_non_finite_logits_fail_with_the_count():
    logits = np.stack([_logits_ranking(0, 1), _logits_ranking(1, 1), _logits_ranking(2, 1)])
    logits[1, 4] = np.nan
    logits[2, 0] = np.inf
    with pytest.raises(NonFiniteOutputs, match="for 2 of 3 evaluated"):
        evaluate_outputs(IndexRuntime(logits), _reader([0, 1, 2], 3), None, PLAN)


def _source(num_classes=None, is_random=False):
    return types.SimpleNamespace(num_classes=num_classes, is_random=is_random)


@pytest.mark.parametrize(("labels", "top_k"), [
    ([0, CLASSES - 1], True),   # classes - 1 is the last class
    ([0, CLASSES], False),      # label == classes is outside
    ([-1, 3], False),
    ([2, 5], True),             # a subset of the classes is fine
])
def test_preparation_label_range_boundary(labels, top_k):
    plan = accuracy_plan("logits", [CLASSES], True, _source(), np.array(labels))
    assert plan["top_k"] is top_k and plan["num_classes"] == CLASSES
    if not top_k:
        assert plan["note"].startswith(f"labels {min(labels)}..{max(labels)} fall outside the model's 10 classes")


def test_preparation_declared_class_count_is_the_boundary():
    # 12 outputs, num_classes = 10 declared: label 10 is refused, 9 accepted.
    assert accuracy_plan("y", [12], True, _source(num_classes=10), np.array([9]))["top_k"] is True
    refused = accuracy_plan("y", [12], True, _source(num_classes=10), np.array([10]))
    assert refused["top_k"] is False and "labels 10..10 fall outside the model's 10 classes" in refused["note"]


def test_fractions_are_kept_to_six_decimals_and_intervals_come_with_them():
    from quantbench.common.accuracy_stats import paired_accuracy, proportion_ci

    # 3 images: true label 1st, 2nd, 6th -> top-1 1/3, top-5 2/3; the reference agrees on image 0 only
    rows = [(0, 1), (1, 2), (2, 6)]
    logits = np.stack([_logits_ranking(label, rank) for label, rank in rows])
    reference = np.stack([_logits_ranking(0, 1), _logits_ranking(1, 1), _logits_ranking(2, 1)])
    row = evaluate_outputs(IndexRuntime(logits), _reader([0, 1, 2], 3), reference, PLAN)
    assert row["top1"] == 0.333333 and row["top5"] == 0.666667 and row["agreement_top1"] == 0.333333
    assert row["top1_ci95"] == proportion_ci(1, 3) and row["agreement_ci95"] == proportion_ci(1, 3)
    # paired with FP32 on the same images: FP32 (the reference) is right on all 3, the variant on 1
    expected = paired_accuracy(np.array([True, True, True]), np.array([True, False, False]))
    assert {k: row[k] for k in expected} == expected and expected["fp32_only_correct"] == 2


def test_errors_are_measured_in_float64_to_six_decimals():
    logits = np.array([[1.0, 2.0, 3.0]], np.float16)
    reference = np.array([[1.0, 2.0, 3.0001234567]], np.float64)
    row = evaluate_outputs(IndexRuntime(logits), [(np.array([0]), np.array([2]), 1)], reference,
                           {"top_k": True, "num_classes": 3, "note": ""})
    assert row["max_abs_err"] == 0.000123 and row["mean_abs_err"] == 0.000041


def test_a_bare_bool_plan_and_the_default_note():
    logits = np.stack([_logits_ranking(1, 1), _logits_ranking(2, 3)])
    reader = _reader([1, 2], 2)
    on = evaluate_outputs(IndexRuntime(logits), reader, None, True)  # class count from the outputs
    assert (on["top1"], on["top5"], on["accuracy_note"]) == (0.5, 1.0, "")
    off = evaluate_outputs(IndexRuntime(logits), reader, None, False)
    assert off["top1"] is None and off["accuracy_note"] == "top-1 not computed"


def test_outputs_of_any_per_sample_shape_are_flattened():
    logits = np.stack([_logits_ranking(3, 1), _logits_ranking(4, 2)]).reshape(2, 1, 1, CLASSES)
    row = evaluate_outputs(IndexRuntime(logits), _reader([3, 4], 2), logits.reshape(2, CLASSES, 1), PLAN)
    assert row["top1"] == 0.5 and row["agreement_top1"] == 1.0 and row["max_abs_err"] == 0.0


def test_a_reference_of_another_shape_is_noted_not_compared():
    logits = np.stack([_logits_ranking(0, 1)])
    row = evaluate_outputs(IndexRuntime(logits), _reader([0], 1), np.zeros((1, 7), np.float32), PLAN)
    assert "agreement_top1" not in row
    assert row["audit_note_ref"] == "reference shape (1, 7) != outputs (1, 10)"


def test_integer_outputs_are_compared_but_not_checked_for_nan():
    logits = np.array([[0, 5, 1], [7, 0, 0]], np.int32)  # argmax 1 and 0
    row = evaluate_outputs(IndexRuntime(logits), _reader([1, 2], 2), logits.copy(),
                           {"top_k": True, "num_classes": 3, "note": ""})
    assert row["top1"] == 0.5 and row["agreement_top1"] == 1.0 and row["max_abs_err"] == 0.0


def test_holdout_halves_are_reported_when_the_plan_asks():
    from quantbench.harness.measure.accuracy import holdout_stats

    labels = [c % CLASSES for c in range(20)]
    rows = [(label, 1 if i % 3 else 2) for i, label in enumerate(labels)]  # every third image wrong
    logits = np.stack([_logits_ranking(label, rank) for label, rank in rows])
    reference = np.stack([_logits_ranking(label, 1) for label in labels])  # FP32 right everywhere
    plan = {**PLAN, "holdout": {"seed": 3}}
    row = evaluate_outputs(IndexRuntime(logits), _reader(labels, 5), reference, plan)
    correct = np.array([rank == 1 for _, rank in rows])
    assert row["holdout"] == holdout_stats(np.ones(20, bool), correct, np.array(labels), {"seed": 3})
    assert row["holdout"]["select"]["n"] + row["holdout"]["report"]["n"] == 20
    assert "holdout" not in evaluate_outputs(IndexRuntime(logits), _reader(labels, 5), reference, PLAN)
