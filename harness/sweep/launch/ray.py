"""Run a sweep's cells as Ray tasks across a cluster of machines (``run.ray`` / ``--ray``).

The rules of a local sweep hold. The driver (this process) prepares every model and builds every
artifact once, then ships the files by content hash (Ray's object store; a node writes them into
its own cache only when missing, see :mod:`harness.ray_cells`). Each cell is a Ray task that asks
for its target (a device kind such as ``cpu-intel-xeon-platinum-8480`` or a resource the config
names in ``run.targets``), its runtime on its device (``ort-cpu@cpu``) and a share of the node's
``quantbench-slot`` (the whole slot unless ``run.cells_per_node`` says otherwise, so cells never share
a node's cores). On the node the cell runs in its own contained subprocess with the sweep's timeout.
Rows come back as cells end and are appended to one ``results.jsonl`` with the node's environment
in ``env`` and where it ran in ``fleet``; a rerun skips cells already there.

Faults: a node that leaves the cluster loses no row already written; Ray retries its unfinished
cells on another node with the same resources, and a cell no alive node can take any more gets a
failed row with the reason (rerun to measure it when the node is back). A crash inside a cell
fails that cell only (it is a contained subprocess).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from quantbench.harness.config.schema import SweepConfig, first_line
from quantbench.harness.sweep.environment import fingerprint
from quantbench.harness.measure.cell import CellSpec, MeasureSettings
from quantbench.harness.sweep.prepare import (
    PreparedModel,
    cache_dir,
    model_key,
    prepare_artifacts,
    resolve_models,
)
from quantbench.harness.sweep.resources import (
    SLOT,
    device_kind,
    runtime_resource,
    split_runtime_resource,
    target_covers,
)
from quantbench.harness.results.store import SCHEMA_VERSION, append_row, reaffirm_rows, stored_rows
from quantbench.harness.sweep.resume import combine, fingerprint_parts, model_content, reuse_decision
from quantbench.harness.sweep.runner import (
    MAX_REASON_LINES,
    RESULTS_FILE,
    RunError,
    SweepSummary,
    _base_row,
    _calibration,
    _what,
    cell_job,
    check_output_dir,
    count_row,
    output_lock,
)
from quantbench.common.subproc import signal_guard
from quantbench.harness.sweep.plan import Cell, runtime_choices

RAY_HINT = "pip install 'quantbench[ray]'"
START_HINT = ('start each worker with: ray start --address=HEAD:6379 '
              '--resources="$(quantbench devices --ray-resources)"')
SHARE = 0.001  # how much of a target / runtime resource a cell asks for: it only has to be there
MAX_RETRIES = 2  # Ray re-runs a cell whose node or worker process died, on any node with its resources
POLL_S = 0.5
NODE_CHECK_S = 2.0
SURVEY_TIMEOUT_S = 120.0
# A cell sees its node's GPUs as `quantbench devices` there does: Ray must not narrow CUDA_VISIBLE_DEVICES
# for tasks that ask for no GPU (device "cuda:1" means the node's second GPU).
TASK_ENV = {"RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0", "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1"}
_HIDDEN_RESOURCES = ("memory", "object_store_memory")


@dataclass
class Node:
    """A node of the cluster that advertises quantbench resources."""

    node_id: str
    ip: str
    resources: dict[str, float]
    host: str = ""
    env: dict[str, Any] | None = None  # its environment fingerprint (None: it did not answer the survey)

    def has(self, resource: str) -> bool:
        return self.resources.get(resource, 0) > 0

    @property
    def name(self) -> str:
        return f"{self.host or self.ip} ({self.node_id[:8]})"


@dataclass
class FleetCell:
    """A cell of the sweep measured on one target (a Ray resource a node must have)."""

    cell: Cell
    target: str

    @property
    def cell_id(self) -> str:
        key = json.dumps({"cell": self.cell.cell_id, "target": self.target}, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class _Job:
    fcell: FleetCell
    row: dict[str, Any]
    demand: dict[str, float]
    parts: dict[str, Any]  # fingerprint_parts keyword arguments, less env


def import_ray() -> Any:
    """The ``ray`` module, or a one-line RunError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RunError(f"run.ray is set but Ray is not installed: {RAY_HINT}") from None
    return ray


