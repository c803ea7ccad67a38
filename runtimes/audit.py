"""Compare what a runtime really executed with the precision a result row is labelled with."""
from __future__ import annotations

from typing import Any

INT8_MIN_SHARE = 0.5  # below this share of integer compute layers an "int8" row mostly ran in float
REDUCED_FLOAT = {"bf16", "fp16", "f16"}


def audit_warning(precision_label: str, report: dict[str, Any]) -> str:
    """A one-line warning when the execution ``report`` contradicts ``precision_label``, else "".

    ``report`` is :meth:`runtimes.base.Runtime.execution_report`'s dict; missing keys mean "not
    known" and never warn.
    """
    label = (precision_label or "").lower()
    ran = str(report.get("exec_precision") or "").lower()
    share = report.get("int8_op_share")
    if label == "int8":
        if share is not None and share < INT8_MIN_SHARE:
            return f"INT8 row ran mostly in float (int8 share {share:.0%})"
        return ""
    if label == "fp32":
        if ran in REDUCED_FLOAT:
            return f"FP32 row ran in {ran} (set precision='f32' for true f32)"
        if ran == "int8" or (ran == "mixed" and share):
            return f"FP32 row ran partly in int8 (int8 share {share:.0%})" if share else "FP32 row ran in int8"
        if ran == "mixed":
            precs = ", ".join(f"{k} {v}" for k, v in (report.get("op_precisions") or {}).items())
            return f"FP32 row ran in mixed precision ({precs})" if precs else "FP32 row ran in mixed precision"
        return ""
    if label == "fp16":
        if ran in ("fp32", "f32"):
            return "FP16 row ran in fp32 (the runtime upcast the model)"
        if ran == "bf16":
            return "FP16 row ran in bf16"
    return ""
