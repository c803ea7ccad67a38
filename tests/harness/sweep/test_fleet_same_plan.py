"""One plan for every launcher: the same config planned for this machine and for a Ray cluster gives the
same cells, the same reuse decisions (with the same reasons) and the same messages.

The cluster here is a surveyed one (two nodes that are this machine, as a Ray survey reports them), so
no Ray is started: the planner sees exactly what it sees on a real cluster. test_fleet.py checks the
same property end to end on a real local Ray cluster.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from quantbench.harness.config import parse_config
from quantbench.harness.results.store import append_row
from quantbench.harness.sweep import planner
from quantbench.harness.sweep.environment import fingerprint
from quantbench.harness.sweep.launch import ray as ray_launch
from quantbench.harness.sweep.launch.local import LocalLauncher
from quantbench.harness.sweep.launch.ray import RayLauncher
from quantbench.harness.sweep.launch.ray_cluster import Node
from quantbench.harness.sweep.output import RESULTS_FILE
from quantbench.harness.sweep.planner import KEEP, MEASURE, REUSE, plan_sweep
from quantbench.harness.sweep.resources import SLOT
from tests.harness.sweep.test_runner_resume import RUN, tiny_npz, tiny_onnx

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

pytestmark = pytest.mark.ort_cpu

TARGET = "qb-test-t"
BATCHES = list(range(1, 13))  # 12 cells: more re-measured cells than are named one by one


class Sweeps:
    """The same tiny sweep, planned for the local launcher and for a surveyed two-node cluster."""

    def __init__(self, tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp, self.cache = tmp_path, cache
        self.model, self.data = tiny_onnx(tmp_path / "m.onnx"), tiny_npz(tmp_path / "d.npz")
        self.min_iters = 3
        env = fingerprint()
        nodes = [Node(f"{i}" * 16, "127.0.0.1", {SLOT: 1.0, TARGET: 1.0, "ort-cpu@cpu": 1.0}, host=f"n{i}", env=env)
                 for i in (1, 2)]
        monkeypatch.setattr(ray_launch, "survey", lambda ray, log: list(nodes))

    def config(self, where: str) -> Any:
        text = RUN.format(out=self.tmp / where, cache=self.cache, batches=str(BATCHES), warmup=1,
                          min_iters=self.min_iters, io_batches=2)
        if where == "ray":
            text = text.replace("[run]\n", f'[run]\nray = "auto"\ntargets = ["{TARGET}"]\n')
        text += f'[[models]]\nname = "{self.model}"\ndataset = "npz:{self.data}"\n'
        text += '[[variants]]\nname = "fp32"\nprecision = "fp32"\n'
        return parse_config(tomllib.loads(text), where)

    def plan(self, where: str) -> tuple[planner.Plan, list[str]]:
        """Plan the sweep for ``where`` ("local" or "ray"); the plan and every message planning said."""
        cfg = self.config(where)
        logs: list[str] = []
        launcher = RayLauncher(cfg, logs.append) if where == "ray" else LocalLauncher(cfg, logs.append)
        env = fingerprint()
        out = self.tmp / where
        out.mkdir(exist_ok=True)
        plan = plan_sweep(cfg, launcher.offer(env), env, out / RESULTS_FILE, False, logs.append)
        planner.announce(plan, logs.append)
        return plan, logs

    def measured(self, plan: planner.Plan) -> None:
        """Store every planned cell's row as if its worker had measured it."""
        for job in plan.jobs:
            append_row(plan.results, {**job.row, "status": "ok", "error": "", "duration_s": 0.1})


def cells(plan: planner.Plan) -> list[tuple[Any, ...]]:
    """The cells without where they run (a fleet cell's id also names its target)."""
    return [(c.model_index, c.variant.name, c.runtime.label, c.runtime.options, c.device, c.batch,
             dataclasses.replace(c, target=None).cell_id) for c in plan.cells]


def decisions(plan: planner.Plan) -> list[tuple[Any, ...]]:
    return [(d.cell.batch, d.action, d.why) for d in plan.decisions]


def said(logs: list[str], plan: planner.Plan) -> list[str]:
    """The messages with the launcher's own words taken out: the results path and a fleet cell's target."""
    return [m.replace(str(plan.results), "RESULTS").replace(f" [{TARGET}]", "") for m in logs]