def _bootstrap(address: str) -> tuple[str, int] | None:
    """The host and port ``ray.init(address)`` will dial, when they can be known beforehand."""
    if address.startswith("ray://"):
        hostport = address[len("ray://"):]
    elif address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address

            hostport = canonicalize_bootstrap_address("auto") or ""
        except Exception:  # noqa: BLE001 - no cluster found: ray.init says so itself, at once
            return None
    else:
        hostport = address
    host, _, port = hostport.rpartition(":")
    return (host.strip("[]"), int(port)) if host and port.isdigit() else None


def unreachable(address: str) -> str:
    """Why no Ray cluster answers at the cluster's address ("" when one does, or it cannot be told).

    ``ray.init`` retries an address where nothing (or a firewall, or a proxy) answers for about 20 s,
    printing a warning per try; :func:`ray_probe.unreachable` says so in a few seconds.
    """
    from quantbench.harness.sweep.launch.ray_probe import unreachable as probe

    target = _bootstrap(address)
    return probe(*target) if target is not None else ""


def check_reachable(address: str) -> None:
    """Raise a one-line RunError when no Ray cluster answers at ``address``."""
    why = unreachable(address)
    if why:
        raise RunError(f"cannot connect to the Ray cluster at '{address}': {why} (is `ray start --head` running "
                       "there?)")


def connect(ray: Any, address: str) -> bool:
    """Connect to the cluster at ``address`` ("auto": the one this machine belongs to); True when we did."""
    if ray.is_initialized():  # already connected (a notebook, a test): use that cluster
        return False
    check_reachable(address)
    try:
        ray.init(address=address, namespace="quantbench", log_to_driver=False, logging_level=logging.WARNING,
                 configure_logging=True)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, ValueError, … : one line either way
        raise RunError(f"cannot connect to the Ray cluster at '{address}': {first_line(exc)}") from None
    return True


@contextmanager
def ray_messages_to(log: Callable[[str], None]) -> Iterator[None]:
    """Ray prints cluster events (a task retried, a raylet's last log lines) straight to stderr from a
    thread of its own; while a sweep runs they go to ``log`` instead, one line each."""
    try:
        import ray._private.worker as ray_worker

        original = ray_worker.print_to_stdstream
    except (ImportError, AttributeError):  # another Ray version: leave its output alone
        yield
        return

    def route(data: dict[str, Any], ignore_prefix: bool = False) -> None:
        lines = [ln.strip() for text in data.get("lines") or [] for ln in str(text).splitlines() if ln.strip()]
        if lines:
            log(f"warning: ray ({data.get('pid') or 'cluster'}): {lines[0][:240]}")

    ray_worker.print_to_stdstream = route
    try:
        yield
    finally:
        ray_worker.print_to_stdstream = original


def run_fleet(cfg: SweepConfig, output: Path, retry_failed: bool = False,
              log: Callable[[str], None] = print, progress: Callable[[int], Any] | None = None,
              on_row: Callable[[dict[str, Any]], None] | None = None,
              on_plan: Callable[[int], None] | None = None) -> SweepSummary:
    """Run every cell of ``cfg`` that ``output/results.jsonl`` lacks on the Ray cluster ``cfg.run.ray``."""
    if cfg.run.ray != "auto":  # a given address is probed before Ray is even imported (seconds count)
        check_reachable(cfg.run.ray)
    ray = import_ray()
    check_output_dir(output)
    with output_lock(output):
        connected = connect(ray, cfg.run.ray)
        try:
            with signal_guard(), ray_messages_to(log):
                return _Fleet(ray, cfg, output, retry_failed, log, progress, on_row, on_plan).run()
        finally:
            if connected:
                ray.shutdown()


def cluster_nodes(ray: Any) -> dict[str, dict[str, Any]]:
    """Alive nodes by id: Ray's node table entries."""
    return {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}


def shown_resources(resources: dict[str, float]) -> dict[str, float]:
    """A node's resources as rows record them (without memory sizes and Ray's per-node ``node:`` keys)."""
    return {k: v for k, v in sorted(resources.items()) if k not in _HIDDEN_RESOURCES and not k.startswith("node:")}


