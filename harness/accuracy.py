"""Accuracy of one cell on the evaluation set: labels, top-k, agreement with the FP32 reference."""
from __future__ import annotations

from typing import Any

import numpy as np


class NonFiniteOutputs(ValueError):
    """The model produced NaN or infinite outputs: the cell fails (see :func:`evaluate_outputs`)."""


def evaluate_outputs(rt: Any, reader: Any, reference: np.ndarray | None,
                     accuracy: dict[str, Any] | bool | None) -> dict[str, Any]:
    """Run the evaluation set through ``rt``: top-1/top-5 against labels, agreement and error vs the FP32 reference.

    ``accuracy`` is the model's plan from preparation: ``{"top_k": bool, "num_classes": int,
    "note": str}`` (a bare bool is read as ``top_k``). Top-k is computed only when the plan allows
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
    pred = lg.argmax(axis=1)
    num_classes = plan.get("num_classes") or lg.shape[1]
    outside = bool(lb.size) and (int(lb.min()) < 0 or int(lb.max()) >= num_classes)
    if plan.get("top_k") and not outside:
        row["top1"] = round(float((pred == lb).mean()), 6)
        k = min(5, lg.shape[1])
        topk = np.argpartition(-lg, k - 1, axis=1)[:, :k]
        row["top5"] = round(float((topk == lb[:, None]).any(axis=1).mean()), 6)
        row["accuracy_note"] = ""
    else:
        row["top1"] = row["top5"] = None
        if plan.get("top_k"):  # preparation saw valid labels; these are not (should not happen)
            row["accuracy_note"] = f"labels {int(lb.min())}..{int(lb.max())} fall outside the model's {num_classes} classes"
        else:
            row["accuracy_note"] = plan.get("note") or "top-1 not computed"
    if reference is not None:
        ref = np.asarray(reference).reshape(len(reference), -1)
        if ref.shape == lg.shape:
            row["agreement_top1"] = round(float((ref.argmax(axis=1) == pred).mean()), 6)
            err = np.abs(ref.astype(np.float64) - lg.astype(np.float64))
            row["max_abs_err"] = round(float(err.max()), 6)
            row["mean_abs_err"] = round(float(err.mean()), 6)
        else:
            row["audit_note_ref"] = f"reference shape {ref.shape} != outputs {lg.shape}"
    return row
