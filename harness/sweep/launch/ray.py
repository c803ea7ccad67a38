"""The Ray launcher: a sweep's cells as Ray tasks across a cluster of machines (``run.ray`` / ``--ray``).

The rules of a local sweep hold: the sweep is planned once, by the same planner, and rows are written
and resumed the same way (:mod:`harness.sweep.runner`). The driver (this process) prepares every model
and builds every artifact once, then ships the files by content hash (Ray's object store; a node
writes them into its own cache only when missing, see :mod:`.ray_cells`). Each cell is a Ray task
that asks for its target (a device kind such as ``cpu-intel-xeon-platinum-8480`` or a resource the
config names in ``run.targets``), its runtime on its device (``ort-cpu@cpu``) and a share of the
node's ``quantbench-slot`` (the whole slot unless ``run.cells_per_node`` says otherwise, so cells
never share a node's cores). On the node the cell runs in its own contained subprocess with the
sweep's timeout. Rows carry the node's environment in ``env`` and where the cell ran in ``fleet``.

Faults: a node that leaves the cluster loses no row already written; Ray retries its unfinished
cells on another node with the same resources, and a cell no alive node can take any more gets a
failed row with the reason (rerun to measure it when the node is back). A crash inside a cell
fails that cell only (it is a contained subprocess).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from quantbench.common.subproc import signal_guard
from quantbench.harness.config.errors import first_line
from quantbench.harness.config.schema import SweepConfig
from quantbench.harness.measure.cell import CellSpec
from quantbench.harness.sweep.launch.base import Finish, Launcher, job_spec
from quantbench.harness.sweep.launch.ray_cluster import (
    START_HINT,
    TASK_ENV,
    Node,
    check_reachable,
    cluster_nodes,
    connect,
    import_ray,
    ray_messages_to,
    shown_resources,
    survey,
)
from quantbench.harness.sweep.launch.ray_ship import Shipper
from quantbench.harness.sweep.output import check_output_dir, output_lock
from quantbench.harness.sweep.plan import Cell, Offer, Placement, RuntimeResolution, Skip
from quantbench.harness.sweep.planner import Job, Plan
from quantbench.harness.sweep.prepare import PreparedModel
from quantbench.harness.sweep.resources import SLOT, runtime_resource, split_runtime_resource, target_covers

SHARE = 0.001  # how much of a target / runtime resource a cell asks for: it only has to be there
MAX_RETRIES = 2  # Ray re-runs a cell whose node or worker process died, on any node with its resources
POLL_S = 0.5
NODE_CHECK_S = 2.0


class RayLauncher(Launcher):
    """Cells on the nodes of a Ray cluster that advertise quantbench resources, as many at once as they take."""

    name = "ray"

    def __init__(self, cfg: SweepConfig, log: Callable[[str], None]) -> None:
        super().__init__(cfg, log)
        self.ray: Any = None
        self.nodes: list[Node] = []
        self.lost: dict[str, Node] = {}

    @contextmanager
    def session(self, output: Path) -> Iterator[None]:
        if self.cfg.run.ray != "auto":  # a given address is probed before Ray is even imported (seconds count)
            check_reachable(self.cfg.run.ray)
        ray = import_ray()
        check_output_dir(output)
        with output_lock(output):
            connected = connect(ray, self.cfg.run.ray)
            self.ray = ray
            try:
                with signal_guard(), ray_messages_to(self.log):
                    yield
            finally:
                if connected:
                    ray.shutdown()

    # ---- where cells can run -----------------------------------------------------------------
    def offer(self, env: dict[str, Any]) -> Offer:
        from quantbench.runtimes import list_runtimes

        cfg = self.cfg
        self.nodes = survey(self.ray, self.log)
        offered = {split_runtime_resource(r, list_runtimes())[0] for n in self.nodes for r in n.offers()}
        explicit = cfg.run.runtimes != ["auto"]
        usable = [r for r in (cfg.run.runtimes if explicit else list_runtimes()) if r in offered]
        missing = {name: f"no node of the Ray cluster offers it ({START_HINT} on a machine that has it)"
                   for name in cfg.run.runtimes if explicit and name not in offered}
        triples, skips = self.targets(usable)
        threads = {t: self.threads_for(t) for t in dict.fromkeys(t for t, _, _ in triples)}
        return Offer(
            RuntimeResolution(usable, missing, explicit),
            [Placement(runtime, (device,), threads[target], target) for target, runtime, device in triples],
            envs={t: [n.env for n in self.nodes if n.has(t) and n.env] for t in threads}, skips=skips,
            unserved=lambda d: f"no node of the Ray cluster offers device '{d}' for the chosen runtimes",
            nothing_to_run=lambda notes: (
                "nothing to run: no node of the Ray cluster offers the chosen runtimes, devices and targets "
                f"(runtimes offered: {', '.join(sorted(offered)) or 'none'}; {START_HINT})"),
            row_fields=lambda cell: {"fleet": {"target": cell.target, "demand": self.demand(cell), "node_id": None}},
            sweep_fields=lambda target: {"fleet": {"target": target, "node_id": None}})

    def targets(self, usable: list[str]) -> tuple[list[tuple[str, str, str]], list[Skip]]:
        """(target, runtime, device) triples to measure, pinned by ``run.targets`` or one per device kind;
        and a skipped row for each target no node advertises."""
        from quantbench.runtimes import list_runtimes

        known = list_runtimes()
        wanted_device = (lambda d: True) if self.cfg.run.devices == ["auto"] else (lambda d: d in self.cfg.run.devices)
        triples: list[tuple[str, str, str]] = []
        skips: list[Skip] = []

        def add(target: str, node: Node, kind: str | None = None) -> None:
            for res in sorted(node.offers()):
                if kind is not None and node.kind_of(res) != kind:
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
                    reason = (f"no node of the Ray cluster advertises resource '{target}' ({START_HINT} on a machine "
                              "that has it)")
                    self.log(f"warning: target {target}: {reason}")
                    skips.append(Skip(f"target-unavailable:{target}", f"target unavailable: {reason}", "*", target,
                                      target))
                for n in holders:
                    add(target, n)
        else:
            for n in self.nodes:
                kinds = {k for k in map(n.kind_of, n.offers()) if k}
                for kind in sorted(kinds):
                    if n.has(kind):
                        add(kind, n, kind)
                    else:
                        self.log(f"warning: node {n.name} does not advertise its device kind {kind}: only cells "
                                 f"pinned to its resources by run.targets run there ({START_HINT})")
        order = {r: i for i, r in enumerate(usable)}
        return sorted(triples, key=lambda t: (order[t[1]], t[0], t[2])), skips

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

    def demand(self, cell: Cell) -> dict[str, float]:
        """The Ray resources a cell's task asks for: its target, its runtime on its device, its share of a slot."""
        d = {cell.target or "": SHARE, runtime_resource(cell.runtime.name, cell.device): SHARE}
        d[SLOT] = round(1.0 / self.cfg.run.cells_per_node, 4)
        return d

    # ---- measuring ---------------------------------------------------------------------------
    def launch(self, plan: Plan, finish: Finish) -> None:
        """Submit every cell, then finish each row as its cell ends; cells no node can take any more fail."""
        from quantbench.harness.sweep.launch import ray_cells

        task = self.ray.remote(ray_cells.run_cell)
        shipper = Shipper(self.ray)
        pending: dict[Any, Job] = {}
        started = time.perf_counter()
        try:
            for job in plan.jobs:
                spec = job_spec(plan, job)
                if spec is None:
                    job.row["duration_s"] = 0.0
                    finish(job.row)
                    continue
                payload = {"spec": ray_cells.spec_dict(spec), "files": shipper.files_for(spec),
                           "data": data_checks(plan.models[job.cell.model_index], spec),
                           "timeout_s": plan.cfg.run.timeout_s, "run_id": plan.run_id}
                ref = task.options(num_cpus=0, resources=self.demand(job.cell), max_retries=MAX_RETRIES,
                                   retry_exceptions=False, runtime_env={"env_vars": TASK_ENV},
                                   name=f"quantbench-cell-{job.cell.cell_id}").remote(payload)
                pending[ref] = job
            last_check = 0.0
            while pending:
                ready, _ = self.ray.wait(list(pending), num_returns=1, timeout=POLL_S, fetch_local=False)
                for ref in ready:
                    self._collect(plan, pending.pop(ref), ref, finish)
                if pending and time.perf_counter() - last_check >= NODE_CHECK_S:
                    last_check = time.perf_counter()
                    self._drop_orphans(pending, finish)
        finally:
            for ref in pending:  # interrupted: nothing left running on the nodes
                self.ray.cancel(ref, force=True)
        if not plan.jobs:
            return
        self.log(f"fleet: {len(plan.jobs)} cell(s) in {time.perf_counter() - started:.0f} s on "
                 f"{len(self.nodes) - len(self.lost)} node(s)" + (f" ({len(self.lost)} lost)" if self.lost else ""))

    def _collect(self, plan: Plan, job: Job, ref: Any, finish: Finish) -> None:
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
            finish(row)
            return
        except rex.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            row.update({"status": "failed", "duration_s": None,
                        "error": f"the fleet task failed on its node: {type(cause).__name__}: {first_line(cause)}"})
            finish(row)
            return
        except rex.RayError as exc:
            row.update({"status": "failed", "duration_s": None, "error": f"Ray: {first_line(exc)}"})
            row["fleet"]["lost"] = True
            finish(row)
            return
        result = dict(out["result"])
        error = str(result.get("error") or "")
        if out.get("log_path"):  # as a local sweep does: every cell's log under OUTPUT/cells/RUN_ID/
            log_path = plan.results.parent / "cells" / plan.run_id / f"{job.cell.cell_id}.log"
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
        job.stamp(out["env"])
        finish(row)

    def _drop_orphans(self, pending: dict[Any, Job], finish: Finish) -> None:
        """Fail the cells no alive node can take any more (their nodes left the cluster)."""
        alive = cluster_nodes(self.ray)
        for n in self.nodes:
            if n.node_id not in alive and n.node_id not in self.lost:
                self.lost[n.node_id] = n
                self.log(f"warning: node {n.name} left the cluster: its unfinished cells go to other nodes with "
                         "their resources, or fail")
        for ref, job in list(pending.items()):
            demand = self.demand(job.cell)
            if any(all(n.get("Resources", {}).get(k, 0) >= v for k, v in demand.items()) for n in alive.values()):
                continue
            missing = ", ".join(k for k in demand if not any(n.get("Resources", {}).get(k, 0) for n in alive.values()))
            gone = [n.name for n in self.lost.values() if all(n.resources.get(k, 0) >= v for k, v in demand.items())]
            self.ray.cancel(ref, force=True)
            del pending[ref]
            row = job.row
            row.update({"status": "failed", "duration_s": None,
                        "error": f"no alive node has {missing or 'the resources it needs'} any more"
                                 + (f": {', '.join(gone)} left the cluster mid-sweep" if gone else "")
                                 + "; rerun to measure it when a node with them is back"})
            row["fleet"]["lost"] = True
            lost_env = next((n.env for n in self.lost.values() if n.has(job.cell.target or "") and n.env), None)
            if lost_env is not None:
                job.stamp(lost_env)
            finish(row)


def data_checks(pm: PreparedModel, spec: CellSpec) -> list[dict[str, Any]]:
    """The data sources a node checks against the driver's fingerprints before it measures the cell."""
    checks = [{"what": "evaluation data", "spec": pm.dataset, "fingerprint": pm.dataset_info.get("fingerprint")}]
    if spec.calibration:
        checks.append({"what": "calibration data", "spec": pm.calib_data,
                       "fingerprint": (pm.dataset_info.get("calibration") or {}).get("fingerprint")})
    return checks