class _Shipper:
    """Files the cells need, each put in Ray's object store once, keyed by its sha256."""

    def __init__(self, ray: Any) -> None:
        self.ray = ray
        self.refs: dict[str, Any] = {}  # file sha256 -> ObjectRef (kept alive until the sweep ends)
        self.bundles: dict[tuple[str, bool], dict[str, Any]] = {}

    def bundle(self, path: str | Path, onnx: bool) -> dict[str, Any]:
        """A file (an ONNX model with its external-data files when ``onnx``) as a bundle a node can write."""
        path = Path(path)
        cached = self.bundles.get((str(path), onnx))
        if cached is not None:
            return cached
        from quantbench.exporters.artifacts import artifact_sha256, sha256_file

        if onnx:
            from quantbench.exporters.onnx_info import onnx_files

            files, key = onnx_files(path), artifact_sha256(path)
        else:
            files, key = [path], sha256_file(path)
        entries = []
        for f in files:
            digest = sha256_file(f)
            if digest not in self.refs:
                self.refs[digest] = self.ray.put(f.read_bytes())
            entries.append({"name": str(f.relative_to(path.parent)), "sha256": digest, "size": f.stat().st_size,
                            "ref": self.refs[digest]})
        bundle = {"key": key, "main": path.name, "files": entries}
        self.bundles[(str(path), onnx)] = bundle
        return bundle

    def files_for(self, spec: CellSpec) -> dict[str, dict[str, Any]]:
        """Dotted spec field -> bundle, for every file the cell's worker opens."""
        out: dict[str, dict[str, Any]] = {}
        for name, payload in (("artifact", spec.artifact), ("interleave_with", spec.interleave_with)):
            if not payload:
                continue
            if payload.get("path") and payload.get("format") in ("onnx", "trt-calibrate"):
                out[f"{name}.path"] = self.bundle(payload["path"], onnx=True)
            if payload.get("reference_path"):  # the fp32 ONNX the variant came from
                out[f"{name}.reference_path"] = self.bundle(payload["reference_path"], onnx=True)
            if payload.get("format") == "torch":
                from quantbench.exporters.registry import ModelSource

                weights = ModelSource.from_dict(payload["source"]).weights_file()
                if weights is not None and weights.is_file():
                    out[f"{name}.source.weights"] = self.bundle(weights, onnx=False)
        if spec.reference_logits:
            out["reference_logits"] = self.bundle(spec.reference_logits, onnx=False)
        return out


