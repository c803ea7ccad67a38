"""Load results files (from many devices) into one report model: rows, groups, warnings."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.results import ResultsError, read_rows


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
        idx = int(dev.split(":")[1]) if ":" in dev else 0
        what = env["gpu"][min(idx, len(env["gpu"]) - 1)].get("name", "?")
    return f"{env.get('host', '?')} · {what} ({dev})"


def runtime_label(row: dict[str, Any]) -> str:
    return str(row.get("runtime_label") or row.get("runtime") or "?")


def build_report(paths: list[Path]) -> Report:
    """Read every file; a missing, empty, truncated or old file is a warning, not a failure."""
    rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    sources: list[str] = []
    for path in paths:
        try:
            loaded = read_rows(path)
        except ResultsError as exc:
            warnings.append(str(exc))
            continue
        except OSError as exc:
            warnings.append(f"{path}: cannot read ({exc.strerror or exc})")
            continue
        warnings.extend(loaded.warnings)
        for row in loaded.rows:
            row.setdefault("_source", str(path))
        rows.extend(loaded.rows)
        sources.append(str(path))
    if not rows:
        raise ReportError("no result rows could be read from " + ", ".join(str(p) for p in paths))
    warnings.extend(_incompatibilities(rows))
    return Report(rows, warnings, sources)


def _incompatibilities(rows: list[dict[str, Any]]) -> list[str]:
    """Models with one name but different FP32 artifacts across files are compared per device only."""
    fp32: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r.get("status") == "ok" and r.get("precision") == "fp32" and r.get("artifact_sha256"):
            fp32[str(r.get("model"))].add(r["artifact_sha256"])
    return [f"model '{m}' has {len(s)} different FP32 artifacts across the results (different weights or export): "
            f"compare its rows per device only" for m, s in fp32.items() if len(s) > 1]


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
