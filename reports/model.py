"""Load results files (from many devices) into one report model: rows, groups, warnings."""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantbench.common.row import RESULTS_NAME, Row
from quantbench.common.row_file import ResultsError, read_rows
from quantbench.common.row_keys import (  # noqa: F401 - device_key, runtime_label, reference_key: re-exported
    current_rows,
    device_key,
    fp32_references,
    reference_key,
    runtime_label,
    superseded_note,
)


class ReportError(ValueError):
    """Nothing usable could be loaded (``warnings`` says why, file by file)."""

    def __init__(self, message: str, warnings: list[str] | None = None) -> None:
        super().__init__(message)
        self.warnings = list(warnings or [])


@dataclass
class Report:
    """All rows of all files, with what went wrong while loading them."""

    rows: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    @property
    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("status") == "ok"]

    @property
    def current_ok(self) -> list[dict[str, Any]]:
        """The ok rows of the current generation (the same as ``ok`` unless built with ``all_generations``)."""
        return [r for r in self.ok if not r.get("_superseded")]

    @property
    def not_ok(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("status") != "ok"]


def build_report(paths: list[Path], all_generations: bool = False) -> Report:
    """Read every file; a missing, empty, truncated or old file, or a malformed row, is a warning, not a failure.

    A path may be an output folder (its ``results.jsonl``). Rows superseded by a later measurement of
    the same cell under other inputs are left out (:func:`quantbench.common.row_keys.current_rows`, a warning
    says how many) unless ``all_generations``.
    """
    rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    sources: list[str] = []
    seen: set[Path] = set()
    for path in paths:
        if Path(path).is_dir():
            path = Path(path) / RESULTS_NAME
        if Path(path).resolve() in seen:
            warnings.append(f"{path}: given more than once, read once")
            continue
        seen.add(Path(path).resolve())
        try:
            file_rows, file_warnings = load_file(Path(path))
        except ResultsError as exc:
            warnings.append(str(exc))
            continue
        except OSError as exc:
            warnings.append(f"{path}: cannot read ({exc.strerror or exc})")
            continue
        warnings.extend(file_warnings)
        rows.extend(file_rows)
        sources.append(str(path))
    if not rows:
        raise ReportError(_nothing_read(paths, warnings), warnings)
    rows, dups = _dedupe(rows)
    warnings.extend(dups)
    current, older = current_rows(rows)
    if not all_generations:
        rows = current
        note = superseded_note(len(older))
        if note:
            warnings.append(note)
    for r in older:  # shown with all_generations: tables mark them
        r["_superseded"] = True
    warnings.extend(_incompatibilities(rows))
    return Report(rows, warnings, sources)


def load_file(path: Path) -> tuple[list[Row], list[str]]:
    """The rows of one results file as a report shows them (the last row of each cell, each tagged with its
    ``_source``; a field of the wrong type reset to null) and the warnings; raises ResultsError (not found)
    or OSError (unreadable)."""
    loaded = read_rows(path, check_types=True, fill_added=False)
    for row in loaded.rows:
        row["_source"] = str(path)  # type: ignore[typeddict-unknown-key]
    if loaded.mistyped:
        shown = ", ".join(sorted(loaded.mistyped))
        loaded.warnings.append(f"{path}: field(s) of the wrong type shown as missing: {shown}")
    return loaded.rows, loaded.warnings


def _nothing_read(paths: list[Path], warnings: list[str], shown: int = 3) -> str:
    """One line: no rows, and the first reasons why (the rest are printed as warnings)."""
    where = ", ".join(str(p) for p in paths) or "(no files given)"
    if not warnings:
        return f"no result rows could be read from {where}"
    more = f"; and {len(warnings) - shown} more" if len(warnings) > shown else ""
    return f"no result rows could be read from {where}: " + "; ".join(warnings[:shown]) + more


