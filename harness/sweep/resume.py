"""Resume: reuse a stored row only when every input that changes its numbers is unchanged.

A cell's ``cell_id`` says *which* measurement it is (model source, variant table, runtime options,
device, batch); its ``fingerprint`` says *under what* it was measured. The fingerprint is split in
groups so that a rerun can say which one changed ("timing settings changed").
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

# Group -> how the log names it. Order is the order reasons are listed in.
GROUPS = {
    "timing": "timing settings",
    "data": "data",
    "model": "model weights/ONNX",
    "variant": "variant artifact",
    "quant": "quantization settings",
    "runtime": "runtime options",
    "versions": "package versions",
    "machine": "machine",
}


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_sha(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        from quantbench.common.files import sha256_file

        return sha256_file(Path(path))
    except OSError:
        return None


def model_content(pm: Any) -> dict[str, Any]:
    """What the model's numbers depend on: the fp32 artifact's bytes and the weights file it came from."""
    source = getattr(pm, "source", None)
    weights = source.weights_file() if source is not None and hasattr(source, "weights_file") else None
    return {"fp32_sha256": getattr(pm.fp32, "sha256", None), "weights_sha256": _file_sha(weights)}


def _data_fingerprint(info: Any) -> Any:
    if not isinstance(info, dict):
        return info
    return info.get("fingerprint") or {k: v for k, v in info.items() if k != "calibration"}


def data_identity(pm: Any, calibration: dict[str, Any] | None = None) -> dict[str, Any]:
    """The data actually used: the sources' content fingerprints, preprocessing, sample count, class map."""
    info = dict(pm.dataset_info or {})
    cfg = getattr(pm, "config", None)
    labels = getattr(cfg, "labels", None)
    return {
        "evaluation": _data_fingerprint(info),
        "calibration_data": _data_fingerprint(info.get("calibration")),
        "dataset": pm.dataset, "preprocess": pm.preprocess, "eval_samples": pm.eval_samples,
        "accuracy": getattr(pm, "accuracy", None), "labels_meaningful": pm.labels_meaningful,
        "classes": getattr(cfg, "classes", None),
        "labels_file": _file_sha(Path(labels).expanduser()) if labels else None,
        "calibration": calibration,  # runtime-side calibration (TensorRT 10)
    }


def machine_identity(env: dict[str, Any]) -> dict[str, Any]:
    """The hardware numbers depend on (the host name is left out: twin machines measure alike)."""
    return {k: env.get(k) for k in ("cpu_model", "cpu_flags", "cores_logical", "cores_physical", "gpu")}


def fingerprint_parts(*, measure: dict[str, Any], pm: Any, artifact_sha256: str | None,
                      variant_settings: dict[str, Any], runtime: str, runtime_options: dict[str, Any],
                      device: str, env: dict[str, Any], model: dict[str, Any] | None = None,
                      calibration: dict[str, Any] | None = None) -> dict[str, str]:
    """One hash per group of inputs (see :data:`GROUPS`); ``model`` is :func:`model_content` (computed once)."""
    return {
        "timing": _hash(measure),
        "data": _hash(data_identity(pm, calibration)),
        "model": _hash(model if model is not None else model_content(pm)),
        "variant": _hash(artifact_sha256),
        "quant": _hash(variant_settings),
        "runtime": _hash({"runtime": runtime, "options": runtime_options, "device": device}),
        "versions": _hash(env.get("versions") or {}),
        "machine": _hash(machine_identity(env)),
    }


def combine(parts: dict[str, str]) -> str:
    """The row's ``fingerprint``: one hash over all groups."""
    return _hash(parts)


def _version_changes(stored_env: Any, env: dict[str, Any]) -> str:
    old = stored_env.get("versions") if isinstance(stored_env, dict) else None
    new = env.get("versions") or {}
    if not isinstance(old, dict):
        return ""
    changes = [f"{k} {old.get(k, '-')}→{new.get(k, '-')}" for k in sorted(set(old) | set(new))
               if old.get(k) != new.get(k)]
    return f" ({', '.join(changes[:4])}{', …' if len(changes) > 4 else ''})" if changes else ""


def changed_groups(stored: dict[str, Any], parts: dict[str, str], env: dict[str, Any]) -> str:
    """Why ``stored`` no longer describes this cell ("" when it still does)."""
    old = stored.get("fingerprint_parts")
    if not isinstance(old, dict):
        return f"the stored row has no fingerprint (schema version {stored.get('schema_version')})"
    changed = []
    for group, name in GROUPS.items():
        if old.get(group) != parts.get(group):
            changed.append(name + (_version_changes(stored.get("env"), env) if group == "versions" else ""))
    return f"{', '.join(changed)} changed" if changed else ""


def reuse_decision(stored: dict[str, Any] | None, parts: dict[str, str], env: dict[str, Any],
                   retry_failed: bool) -> tuple[bool, str]:
    """(reuse the stored row?, why it is measured again — "" for a new or retried cell)."""
    if stored is None:
        return False, ""
    if retry_failed and stored.get("status") != "ok":
        return False, ""
    why = changed_groups(stored, parts, env)
    return (not why), why