@pytest.fixture
def sweeps(tmp_path, shared_cache, monkeypatch) -> Sweeps:
    s = Sweeps(tmp_path, shared_cache, monkeypatch)
    s.plan("warm")  # the model is prepared once into the cache: both plans below find it there
    return s


@pytest.mark.slow
def test_local_and_ray_plan_the_same_cells_decisions_and_messages(sweeps, monkeypatch):
    local, local_logs = sweeps.plan("local")
    ray, ray_logs = sweeps.plan("ray")
    assert len(local.cells) == len(BATCHES) and cells(ray) == cells(local)
    assert {c.target for c in ray.cells} == {TARGET} and {c.target for c in local.cells} == {None}
    assert decisions(local) == decisions(ray) == [(b, MEASURE, "") for b in BATCHES]
    assert said(ray_logs, ray) == said(local_logs, local)

    # Measured, then planned again unchanged: every stored row is reused, in the same words.
    sweeps.measured(local)
    sweeps.measured(ray)
    local, local_logs = sweeps.plan("local")
    ray, ray_logs = sweeps.plan("ray")
    assert decisions(local) == decisions(ray) == [(b, REUSE, "") for b in BATCHES]
    assert not local.jobs and not ray.jobs
    assert f"{len(BATCHES)} cell(s) already in RESULTS with unchanged inputs: skipped " \
           "(delete the file to measure again)" in said(local_logs, local)
    assert said(ray_logs, ray) == said(local_logs, local)

    # A timing setting changed: every cell is measured again; ten are named, the rest counted by reason.
    sweeps.min_iters = 4
    local, local_logs = sweeps.plan("local")
    ray, ray_logs = sweeps.plan("ray")
    why = "timing settings changed"
    assert decisions(local) == decisions(ray) == [(b, MEASURE, why) for b in BATCHES]
    assert said(ray_logs, ray) == said(local_logs, local)
    remeasured = [m for m in said(local_logs, local) if "re-measured" in m]
    assert remeasured == [f"warning: m/fp32 on ort-cpu (cpu) batch {b}: re-measured, {why}" for b in BATCHES[:10]] \
        + [f"warning: 2 more cell(s) re-measured, {why}"]

    # The model cannot be prepared any more: its good stored rows are kept, unchecked, and both say so.
    def fails(pm, variants, cache, log):
        pm.error = "export failed: boom"

    monkeypatch.setattr(planner, "prepare_artifacts", fails)
    sweeps.min_iters = 3
    local, local_logs = sweeps.plan("local")
    ray, ray_logs = sweeps.plan("ray")
    assert decisions(local) == decisions(ray) == [(b, KEEP, "export failed: boom") for b in BATCHES]
    assert "warning: m/fp32: stored rows kept without checking them: export failed: boom" in ray_logs
    assert said(ray_logs, ray) == said(local_logs, local)


@pytest.mark.slow
def test_rows_about_the_sweep_are_written_alike(sweeps, tmp_path):
    """A runtime asked for that nothing offers: one skipped row, with the same message, on both launchers
    (the fleet's row also says it is about no target)."""
    plans = {}
    for where in ("local", "ray"):
        cfg = sweeps.config(where)
        cfg.run.runtimes = ["ort-cpu", "tensorrt"]
        logs: list[str] = []
        launcher = RayLauncher(cfg, logs.append) if where == "ray" else LocalLauncher(cfg, logs.append)
        env = fingerprint()
        offer = launcher.offer(env)
        offer.runtimes.unavailable["tensorrt"] = "not installed here"  # the same reason on both, for the comparison
        plan = plan_sweep(cfg, offer, env, tmp_path / where / RESULTS_FILE, False, logs.append)
        plans[where] = (plan, [m for m in logs if "tensorrt" in m])
    (local, local_logs), (ray, ray_logs) = plans["local"], plans["ray"]
    assert local_logs == ray_logs == ["warning: runtime tensorrt unavailable: not installed here"]
    (lrow,), (rrow,) = local.skipped, ray.skipped
    assert rrow.pop("fleet") == {"target": None, "node_id": None}
    for row in (lrow, rrow):
        row.pop("run_id"), row.pop("timestamp")
    assert lrow == rrow and lrow["status"] == "skipped" and lrow["error"] == "runtime unavailable: not installed here"
