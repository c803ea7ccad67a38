"""Compare what a runtime really executed with the precision a result row is labelled with."""
from __future__ import annotations

from typing import Any

INT8_MIN_SHARE = 0.5  # below this share of integer compute layers an "int8" row mostly ran in float
REDUCED_FLOAT = {"bf16", "fp16", "f16"}


def audit_warning(precision_label: str, report: dict[str, Any]) -> str:
    """A one-line warning when the execution ``report`` contradicts ``precision_label``, else "".

    ``report`` is :meth:`runtimes.base.Runtime.execution_report`'s dict; missing keys mean "not
    known" and never warn. Every label is checked against every execution: an int8 label that ran
    mostly in float, an fp32 or fp16 label that ran in int8, in a reduced float or in a mix.
    """
    label = (precision_label or "").lower()
    ran = str(report.get("exec_precision") or "").lower()
    share = report.get("int8_op_share")
    if label == "int8":
        if share is not None and share < INT8_MIN_SHARE:
            return f"INT8 row ran mostly in float (int8 share {share:.0%})"
        if share is None and ran in ("fp32", "f32", *REDUCED_FLOAT):
            return f"INT8 row ran in {ran}"
        return ""
    if label in ("fp32", "fp16"):
        if label == "fp32" and ran in REDUCED_FLOAT:
            return f"FP32 row ran in {ran} (set precision='f32' for true f32)"
        if label == "fp16" and ran in ("fp32", "f32"):
            return "FP16 row ran in fp32 (the runtime upcast the model)"
        if label == "fp16" and ran == "bf16":
            return "FP16 row ran in bf16"
        return _int8_or_mixed(label, ran, share, report)
    if label and ran not in ("", "unknown", label):  # another label (bf16 …): anything else is a mismatch
        return f"{label.upper()} row ran in {ran}" + (f" (int8 share {share:.0%})" if share else "")
    return ""


def _int8_or_mixed(label: str, ran: str, share: Any, report: dict[str, Any]) -> str:
    """A float label that ran (partly) in int8 — e.g. a prebuilt file labelled fp16 that is an INT8 QDQ model —
    or in a mix of precisions."""
    name = label.upper()
    if ran == "int8":
        return f"{name} row ran in int8" + (f" (int8 share {share:.0%})" if share else "")
    if share:
        return f"{name} row ran partly in int8 (int8 share {share:.0%})"
    if ran == "mixed":
        precs = ", ".join(f"{k} {v}" for k, v in (report.get("op_precisions") or {}).items())
        return f"{name} row ran in mixed precision ({precs})" if precs else f"{name} row ran in mixed precision"
    return ""
