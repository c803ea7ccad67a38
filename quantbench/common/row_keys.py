"""What a row is a measurement *of*, which rows are current, and which FP32 row each row is compared with.

One rule each, shared by the CLI table, the reports, the Python API and the resume logic:

- :func:`slot`: one line of a table (model, device, runtime label, variant, batch, fleet target or host);
- :func:`current_rows`: the latest generation (see the comment below);
- :func:`reference_key` / :func:`fp32_references`: "the FP32 reference of this row": the FP32 row of the
  same model, target device (host and CPU/GPU model, or fleet target), runtime label and batch, of the
  same generation and runtime options (:func:`pairing_key`).
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

HOST_DEVICES = ("cpu",)  # device names (lower-cased, before ':') whose kind is the CPU


def is_host_device(device: str) -> bool:
    """Whether a runtime device runs on the CPU (its kind is the CPU model, not a GPU)."""
    return device.lower().partition(":")[0] in HOST_DEVICES


def device_key(row: dict[str, Any]) -> str:
    """'host · CPU model (cpu)' or '… · GPU name (cuda:0)': one target device (fleet rows: their target, not the
    host)."""
    env = row.get("env") or {}
    dev = str(row.get("device") or "?")
    what = env.get("cpu_model") or "?"
    if dev.startswith("cuda") and env.get("gpu"):
        idx = dev.partition(":")[2]
        idx = int(idx) if idx.isdigit() else 0
        what = env["gpu"][min(idx, len(env["gpu"]) - 1)].get("name") or "?"
    target = (row.get("fleet") or {}).get("target")
    if target:  # a fleet sweep's device kind (any of its nodes), not one host
        return f"{target} · {what} ({dev})"
    return f"{env.get('host') or '?'} · {what} ({dev})"


def runtime_label(row: dict[str, Any]) -> str:
    """The runtime as tables show it (its label, else its name)."""
    return str(row.get("runtime_label") or row.get("runtime") or "?")


# ---- generations -------------------------------------------------------------------------------
# A rerun into the same folder with other inputs (eval_samples, threads, calib_samples, new weights …)
# measures its cells again under new cell ids; the older rows stay in the file. A row is *current*
# when it is the latest row of its slot (what a reader sees as one line of the table: model, variant,
# runtime label, device, batch, fleet target or host) and belongs to the latest generation of its
# model and of its runtime there: rows measured under the same model and data (and, per runtime, the
# same runtime options and timing settings) as the latest row. A rerun interrupted half way so shows
# only what its new configuration measured, never a mix.


def _text(value: Any) -> Any:
    return value if isinstance(value, (str, int, float)) or value is None else json.dumps(value, sort_keys=True)


def _where(row: dict[str, Any]) -> tuple:
    fleet = row.get("fleet") if isinstance(row.get("fleet"), dict) else {}
    env = row.get("env") if isinstance(row.get("env"), dict) else {}
    target = fleet.get("target")
    where = ("target", target) if target else ("host", env.get("host"))
    return (_text(row.get("model")), _text(row.get("device")), where)


def _runtime(row: dict[str, Any]) -> Any:
    return _text(row.get("runtime_label") or row.get("runtime"))


def slot(row: dict[str, Any]) -> tuple:
    """What a row is a measurement *of*, as a reader sees it (one line of a table); its latest row counts."""
    return (*_where(row), _runtime(row), _text(row.get("variant")), _text(row.get("batch")))


def generation_key(row: dict[str, Any]) -> str | None:
    """Hash of what every cell of a model shares in one configuration, i.e. what its accuracy means (the
    model, the evaluation and calibration data, their preprocessing, the evaluation count); None for rows
    without a fingerprint (schema 1)."""
    parts = row.get("fingerprint_parts")
    if not isinstance(parts, dict):
        return None
    ds = row.get("dataset") if isinstance(row.get("dataset"), dict) else {}
    cal = ds.get("calibration") if isinstance(ds.get("calibration"), dict) else {}
    key = [parts.get("model"), ds.get("fingerprint"), cal.get("fingerprint"),
           ds.get("eval_samples", row.get("eval_samples")), ds.get("preprocess", row.get("preprocess"))]
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def pairing_key(row: dict[str, Any]) -> tuple:
    """Rows that may be compared (Δ vs FP32, % of FP32) share this: the same generation, and the same runtime
    options and timing settings (how the latency was measured)."""
    parts = row.get("fingerprint_parts") if isinstance(row.get("fingerprint_parts"), dict) else {}
    return (generation_key(row), parts.get("runtime"), parts.get("timing"))


def _when(row: dict[str, Any]) -> str:
    value = row.get("reused_at") or row.get("timestamp")
    return value if isinstance(value, str) else ""


def current_rows(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(current rows, superseded rows), each in the given order; see the comment above.

    ``rows`` are the latest row of each cell id, in the order they were written (several files:
    their rows one file after the other); "latest" is by ``reused_at`` / ``timestamp``, then order.
    """
    order = sorted(range(len(rows)), key=lambda i: (_when(rows[i]), i))
    latest: dict[tuple, int] = {}
    model_gen: dict[tuple, str] = {}
    runtime_gen: dict[tuple, tuple] = {}
    for i in order:
        row = rows[i]
        latest[slot(row)] = i
        key = pairing_key(row)
        if key[0] is not None:
            model_gen[_where(row)] = key[0]
            runtime_gen[(*_where(row), _runtime(row))] = key
    current, older = [], []
    for i, row in enumerate(rows):
        key = pairing_key(row)
        stale = key[0] is not None and (model_gen.get(_where(row)) != key[0]
                                        or runtime_gen.get((*_where(row), _runtime(row))) != key)
        (older if latest[slot(row)] != i or stale else current).append(row)
    return current, older


def superseded_note(n: int, flag: str = "--all-generations") -> str:
    """One line about the rows left out as superseded ("" when none were)."""
    if not n:
        return ""
    return (f"{n} row(s) measured under earlier inputs of the same cells (an older generation) are not shown; "
            f"{flag} shows them")


# ---- the FP32 reference ------------------------------------------------------------------------

def is_fp32_reference(row: dict[str, Any]) -> bool:
    """Whether a row can be the FP32 reference of others: an FP32 variant quantbench exported (not a TensorRT
    build or a prebuilt file)."""
    return row.get("precision") == "fp32" and not (row.get("variant_settings") or {}).get("builder")


def reference_key(row: dict[str, Any]) -> tuple:
    """The key of ``row``'s FP32 reference in :func:`fp32_references`: model, target device, runtime label,
    batch and :func:`pairing_key` (a row is compared only with the FP32 row of its own generation and
    runtime options, measured on the same kind of machine)."""
    return (row.get("model"), device_key(row), runtime_label(row), row.get("batch"), pairing_key(row))


def fp32_references(rows: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """The ok FP32 reference row for each :func:`reference_key` (the last one given, when there are several)."""
    return {reference_key(r): r for r in rows if r.get("status") == "ok" and is_fp32_reference(r)}


def reference_of(row: dict[str, Any], references: dict[tuple, dict[str, Any]]) -> dict[str, Any] | None:
    """``row``'s FP32 reference among ``references`` (:func:`fp32_references`), None when there is none."""
    return references.get(reference_key(row))