class _Fleet:
    """One fleet sweep: survey the nodes, plan the cells, ship, submit, collect rows."""

    def __init__(self, ray: Any, cfg: SweepConfig, output: Path, retry_failed: bool, log: Callable[[str], None],
                 progress: Callable[[int], Any] | None, on_row: Callable[[dict[str, Any]], None] | None,
                 on_plan: Callable[[int], None] | None) -> None:
        self.ray, self.cfg, self.output, self.retry_failed, self.log = ray, cfg, output, retry_failed, log
        self.progress, self.on_row, self.on_plan = progress, on_row, on_plan
        self.results = output / RESULTS_FILE
        self.summary = SweepSummary(results_path=self.results)
        self.run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + os.urandom(3).hex()
        self.summary.run_id = self.run_id
        self.env = fingerprint()  # the driver's: for rows about the sweep itself, not a cell
        self.nodes: list[Node] = []
        self.lost: dict[str, Node] = {}

    # ---- the cluster -------------------------------------------------------------------------
    def survey(self) -> None:
        """The nodes with quantbench resources, each asked (by a task pinned to it) for its environment."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from quantbench.harness.sweep.launch import ray_cells

        alive = cluster_nodes(self.ray)
        self.nodes = [Node(nid, n.get("NodeManagerAddress", "?"), dict(n.get("Resources") or {}))
                      for nid, n in alive.items() if (n.get("Resources") or {}).get(SLOT, 0) > 0]
        if not self.nodes:
            raise RunError(f"no node of the Ray cluster advertises quantbench resources ({len(alive)} node(s) "
                           f"alive): {START_HINT}")
        task = self.ray.remote(ray_cells.survey)
        refs = {task.options(num_cpus=0, max_retries=0, runtime_env={"env_vars": TASK_ENV},
                             scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False)).remote(): n
                for n in self.nodes}
        ready, late = self.ray.wait(list(refs), num_returns=len(refs), timeout=SURVEY_TIMEOUT_S)
        for ref in ready:
            node = refs[ref]
            try:
                info = self.ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - one node's problem is a warning
                self.log(f"warning: node {node.name} could not describe itself: {first_line(exc)}")
                continue
            node.host, node.env = info["host"], info["env"]
        for ref in late:
            self.log(f"warning: node {refs[ref].name} did not answer within {SURVEY_TIMEOUT_S:.0f} s: "
                     "cells may still run there; their rows carry its environment")
            self.ray.cancel(ref, force=True)
        for n in self.nodes:
            kinds = sorted({k for k in map(self.kind_of(n), self.offers(n)) if k and n.has(k)})
            self.log(f"node {n.name}: {', '.join(kinds) or 'no device kind advertised'}; "
                     f"runtimes {', '.join(sorted(self.offers(n))) or 'none'}")

    def kind_of(self, node: Node) -> Callable[[str], str | None]:
        """``runtime@device`` resource -> the device's kind on ``node`` (None: the node did not answer)."""
        from quantbench.runtimes import list_runtimes

        known = list_runtimes()

        def kind(res: str) -> str | None:
            pair = split_runtime_resource(res, known)
            return device_kind(node.env, pair[1]) if pair and node.env else None
        return kind

    def offers(self, node: Node) -> set[str]:
        """The ``runtime@device`` resources of ``node`` naming a runtime quantbench knows."""
        from quantbench.runtimes import list_runtimes

        known = list_runtimes()
        return {k for k in node.resources if split_runtime_resource(k, known)}

    # ---- planning ----------------------------------------------------------------------------
    def targets(self, usable: list[str]) -> list[tuple[str, str, str]]:
        """(target, runtime, device) triples to measure: pinned by ``run.targets`` or one per device kind."""
        from quantbench.runtimes import list_runtimes

        known = list_runtimes()
        wanted_device = (lambda d: True) if self.cfg.run.devices == ["auto"] else (lambda d: d in self.cfg.run.devices)
        triples: list[tuple[str, str, str]] = []

        def add(target: str, node: Node, kind: str | None = None) -> None:
            for res in sorted(self.offers(node)):
                if kind is not None and self.kind_of(node)(res) != kind:
                    continue
                runtime, device = split_runtime_resource(res, known) or ("", "")
                if not target_covers(node.env, device, target):  # gpu-H100: its GPU cells, not its CPU ones
                    continue
                if runtime in usable and wanted_device(device) and (target, runtime, device) not in triples:
                    triples.append((target, runtime, device))

        if self.cfg.run.targets:
            for target in self.cfg.run.targets:
                holders = [n for n in self.nodes if n.has(target)]
                if not holders:
                    self._target_missing(target)
                for n in holders:
                    add(target, n)
        else:
            for n in self.nodes:
                kinds = {k for k in map(self.kind_of(n), self.offers(n)) if k}
                for kind in sorted(kinds):
                    if n.has(kind):
                        add(kind, n, kind)
                    else:
                        self.log(f"warning: node {n.name} does not advertise its device kind {kind}: only cells "
                                 f"pinned to its resources by run.targets run there ({START_HINT})")
        order = {r: i for i, r in enumerate(usable)}
        return sorted(triples, key=lambda t: (order[t[1]], t[0], t[2]))

    def _target_missing(self, target: str) -> None:
        reason = f"no node of the Ray cluster advertises resource '{target}' ({START_HINT} on a machine that has it)"
        self.log(f"warning: target {target}: {reason}")
        self._skipped_row(f"target-unavailable:{target}", f"target unavailable: {reason}", "*", target, target)

    def _skipped_row(self, key: str, error: str, runtime: str, device: str, target: str | None) -> None:
        """A row about the sweep itself (a runtime or target no node offers), one id per ``key``."""
        self._write({"schema_version": SCHEMA_VERSION, "run_id": self.run_id,
                     "cell_id": hashlib.sha256(key.encode()).hexdigest()[:16],
                     "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "status": "skipped", "error": error, "runtime": runtime, "runtime_label": runtime,
                     "model": "*", "variant": "*", "precision": None, "device": device, "batch": None,
                     "env": self.env, "fleet": {"target": target, "node_id": None}})

    def threads_for(self, target: str) -> int:
        """``run.threads``, or the fewest physical cores among the nodes serving ``target`` when 0."""
        if self.cfg.run.threads:
            return self.cfg.run.threads
        cores = sorted({int(n.env.get("cores_physical") or n.env.get("cores_logical") or 1)
                        for n in self.nodes if n.has(target) and n.env})
        if len(cores) > 1:
            self.log(f"warning: target {target}: its nodes have {' and '.join(map(str, cores))} cores; cells use "
                     f"{cores[0]} threads (set run.threads to choose)")
        return cores[0] if cores else 1

    def expand(self, models: list[PreparedModel], usable: list[str]) -> list[FleetCell]:
        triples = self.targets(usable)
        threads = {t: self.threads_for(t) for t in dict.fromkeys(t for t, _, _ in triples)}
        keys = [model_key(pm) for pm in models]
        cells = []
        for mi, model in enumerate(self.cfg.models):
            for variant in self.cfg.variants:
                for target, runtime, device in triples:
                    for choice in runtime_choices(runtime, self.cfg.runtime_options.get(runtime, {}), threads[target]):
                        for batch in self.cfg.run.batch_sizes:
                            cells.append(FleetCell(Cell(mi, model, variant, choice, device, batch, keys[mi]), target))
        if self.cfg.run.devices != ["auto"]:
            served = {d for _, _, d in triples}
            for d in self.cfg.run.devices:
                if d not in served:
                    note = f"no node of the Ray cluster offers device '{d}' for the chosen runtimes"
                    self.summary.notes.append(note)
                    self.log(f"warning: {note}")
        return cells

    def demand(self, fc: FleetCell) -> dict[str, float]:
        d = {fc.target: SHARE, runtime_resource(fc.cell.runtime.name, fc.cell.device): SHARE}
        d[SLOT] = round(1.0 / self.cfg.run.cells_per_node, 4)
        return d

    # ---- the sweep ---------------------------------------------------------------------------
    def run(self) -> SweepSummary:
        from quantbench.runtimes import list_runtimes

        cfg, log = self.cfg, self.log
        self.survey()
        offered = {split_runtime_resource(r, list_runtimes())[0] for n in self.nodes for r in self.offers(n)}
        explicit = cfg.run.runtimes != ["auto"]
        usable = [r for r in (cfg.run.runtimes if explicit else list_runtimes()) if r in offered]
        if explicit:
            for name in cfg.run.runtimes:
                if name not in offered:
                    self._runtime_missing(name)
        models = resolve_models(cfg)
        cells = self.expand(models, usable)
        if not cells and not self.summary.skipped:
            raise RunError("nothing to run: no node of the Ray cluster offers the chosen runtimes, devices and "
                           f"targets (runtimes offered: {', '.join(sorted(offered)) or 'none'}; {START_HINT})")
        stored = stored_rows(self.results, log)
        cache = cache_dir(cfg)
        for mi in sorted({fc.cell.model_index for fc in cells}):
            variants = {fc.cell.variant.name for fc in cells if fc.cell.model_index == mi}
            prepare_artifacts(models[mi], [v for v in cfg.variants if v.name in variants], cache, log)
        jobs = self.plan(cells, models, stored)
        if self.on_plan:
            self.on_plan(len(jobs))
        self.execute(jobs, models)
        return self.summary

    def _runtime_missing(self, name: str) -> None:
        reason = f"no node of the Ray cluster offers it ({START_HINT} on a machine that has it)"
        self.summary.unavailable[name] = reason
        self.log(f"warning: runtime {name} unavailable: {reason}")
        self._skipped_row(f"unavailable:{name}", f"runtime unavailable: {reason}", name, "*", None)

    def plan(self, cells: list[FleetCell], models: list[PreparedModel],
             stored: dict[str, dict[str, Any]]) -> list[_Job]:
        """The cells to measure: stored rows are reused when some node of their target would measure
        under the same inputs (the same fingerprint)."""
        measure = {f.name: getattr(self.cfg.run, f.name) for f in fields(MeasureSettings)}
        contents = {mi: model_content(models[mi]) for mi in {fc.cell.model_index for fc in cells}}
        jobs: list[_Job] = []
        reasons: list[tuple[str, str]] = []
        reused: list[dict[str, Any]] = []
        for fc in cells:
            cell, pm = fc.cell, models[fc.cell.model_index]
            previous = stored.get(fc.cell_id)
            prep_error = pm.error or pm.artifact_errors.get(cell.variant.name, "")
            if prep_error and previous is not None and previous.get("status") == "ok":
                self.summary.already += 1
                continue
            envs = [n.env for n in self.nodes if n.has(fc.target) and n.env]
            row = _base_row(self.run_id, cell, pm, envs[0] if envs else self.env)
            row["cell_id"] = fc.cell_id
            parts = {"measure": measure, "pm": pm, "artifact_sha256": row["artifact_sha256"],
                     "variant_settings": row["variant_settings"], "runtime": cell.runtime.name,
                     "runtime_options": dict(cell.runtime.options), "device": cell.device,
                     "model": contents[cell.model_index], "calibration": _calibration(cell, pm)}
            job = _Job(fc, row, self.demand(fc), parts)
            row["fleet"] = {"target": fc.target, "demand": job.demand, "node_id": None}
            self._fingerprint(job, row["env"])
            row["measure_settings"] = measure
            why = ""
            lost = previous is not None and (previous.get("fleet") or {}).get("lost")
            if previous is not None and not lost:
                decisions = [reuse_decision(previous, self._parts(job, env), env, self.retry_failed) for env in envs]
                if any(reuse for reuse, _ in decisions):
                    self.summary.already += 1
                    reused.append(previous)
                    continue
                why = next((w for _, w in decisions if w), "")
            if why:
                self.summary.remeasured += 1
                reasons.append((f"{_what(cell, pm)} [{fc.target}]", why))
            jobs.append(job)
        reaffirm_rows(self.results, reused, self.run_id)
        if self.summary.already:
            self.log(f"{self.summary.already} cell(s) already in {self.results} with unchanged inputs: skipped "
                     f"(delete the file to measure again)")
        for what, why in reasons[:MAX_REASON_LINES]:
            self.log(f"warning: {what}: re-measured, {why}")
        if len(reasons) > MAX_REASON_LINES:
            self.log(f"warning: {len(reasons) - MAX_REASON_LINES} more cell(s) re-measured")
        return jobs

    def _parts(self, job: _Job, env: dict[str, Any]) -> dict[str, str]:
        return fingerprint_parts(env=env, **job.parts)

    def _fingerprint(self, job: _Job, env: dict[str, Any]) -> None:
        parts = self._parts(job, env)
        job.row.update({"env": env, "fingerprint": combine(parts), "fingerprint_parts": parts})

    def execute(self, jobs: list[_Job], models: list[PreparedModel]) -> None:
        """Submit every cell, then write each row as its cell ends; cells no node can take any more fail."""
        from quantbench.harness.sweep.launch import ray_cells

        task = self.ray.remote(ray_cells.run_cell)
        shipper = _Shipper(self.ray)
        measure = jobs[0].parts["measure"] if jobs else {}
        pending: dict[Any, _Job] = {}
        started = time.perf_counter()
        try:
            for job in jobs:
                cell, pm = job.fcell.cell, models[job.fcell.cell.model_index]
                spec, error, skipped = cell_job(self.cfg, cell, pm, measure)
                if error or skipped:
                    job.row.update({"status": "failed" if error else "skipped", "error": error or skipped,
                                    "duration_s": 0.0})
                    self._finish(job.row)
                    continue
                spec.cell_id = job.fcell.cell_id
                payload = {"spec": ray_cells.spec_dict(spec), "files": shipper.files_for(spec),
                           "data": self._data_checks(pm, spec), "timeout_s": self.cfg.run.timeout_s,
                           "run_id": self.run_id}
                ref = task.options(num_cpus=0, resources=job.demand, max_retries=MAX_RETRIES, retry_exceptions=False,
                                   runtime_env={"env_vars": TASK_ENV},
                                   name=f"quantbench-cell-{job.fcell.cell_id}").remote(payload)
                pending[ref] = job
            last_check = 0.0
            while pending:
                ready, _ = self.ray.wait(list(pending), num_returns=1, timeout=POLL_S, fetch_local=False)
                for ref in ready:
                    self._collect(pending.pop(ref), ref)
                if pending and time.perf_counter() - last_check >= NODE_CHECK_S:
                    last_check = time.perf_counter()
                    self._drop_orphans(pending)
        finally:
            for ref in pending:  # interrupted: nothing left running on the nodes
                self.ray.cancel(ref, force=True)
        if not jobs:
            return
        self.log(f"fleet: {len(jobs)} cell(s) in {time.perf_counter() - started:.0f} s on "
                 f"{len(self.nodes) - len(self.lost)} node(s)" + (f" ({len(self.lost)} lost)" if self.lost else ""))

    def _data_checks(self, pm: PreparedModel, spec: CellSpec) -> list[dict[str, Any]]:
        checks = [{"what": "evaluation data", "spec": pm.dataset, "fingerprint": pm.dataset_info.get("fingerprint")}]
        if spec.calibration:
            checks.append({"what": "calibration data", "spec": pm.calib_data,
                           "fingerprint": (pm.dataset_info.get("calibration") or {}).get("fingerprint")})
        return checks

    def _collect(self, job: _Job, ref: Any) -> None:
        """Turn a finished task into the cell's row."""
        import ray.exceptions as rex

        row = job.row
        try:
            out = self.ray.get(ref)
        except (rex.NodeDiedError, rex.WorkerCrashedError, rex.LocalRayletDiedError) as exc:
            row.update({"status": "failed", "duration_s": None,
                        "error": f"the Ray worker measuring it died (node lost or out of memory; retried up to "
                                 f"{MAX_RETRIES} times): {first_line(exc)}"})
            row["fleet"]["lost"] = True
            self._finish(row)
            return
        except rex.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            row.update({"status": "failed", "duration_s": None,
                        "error": f"the fleet task failed on its node: {type(cause).__name__}: {first_line(cause)}"})
            self._finish(row)
            return
        except rex.RayError as exc:
            row.update({"status": "failed", "duration_s": None, "error": f"Ray: {first_line(exc)}"})
            row["fleet"]["lost"] = True
            self._finish(row)
            return
        result = dict(out["result"])
        error = str(result.get("error") or "")
        if out.get("log_path"):  # as a local sweep does: every cell's log under OUTPUT/cells/RUN_ID/
            log_path = self.output / "cells" / self.run_id / f"{job.fcell.cell_id}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_text(out["log"])
            if out["log_path"] in error:
                result["error"] = error.replace(out["log_path"], f"{log_path}; on {out['host']}: {out['log_path']}")
        row.update(result)
        row["duration_s"] = out.get("duration_s")
        node = cluster_nodes(self.ray).get(out["node_id"]) or {}
        known = next((n for n in self.nodes if n.node_id == out["node_id"]), None)
        resources = node.get("Resources") or (known.resources if known else {})
        row["fleet"].update({"node_id": out["node_id"], "node_ip": out["node_ip"], "host": out["host"],
                             "resources": shown_resources(resources), "started": out.get("started"),
                             "ended": out.get("ended")})
        self._fingerprint(job, out["env"])
        self._finish(row)

    def _drop_orphans(self, pending: dict[Any, _Job]) -> None:
        """Fail the cells no alive node can take any more (their nodes left the cluster)."""
        alive = cluster_nodes(self.ray)
        for n in self.nodes:
            if n.node_id not in alive and n.node_id not in self.lost:
                self.lost[n.node_id] = n
                self.log(f"warning: node {n.name} left the cluster: its unfinished cells go to other nodes with "
                         "their resources, or fail")
        for ref, job in list(pending.items()):
            if any(all(n.get("Resources", {}).get(k, 0) >= v for k, v in job.demand.items()) for n in alive.values()):
                continue
            missing = ", ".join(k for k in job.demand if not any(n.get("Resources", {}).get(k, 0) for n in alive.values()))
            gone = [n.name for n in self.lost.values() if all(n.resources.get(k, 0) >= v for k, v in job.demand.items())]
            self.ray.cancel(ref, force=True)
            del pending[ref]
            row = job.row
            row.update({"status": "failed", "duration_s": None,
                        "error": f"no alive node has {missing or 'the resources it needs'} any more"
                                 + (f": {', '.join(gone)} left the cluster mid-sweep" if gone else "")
                                 + "; rerun to measure it when a node with them is back"})
            row["fleet"]["lost"] = True
            lost_env = next((n.env for n in self.lost.values() if n.has(job.fcell.target) and n.env), None)
            if lost_env is not None:
                self._fingerprint(job, lost_env)
            self._finish(row)

    def _write(self, row: dict[str, Any]) -> None:
        append_row(self.results, row)
        count_row(self.summary, row)
        if self.on_row:
            self.on_row(row)

    def _finish(self, row: dict[str, Any]) -> None:
        row.setdefault("duration_s", None)
        self._write(row)
        if self.progress:
            self.progress(1)
