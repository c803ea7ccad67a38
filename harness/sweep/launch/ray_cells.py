"""The node side of a fleet sweep: what a Ray task does on the machine it lands on.

Plain functions (no Ray import at module level): :mod:`.ray` wraps them in ``ray.remote``.
A cell task writes the artifacts it needs into the node's own cache (``$QUANTBENCH_CACHE`` or
``~/.cache/quantbench``, under ``fleet/files/<sha256>/``) when they are not there yet, checks that
the node's data is the data the driver prepared, then measures the cell exactly as a local sweep
does: in its own contained subprocess with the sweep's timeout (:func:`.local.run_worker`).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

LOG_LIMIT = 256 * 1024  # bytes of a cell's log sent back to the driver
_data_checked: dict[str, str] = {}  # data spec -> fingerprint, per worker process


def node_root() -> Path:
    """Where this node keeps shipped files and cell logs."""
    base = os.environ.get("QUANTBENCH_CACHE") or str(Path.home() / ".cache" / "quantbench")
    return Path(base).expanduser() / "fleet"


def node_identity() -> dict[str, Any]:
    """This node as Ray and the OS name it."""
    import ray

    ctx = ray.get_runtime_context()
    return {"node_id": ctx.get_node_id(), "node_ip": ray.util.get_node_ip_address(), "host": socket.gethostname()}


def survey() -> dict[str, Any]:
    """What the driver needs to know about this node before planning: who it is and its environment."""
    from quantbench.harness.sweep.environment import fingerprint

    return {**node_identity(), "env": fingerprint()}


def _sha256(path: Path) -> str:
    from quantbench.common.files import sha256_file

    return sha256_file(path)


def materialize(bundle: dict[str, Any], root: Path) -> Path:
    """The bundle's main file in this node's cache, fetched from the object store only when missing.

    A bundle is one content hash (``key``) and its files (an ONNX model and its external data keep
    their names side by side); each file's sha256 is checked after writing. Concurrent tasks on one
    machine race safely: each writes a private folder and renames it into place.
    """
    import ray

    dest = root / "files" / bundle["key"]
    if (dest / ".complete").is_file():
        return dest / bundle["main"]
    tmp = root / "files" / f".{bundle['key']}.{os.getpid()}.{os.urandom(4).hex()}"
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        for f in bundle["files"]:
            target = tmp / f["name"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(ray.get(f["ref"]))
            got = _sha256(target)
            if got != f["sha256"]:
                raise OSError(f"shipped file {f['name']} arrived damaged (sha256 {got[:12]}… != {f['sha256'][:12]}…)")
        (tmp / ".complete").write_text(bundle["key"])
        try:
            os.rename(tmp, dest)
        except OSError:  # another task of this node got there first
            if not (dest / ".complete").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest / bundle["main"]


def _set(spec: dict[str, Any], dotted: str, value: str) -> None:
    *parents, leaf = dotted.split(".")
    obj = spec
    for key in parents:
        obj = obj[key]
    obj[leaf] = value


def data_mismatch(checks: list[dict[str, Any]]) -> str:
    """"" when this node opens each data source with the driver's fingerprint, else why not (one line)."""
    from quantbench.calibration_data import open_source

    for check in checks:
        key = json.dumps(check["spec"], sort_keys=True)
        if key not in _data_checked:
            try:
                _data_checked[key] = str(open_source(check["spec"]).describe().get("fingerprint"))
            except Exception as exc:  # noqa: BLE001 - the reason becomes the cell's error
                from quantbench.harness.measure.worker import one_line

                return f"{check['what']} {_spec_text(check['spec'])} cannot be opened here: {one_line(exc)}"
        here = _data_checked[key]
        if check["fingerprint"] and here != check["fingerprint"]:
            return (f"{check['what']} {_spec_text(check['spec'])} differs from the driver's (fingerprint "
                    f"{here[:12]}… here, {str(check['fingerprint'])[:12]}… there): give every node the same data "
                    f"at the same path")
    return ""


def _spec_text(spec: Any) -> str:
    return repr(spec["spec"] if isinstance(spec, dict) else spec)


def run_cell(job: dict[str, Any]) -> dict[str, Any]:
    """Measure one cell on this node; returns the worker's result, this node's identity, environment and log.

    ``job``: ``spec`` (a :class:`CellSpec` as a dict, with the driver's paths), ``files`` (dotted
    spec field -> bundle to put there), ``data`` (data sources to check), ``timeout_s``, ``run_id``.
    """
    from quantbench.harness.measure.cell import CellSpec
    from quantbench.harness.sweep.environment import fingerprint
    from quantbench.harness.sweep.launch.local import run_worker

    t0 = time.perf_counter()
    root = node_root()
    out: dict[str, Any] = {**node_identity(), "env": fingerprint(), "log": "", "started": _now()}
    spec = json.loads(json.dumps(job["spec"]))  # a private copy to rewrite
    try:
        for dotted, bundle in job["files"].items():
            _set(spec, dotted, str(materialize(bundle, root)))
    except OSError as exc:
        out["result"] = {"status": "failed", "error": f"could not write the shipped artifact on {out['host']}: "
                                                      f"{exc.strerror or exc}"}
        return out
    mismatch = data_mismatch(job["data"])
    if mismatch:
        out["result"] = {"status": "failed", "error": f"on {out['host']}: {mismatch}"}
        return out
    cell = CellSpec(**spec)
    workdir = root / "cells" / job["run_id"]
    out["result"] = run_worker(cell, workdir, job["timeout_s"])
    log_path = workdir / f"{cell.cell_id}.log"
    out["log_path"] = str(log_path)
    out["log"] = _tail(log_path)
    for name in (f"{cell.cell_id}.spec.json", f"{cell.cell_id}.out.json"):
        (workdir / name).unlink(missing_ok=True)
    out["duration_s"] = round(time.perf_counter() - t0, 3)
    out["ended"] = _now()
    return out


def _now() -> str:
    """UTC wall-clock time on this node, to the millisecond (cells of one node can be ordered by it)."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - LOG_LIMIT))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def spec_dict(spec: Any) -> dict[str, Any]:
    """A :class:`CellSpec` as the JSON-able dict a task carries."""
    return json.loads(json.dumps(asdict(spec), default=str))
