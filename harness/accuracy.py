"""Accuracy of one cell on the evaluation set: labels, top-k, agreement with the FP32 reference."""
from __future__ import annotations

from typing import Any

import numpy as np


def evaluate_outputs(rt: Any, reader: Any, reference: np.ndarray | None, labels_meaningful: bool) -> dict[str, Any]:
    """Run the evaluation set through ``rt``: top-1/top-5 against labels, agreement and error vs the FP32 reference."""
    logits, labels = [], []
    for x, y, n_valid in reader:
        out = rt.fetch(rt.infer(rt.stage(x)))
        out = np.asarray(out).reshape(out.shape[0], -1)
        logits.append(out[:n_valid])
        labels.append(y[:n_valid])
    lg = np.concatenate(logits).astype(np.float32)
    lb = np.concatenate(labels)
    row: dict[str, Any] = {"eval_samples": int(lg.shape[0])}
    if not np.all(np.isfinite(lg)):
        row["nonfinite_outputs"] = int((~np.isfinite(lg)).sum())
    pred = lg.argmax(axis=1)
    if labels_meaningful:
        row["top1"] = round(float((pred == lb).mean()), 6)
        k = min(5, lg.shape[1])
        topk = np.argpartition(-lg, k - 1, axis=1)[:, :k]
        row["top5"] = round(float((topk == lb[:, None]).any(axis=1).mean()), 6)
    else:
        row["top1"] = row["top5"] = None
    if reference is not None and reference.shape == lg.shape:
        row["agreement_top1"] = round(float((reference.argmax(axis=1) == pred).mean()), 6)
        err = np.abs(reference - lg)
        row["max_abs_err"] = round(float(np.nanmax(err)), 6)
        row["mean_abs_err"] = round(float(np.nanmean(err)), 6)
    elif reference is not None:
        row["audit_note_ref"] = f"reference shape {reference.shape} != outputs {lg.shape}"
    return row
