"""Accuracy of one cell on the evaluation set: labels, top-k, agreement with the FP32 reference."""
from __future__ import annotations

from typing import Any

import numpy as np

from quantbench.common.accuracy_stats import paired_accuracy, proportion_ci


class NonFiniteOutputs(ValueError):
    """The model produced NaN or infinite outputs: the cell fails (see :func:`evaluate_outputs`)."""


def evaluate_outputs(rt: Any, reader: Any, reference: np.ndarray | None,
                     accuracy: dict[str, Any] | bool | None) -> dict[str, Any]:
    """Run the evaluation set through ``rt``: top-1/top-5 against labels, agreement and error vs the FP32 reference.

    With labels and the reference, the row also gets the paired comparison with FP32 on the same images
    (:func:`.accuracy_stats.paired_accuracy`) and 95% intervals of top-1 and agreement. A plan with
    ``"holdout": {"seed": int}`` adds ``holdout``: the same comparison on each half of a split of the
    images (:func:`holdout_stats`), so a search can select on one half and report on the other.

    ``accuracy`` is the model's plan from preparation: ``{"top_k": bool, "num_classes": int,
    "note": str}`` (a bare bool is read as ``top_k``); with ``"restrict": [class indices]`` (a data
    source's ``restrict_outputs``) top-1, top-5 and agreement take the argmax over those outputs only,
    and the row lists them in ``restricted_outputs``. Top-k is computed only when the plan allows
    it and every evaluated label is a valid class index; otherwise ``top1``/``top5`` are null and
    ``accuracy_note`` says why.

    Non-finite outputs raise :class:`NonFiniteOutputs`, failing the cell: accuracy, agreement and
    error would all be meaningless, and a failed row is the loudest, least ambiguous signal (the
    timing of a model that computes NaN is not something to ship on either).
    """
    plan = accuracy if isinstance(accuracy, dict) else {"top_k": bool(accuracy), "num_classes": None, "note": ""}
    logits, labels = [], []
    for x, y, n_valid in reader:
        out = np.asarray(rt.fetch(rt.infer(rt.stage(x))))
        out = out.reshape(out.shape[0], -1)
        logits.append(out[:n_valid])
        labels.append(np.asarray(y)[:n_valid])
    lg = np.concatenate(logits)
    if lg.dtype.kind == "f":
        lg = lg.astype(np.float32)
    lb = np.concatenate(labels).astype(np.int64)
    row: dict[str, Any] = {"eval_samples": int(lg.shape[0])}
    if lg.dtype.kind == "f":
        bad = ~np.all(np.isfinite(lg), axis=1)
        if bad.any():
            raise NonFiniteOutputs(f"non-finite outputs (NaN/inf) for {int(bad.sum())} of {len(lg)} evaluated "
                                   f"images: accuracy cannot be measured")
    # restrict_outputs (a subset task): predictions among the data's classes only (plan["restrict"])
    task = np.asarray(plan["restrict"], dtype=np.int64) if plan.get("restrict") else None
    pred = task[lg[:, task].argmax(axis=1)] if task is not None else lg.argmax(axis=1)
    num_classes = plan.get("num_classes") or lg.shape[1]
    outside = bool(lb.size) and (int(lb.min()) < 0 or int(lb.max()) >= num_classes)
    correct = None
    if plan.get("top_k") and not outside:
        correct = pred == lb
        row["top1"] = round(float(correct.mean()), 6)
        row["top1_ci95"] = proportion_ci(int(correct.sum()), correct.size)
        scores = lg[:, task] if task is not None else lg
        k = min(5, scores.shape[1])
        topk = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        if task is not None:
            topk = task[topk]
            row["restricted_outputs"] = [int(c) for c in task]
        row["top5"] = round(float((topk == lb[:, None]).any(axis=1).mean()), 6)
        row["accuracy_note"] = ""
    else:
        row["top1"] = row["top5"] = None
        if plan.get("top_k"):  # preparation saw valid labels; these are not (should not happen)
            row["accuracy_note"] = (f"labels {int(lb.min())}..{int(lb.max())} "
                                    f"fall outside the model's {num_classes} classes")
        else:
            row["accuracy_note"] = plan.get("note") or "top-1 not computed"
    if reference is not None:
        ref = np.asarray(reference).reshape(len(reference), -1)
        if ref.shape == lg.shape:
            ref_pred = task[ref[:, task].argmax(axis=1)] if task is not None else ref.argmax(axis=1)
            agree = ref_pred == pred
            row["agreement_top1"] = round(float(agree.mean()), 6)
            row["agreement_ci95"] = proportion_ci(int(agree.sum()), agree.size)
            if correct is not None:  # paired against FP32 on the same images
                row.update(paired_accuracy(ref_pred == lb, correct))
                if plan.get("holdout"):
                    row["holdout"] = holdout_stats(ref_pred == lb, correct, lb, plan["holdout"])
            err = np.abs(ref.astype(np.float64) - lg.astype(np.float64))
            row["max_abs_err"] = round(float(err.max()), 6)
            row["mean_abs_err"] = round(float(err.mean()), 6)
        else:
            row["audit_note_ref"] = f"reference shape {ref.shape} != outputs {lg.shape}"
    return row


def holdout_mask(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """True for the images of the selection half: half of each label's images, drawn with ``seed``.

    Stratified by label so both halves have the same class mix (evaluation images come in index
    order, which is class-sorted in folder datasets).
    """
    labels = np.asarray(labels)
    mask = np.zeros(labels.size, bool)
    rng = np.random.default_rng(seed)
    carry = 0  # odd-sized classes alternate which half gets the extra image
    for label in np.unique(labels):
        where = rng.permutation(np.flatnonzero(labels == label))
        k = (where.size + carry) // 2
        carry = (where.size + carry) % 2
        mask[where[:k]] = True
    return mask


def holdout_stats(fp32_correct: np.ndarray, variant_correct: np.ndarray, labels: np.ndarray,
                  spec: dict[str, Any] | bool) -> dict[str, Any]:
    """``{"select": ..., "report": ...}``: n, top1 (with its interval) and the paired comparison per half."""
    seed = int(spec.get("seed", 0)) if isinstance(spec, dict) else 0
    mask = holdout_mask(labels, seed)
    out: dict[str, Any] = {"seed": seed}
    for name, part in (("select", mask), ("report", ~mask)):
        if not part.any():
            out[name] = None
            continue
        v = variant_correct[part]
        out[name] = {"n": int(part.sum()), "top1": round(float(v.mean()), 6),
                     "top1_ci95": proportion_ci(int(v.sum()), v.size),
                     "top1_fp32": round(float(fp32_correct[part].mean()), 6),
                     **paired_accuracy(fp32_correct[part], v)}
    return out
