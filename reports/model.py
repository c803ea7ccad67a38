"""Load results files (from many devices) into one report model: rows, groups, warnings."""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantbench.harness.results import ResultsError, read_rows


class ReportError(ValueError):
    """Nothing usable could be loaded."""


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
    def not_ok(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("status") != "ok"]


def device_key(row: dict[str, Any]) -> str:
    """'host · CPU model (cpu)' or '… · GPU name (cuda:0)': one target device."""
    env = row.get("env") or {}
    dev = str(row.get("device") or "?")
    what = env.get("cpu_model", "?")
    if dev.startswith("cuda") and env.get("gpu"):
        idx = dev.partition(":")[2]
        idx = int(idx) if idx.isdigit() else 0
        what = env["gpu"][min(idx, len(env["gpu"]) - 1)].get("name", "?")
    return f"{env.get('host', '?')} · {what} ({dev})"


def runtime_label(row: dict[str, Any]) -> str:
    return str(row.get("runtime_label") or row.get("runtime") or "?")


def build_report(paths: list[Path]) -> Report:
    """Read every file; a missing, empty, truncated or old file is a warning, not a failure."""
    rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    sources: list[str] = []
    seen: set[Path] = set()
    for path in paths:
        if Path(path).resolve() in seen:
            warnings.append(f"{path}: given more than once, read once")
            continue
        seen.add(Path(path).resolve())
        try:
            loaded = read_rows(path)
        except ResultsError as exc:
            warnings.append(str(exc))
            continue
        except OSError as exc:
            warnings.append(f"{path}: cannot read ({exc.strerror or exc})")
            continue
        warnings.extend(loaded.warnings)
        bad_fields: set[str] = set()
        for row in loaded.rows:
            bad_fields |= sanitize_row(row)
            row["_source"] = str(path)
        if bad_fields:
            warnings.append(f"{path}: field(s) of the wrong type ignored: {', '.join(sorted(bad_fields))}")
        rows.extend(loaded.rows)
        sources.append(str(path))
    if not rows:
        raise ReportError("no result rows could be read from " + ", ".join(str(p) for p in paths))
    rows, dups = _dedupe(rows)
    warnings.extend(dups)
    warnings.extend(_incompatibilities(rows))
    return Report(rows, warnings, sources)


_NUMERIC = {"batch", "size_bytes", "param_count", "quant_time_s", "quant_peak_mem_mb", "load_ms", "first_infer_ms",
            "throughput_ips", "top1", "top5", "agreement_top1", "max_abs_err", "int8_op_share",
            "speedup_interleaved", "eval_samples"}
_DICTS = {"env", "variant_settings", "runtime_settings", "dataset", "op_precisions"}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def sanitize_row(row: dict[str, Any]) -> set[str]:
    """Reset fields whose type cannot be rendered (a hand-edited or foreign file); returns their names."""
    bad = set()
    for key, value in list(row.items()):
        if value is None:
            continue
        if key.endswith("_raw_ms"):
            ok, empty = isinstance(value, list) and all(_is_number(v) for v in value), []
        elif key in _NUMERIC or key.endswith("_ms"):
            ok, empty = _is_number(value), None
        elif key in _DICTS:
            ok, empty = isinstance(value, dict), {}
        else:
            continue
        if not ok:
            row[key] = empty
            bad.add(key)
    env = row.get("env") or {}
    gpus = env.get("gpu")
    if gpus is not None and not (isinstance(gpus, list) and all(isinstance(g, dict) for g in gpus)):
        env["gpu"] = []
        bad.add("env.gpu")
    return bad


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


def speedup_vs(row: dict[str, Any], base: dict[str, Any] | None) -> float | None:
    """FP32 time / this row's: the interleaved ratio when measured, else the ratio of compute medians."""
    if base is None:
        return None
    if base is row:
        return 1.0
    if row.get("speedup_interleaved") is not None:
        return row["speedup_interleaved"]
    if row.get("compute_p50_ms") and base.get("compute_p50_ms"):
        return base["compute_p50_ms"] / row["compute_p50_ms"]
    return None


def fp32_reference(rows: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """The FP32 row for each (model, device, runtime label, batch)."""
    ref = {}
    for r in rows:
        if r.get("status") == "ok" and r.get("precision") == "fp32" and not (r.get("variant_settings") or {}).get("builder"):
            ref[(r.get("model"), device_key(r), runtime_label(r), r.get("batch"))] = r
    return ref


def settings_summary(row: dict[str, Any]) -> str:
    """Short text for the variant's quantization settings."""
    s = row.get("variant_settings") or {}
    if row.get("precision") != "int8":
        return ""
    if s.get("builder") == "trt-calibrate":
        return f"TensorRT {s.get('calibrator')} calibrator"
    parts = [str(s.get("calibration", "?"))]
    parts.append("per-channel" if s.get("per_channel") else "per-tensor")
    if s.get("activation_type") or s.get("weight_type"):
        parts.append(f"act {s.get('activation_type', '?')}/w {s.get('weight_type', '?')}")
    if s.get("symmetric_activation"):
        parts.append("sym act")
    if s.get("op_types"):
        parts.append("ops " + "+".join(s["op_types"]))
    if s.get("exclude_nodes"):
        parts.append(f"{len(s['exclude_nodes'])} node(s) float")
    if s.get("calib_samples"):
        parts.append(f"{s['calib_samples']} calib")
    if s.get("calib_classes"):
        parts.append("classes " + ",".join(map(str, s["calib_classes"])))
    return ", ".join(parts)