def _dedupe(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per (cell, device): a cell found in two files (a copied or rerun file) keeps the newest."""
    keep: dict[tuple, dict[str, Any]] = {}
    clashes: Counter[tuple[str, str, str]] = Counter()
    for r in rows:
        key = (r.get("cell_id"), device_key(r))
        if r.get("cell_id") is None:
            key = (id(r),)
        old = keep.get(key)
        if old is not None:
            newer = r if str(r.get("timestamp") or "") >= str(old.get("timestamp") or "") else old
            clashes[(old["_source"], r["_source"], newer["_source"])] += 1
            r = newer
        keep[key] = r
    warnings = [f"{n} cell(s) appear in both {a} and {b}: kept the newest rows (from {kept})"
                for (a, b, kept), n in clashes.items()]
    return list(keep.values()), warnings


def _incompatibilities(rows: list[dict[str, Any]]) -> list[str]:
    """Models with one name but different FP32 artifacts across files are compared per device only."""
    fp32: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r.get("status") == "ok" and r.get("precision") == "fp32" and r.get("artifact_sha256"):
            fp32[str(r.get("model"))].add(r["artifact_sha256"])
    return [f"model '{m}' has {len(s)} different FP32 artifacts across the results (different weights or export): "
            f"compare its rows per device only" for m, s in fp32.items() if len(s) > 1]


def fp32_reference(rows: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """The FP32 reference of each :func:`reference_key` (:func:`quantbench.common.row_keys.fp32_references`)."""
    return fp32_references(rows)


def dataset_text(row: dict[str, Any]) -> str:
    """What a row's evaluation data is, in one line: source, images evaluated out of the split's, the split rule,
    the class-index rule and, when it differs, the calibration source. Unknown parts are left out."""
    ds = row.get("dataset") if isinstance(row.get("dataset"), dict) else {}
    n = ds.get("eval_samples", row.get("eval_samples"))
    parts = [str(ds.get("name") or ds.get("spec") or "unknown data")]
    count = f"{n} evaluation images" if n is not None else "evaluation images"
    if ds.get("n_evaluation") is not None:
        count += f" (of {ds['n_evaluation']} in its evaluation split)"
    parts.append(count)
    if ds.get("split"):
        parts.append(f"split: {ds['split']}")
    if ds.get("class_index"):
        parts.append(f"class index: {ds['class_index']}")
    cal = ds.get("calibration") if isinstance(ds.get("calibration"), dict) else {}
    if cal and cal.get("fingerprint") != ds.get("fingerprint"):
        parts.append(f"calibration: {cal.get('name') or cal.get('spec') or '?'}"
                     + (f" ({cal['n_calibration']} images)" if cal.get("n_calibration") is not None else ""))
    return "; ".join(parts)


def settings_summary(row: dict[str, Any]) -> str:
    """Short text for the variant's quantization settings."""
    s = row.get("variant_settings") or {}
    if row.get("precision") != "int8":
        return ""
    if s.get("builder") == "trt-calibrate":
        return f"TensorRT {s.get('calibrator')} calibrator"
    if s.get("builder") == "prebuilt":
        return f"prebuilt file {str(s.get('onnx', '?')).replace(chr(92), '/').rsplit('/', 1)[-1]}"
    parts = [str(s.get("calibration", "?"))]
    parts.append("per-channel" if s.get("per_channel") else "per-tensor")
    if s.get("activation_type") or s.get("weight_type"):
        parts.append(f"act {s.get('activation_type', '?')}/w {s.get('weight_type', '?')}")
    if s.get("symmetric_activation"):
        parts.append("sym act")
    if s.get("op_types"):
        parts.append("ops " + "+".join(map(str, s["op_types"])))
    if s.get("exclude_nodes"):
        parts.append(f"{len(s['exclude_nodes'])} node(s) float")
    if s.get("calib_samples"):
        parts.append(f"{s['calib_samples']} calib")
    if s.get("calib_classes"):
        parts.append("classes " + ",".join(map(str, s["calib_classes"])))
    return ", ".join(parts)
