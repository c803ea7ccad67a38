"""Compare what a runtime really executed with the precision a row is labelled with."""
from __future__ import annotations

from typing import Any

REDUCED = {"bf16", "fp16", "f16", "int8", "mixed"}


def audit_warning(precision_label: str, report: dict[str, Any]) -> str:
    """A one-line warning when the execution report contradicts the label, else ""."""
    ran = (report.get("exec_precision") or "").lower()
    share = report.get("int8_op_share")
    if precision_label == "int8" and share is not None and share < 0.5:
        return f"INT8 row ran mostly in float (int8 share {share:.0%}): check activation type and the runtime's kernels"
    if precision_label == "fp32" and ran in REDUCED:
        return f"FP32 row ran in {ran}: set the runtime's precision to f32 for true FP32"
    if precision_label == "fp16" and ran in ("fp32", "f32"):
        return "FP16 row ran in fp32: the runtime upcast the model"
    return ""
