"""Fleet sweeps on a real local Ray cluster: a head (driver only) and worker nodes on this machine,
each with its own custom resources and its own quantbench cache, running the shipped Fashion-MNIST
CNN on ONNX Runtime CPU. Nodes get one CPU each: the machine is small and shared.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from quantbench.harness.config import parse_config
from quantbench.harness.results.store import read_rows
from quantbench.harness.sweep.environment import fingerprint
from quantbench.harness.sweep.resources import SLOT, cpu_kind
from quantbench.harness.sweep.runner import run_sweep
from quantbench.reports.model import build_report

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

pytestmark = [pytest.mark.ray, pytest.mark.ort_cpu]

# Dead nodes are noticed in about a second instead of Ray's default of about twelve.
FAST_HEALTH = {"health_check_period_ms": 500, "health_check_failure_threshold": 3,
               "health_check_timeout_ms": 500, "health_check_initial_delay_ms": 0}

SWEEP = """
[run]
output = "{out}"
cache_dir = "{cache}"
ray = "auto"
targets = {targets}
runtimes = ["ort-cpu"]
batch_sizes = {batches}
eval_samples = 64
warmup_iters = 2
min_iters = 10
min_time_s = 0.05
max_time_s = 1.0
io_batches = 2
interleave_rounds = 1
interleave_iters = 5
interleave_block_s = 0.01
timeout_s = 300
report = false

[[models]]
name = "fashion_cnn"

[[variants]]
name = "fp32"

[[variants]]
name = "int8-minmax"
precision = "int8"
calibration = "minmax"
calib_samples = 32
"""


@dataclass
class Fleet:
    cluster: Any
    root: Path
    nodes: dict[str, Any] = field(default_factory=dict)  # name -> ray node
    caches: dict[str, Path] = field(default_factory=dict)  # name -> that node's QUANTBENCH_CACHE

    def add(self, name: str, extra: dict[str, float]) -> None:
        from quantbench.harness.sweep.resources import node_resources

        cache = self.root / f"node-{name}"
        self.caches[name] = cache
        self.nodes[name] = self.cluster.add_node(num_cpus=1, resources={**node_resources(), **extra},
                                                 env_vars={"QUANTBENCH_CACHE": str(cache)})

    def node_id(self, name: str) -> str:
        return self.nodes[name].node_id

    def name_of(self, node_id: str | None) -> str | None:
        return next((n for n in self.nodes if self.nodes[n].node_id == node_id), None)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    import ray
    from ray.cluster_utils import Cluster

    root = tmp_path_factory.mktemp("fleet")
    # The head runs the driver only: it advertises no quantbench slot, so no cell lands there.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "_system_config": FAST_HEALTH})
    f = Fleet(cluster, root)
    try:
        f.add("a", {"qb-test-a": 1, "qb-test-shared": 1})
        f.add("b", {"qb-test-b": 1})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
        yield f
    finally:
        ray.shutdown()
        cluster.shutdown()


def sweep(fleet: Fleet, name: str, targets: list[str], batches: str = "[1]", variants: list[str] | None = None):
    out = fleet.root / name
    text = SWEEP.format(out=out, cache=fleet.root / "driver-cache", targets=json.dumps(targets), batches=batches)
    cfg = parse_config(tomllib.loads(text), name)
    if variants is not None:
        cfg.variants = [v for v in cfg.variants if v.name in variants]
    return cfg, out


def rows_of(out: Path, latest: bool = True) -> list[dict[str, Any]]:
    return read_rows(out / "results.jsonl", latest_per_cell=latest).rows


@pytest.mark.slow
def test_cells_land_on_the_nodes_of_their_targets(fleet):
    cfg, out = sweep(fleet, "pinned", ["qb-test-a", "qb-test-b"])
    logs: list[str] = []
    summary = run_sweep(cfg, out, log=logs.append)
    rows = rows_of(out)
    assert (summary.ran, summary.failed, summary.skipped) == (4, 0, 0), logs
    assert sorted((r["fleet"]["target"], r["variant"]) for r in rows) == [
        ("qb-test-a", "fp32"), ("qb-test-a", "int8-minmax"), ("qb-test-b", "fp32"), ("qb-test-b", "int8-minmax")]
    for r in rows:
        assert r["status"] == "ok", r["error"]
        where = r["fleet"]["target"][-1]  # "a" or "b"
        assert r["fleet"]["node_id"] == fleet.node_id(where)
        assert r["fleet"]["resources"][r["fleet"]["target"]] == 1 and r["fleet"]["resources"][SLOT] == 1
        assert r["fleet"]["demand"][SLOT] == 1.0  # the whole node: no other cell shares its cores
        assert r["env"]["cpu_model"] == fingerprint()["cpu_model"] and r["env"]["versions"]
        assert r["fingerprint"] and set(r["fingerprint_parts"]) >= {"machine", "versions", "variant"}
        assert r["top1"] is not None and r["compute_p50_ms"] > 0
        cache = fleet.caches[where] / "fleet"
        # The artifact arrived by content hash; the node never builds (no artifacts/ of its own).
        assert (cache / "files" / r["artifact_sha256"] / ".complete").is_file()
        assert not (fleet.caches[where] / "artifacts").exists()
        # Measured in its own subprocess on the node, whose log stayed there.
        assert (cache / "cells" / r["run_id"] / f"{r['cell_id']}.log").is_file()
    # One cell at a time per node: the two cells of a node never overlap.
    for where in ("a", "b"):
        spans = sorted((r["fleet"]["started"], r["fleet"]["ended"]) for r in rows
                       if r["fleet"]["node_id"] == fleet.node_id(where))
        assert len(spans) == 2 and spans[0][1] <= spans[1][0], spans
    # The report shows one section per target (device kind), though both nodes are one host here.
    from quantbench.reports.tables import comparison_groups

    groups = comparison_groups(build_report([out / "results.jsonl"]))
    assert sorted(device.split(" · ")[0] for _, device in groups) == ["qb-test-a", "qb-test-b"]
    assert all(len(g) == 2 for g in groups.values())
    # The driver built the INT8 artifact once, in its own cache, for both nodes.
    built = list((fleet.root / "driver-cache" / "artifacts").glob("*/model.onnx"))
    assert len(built) == 1
    assert len({r["artifact_sha256"] for r in rows if r["variant"] == "int8-minmax"}) == 1  # same bytes on both

    again = run_sweep(cfg, out, log=logs.append)
    assert (again.ran, again.already) == (0, 4)
    assert len(rows_of(out, latest=False)) == 4


@pytest.mark.slow
def test_without_targets_every_device_kind_runs_once(fleet):
    cfg, out = sweep(fleet, "kinds", [], variants=["fp32"])
    cfg.run.cells_per_node = 2  # the config allows two cells on one node at once
    summary = run_sweep(cfg, out, log=lambda m: None)
    (row,) = rows_of(out)
    assert summary.ran == 1 and row["status"] == "ok", row["error"]
    assert row["fleet"]["demand"][SLOT] == 0.5
    # Both worker nodes are this machine: one kind, measured on one of them.
    assert row["fleet"]["target"] == cpu_kind(fingerprint()["cpu_model"])
    assert fleet.name_of(row["fleet"]["node_id"]) in ("a", "b")


@pytest.mark.slow
def test_a_node_lost_mid_sweep(fleet):
    """Node c dies while measuring a cell another node can take: that cell is measured on a.
    Node d dies after writing a row: the row stays; its other cells fail with the reason."""
    fleet.add("c", {"qb-test-shared": 1})
    fleet.add("d", {"qb-test-d": 1})
    fleet.cluster.wait_for_nodes()
    cfg, out = sweep(fleet, "lost", ["qb-test-shared", "qb-test-d"], batches="[1, 2]")
    killed: dict[str, Any] = {}
    stop = threading.Event()

    def kill_c_while_it_measures() -> None:
        deadline = time.monotonic() + 240
        while not stop.is_set() and time.monotonic() < deadline:
            running = list((fleet.caches["c"] / "fleet" / "cells").glob("*/*.spec.json"))
            if running:
                killed["c"] = running[0].name.split(".")[0]
                fleet.cluster.remove_node(fleet.nodes["c"], allow_graceful=False)
                return
            time.sleep(0.05)

    def on_row(row: dict[str, Any]) -> None:
        if fleet.name_of((row.get("fleet") or {}).get("node_id")) == "d" and "d" not in killed:
            killed["d"] = dict(row)
            fleet.cluster.remove_node(fleet.nodes["d"], allow_graceful=False)

    watcher = threading.Thread(target=kill_c_while_it_measures, daemon=True)
    watcher.start()
    logs: list[str] = []
    try:
        summary = run_sweep(cfg, out, log=logs.append, on_row=on_row)
    finally:
        stop.set()
        watcher.join()
    assert set(killed) == {"c", "d"}, f"the test could not kill both nodes in time: {killed}"
    lines = rows_of(out, latest=False)
    assert len(lines) == 8 == len({r["cell_id"] for r in lines})  # one row per cell, none written twice
    shared = [r for r in lines if r["fleet"]["target"] == "qb-test-shared"]
    on_d = [r for r in lines if r["fleet"]["target"] == "qb-test-d"]
    # Every cell node c held was measured again elsewhere; c wrote nothing.
    assert all(r["status"] == "ok" for r in shared), [r["error"] for r in shared]
    assert {fleet.name_of(r["fleet"]["node_id"]) for r in shared} == {"a"}
    assert killed["c"] in {r["cell_id"] for r in shared}
    # The row d wrote before it died is in the file, as written.
    first = next(r for r in on_d if r["cell_id"] == killed["d"]["cell_id"])
    assert first["status"] == "ok" and first["fleet"]["node_id"] == fleet.node_id("d")
    assert first["compute_p50_ms"] == killed["d"]["compute_p50_ms"]
    # Its other cells: no other node has qb-test-d, so they fail, saying why.
    rest = [r for r in on_d if r["cell_id"] != killed["d"]["cell_id"]]
    assert len(rest) == 3 and summary.failed == 3 and summary.ran == 5
    for r in rest:
        assert r["status"] == "failed" and r["fleet"]["lost"] is True
        assert "no alive node has qb-test-d" in r["error"] and "left the cluster" in r["error"]
        assert r.get("compute_p50_ms") is None and r["timing_valid"] is None  # nothing was timed
    assert any("left the cluster" in m for m in logs)


@pytest.mark.slow
def test_cli_runs_a_sweep_on_the_cluster_address(fleet, tmp_path):
    """`quantbench run CONFIG --ray ADDRESS` from another process: it connects, runs, and disconnects."""
    from tests.harness.conftest import run_cli

    cfg_path = tmp_path / "sweep.toml"
    out = tmp_path / "out"
    text = SWEEP.format(out=out, cache=fleet.root / "driver-cache", targets="[]", batches="[1]")
    cfg_path.write_text(text.replace('ray = "auto"\n', "").replace("targets = []\n", ""))
    res = run_cli("run", str(cfg_path), "--ray", fleet.cluster.address, "--targets", "qb-test-b",
                  "--variants", "fp32", cache=fleet.root / "driver-cache")
    assert res.returncode == 0, res.stderr + res.stdout
    assert "1 cell(s) measured, 0 failed" in res.stdout
    (row,) = rows_of(out)
    assert row["fleet"]["target"] == "qb-test-b" and row["fleet"]["node_id"] == fleet.node_id("b")


def test_cli_unreachable_cluster_is_one_line(tmp_path):
    import socket

    from tests.harness.conftest import run_cli

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = run_cli("run", "--ray", f"127.0.0.1:{port}", "-o", str(tmp_path / "out"), cache=tmp_path / "cache",
                  timeout=120)
    assert res.returncode == 2
    expected = (f"error: cannot connect to the Ray cluster at '127.0.0.1:{port}': nothing answers at "
                f"127.0.0.1:{port} (Connection refused) (is `ray start --head` running there?)")
    assert res.stderr.strip().splitlines() == [expected]
    assert not (tmp_path / "out" / "results.jsonl").exists()


class _NotRay:
    """A TCP server that accepts every connection, as a firewall or an egress proxy does: silent, or answering
    every HTTP/2 request with an HTTP error (":status 404", HPACK index 13) like the proxy of issue 16."""

    def __init__(self, answer: bytes | None) -> None:
        import socket

        self.answer = answer
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.port = self.server.getsockname()[1]
        self.conns: list = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.answer is not None:
                conn.recv(65536)
                conn.sendall(self.answer)

    def close(self) -> None:
        for c in self.conns:
            c.close()
        self.server.close()


HTTP_404 = (b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # SETTINGS, then HEADERS ":status 404", END_STREAM
            b"\x00\x00\x01\x01\x05\x00\x00\x00\x01\x8d")


@pytest.mark.parametrize("answer", [None, HTTP_404], ids=["silent", "http-error"])
def test_cli_an_address_that_accepts_but_is_not_ray_fails_in_one_line(tmp_path, answer):
    """ray.init would retry such an address for about 20 s, printing a warning per try."""
    from tests.harness.conftest import run_cli

    fake = _NotRay(answer)
    try:
        res = run_cli("run", "--ray", f"127.0.0.1:{fake.port}", "-o", str(tmp_path / "out"), cache=tmp_path / "cache",
                      timeout=120)
    finally:
        fake.close()
    assert res.returncode == 2
    why = ("nothing answers at 127.0.0.1:{p} within 3 s" if answer is None else
           "no Ray cluster answers at 127.0.0.1:{p} (an HTTP error, not a gRPC answer)").format(p=fake.port)
    assert res.stderr.strip().splitlines() == [
        f"error: cannot connect to the Ray cluster at '127.0.0.1:{fake.port}': {why} "
        "(is `ray start --head` running there?)"]


def test_the_probe_accepts_a_grpc_answer_and_gives_up_within_its_timeout(monkeypatch):
    """The probe's answers, and its bound: a connection that hangs costs at most PROBE_TIMEOUT_S (< 5 s)."""
    import socket

    from quantbench.harness.sweep.launch import ray_probe

    assert ray_probe.PROBE_TIMEOUT_S < 5
    ok = _NotRay(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00" + b"\x00\x00\x01\x01\x04\x00\x00\x00\x01\x88")
    try:
        assert ray_probe.unreachable("127.0.0.1", ok.port) == ""  # ":status 200": a gRPC server answered
    finally:
        ok.close()
    seen = {}

    def hang(address, timeout):
        seen["timeout"] = timeout
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", hang)
    assert ray_probe.unreachable("10.255.255.1", 6379) == "nothing answers at 10.255.255.1:6379 within 3 s"
    assert seen["timeout"] <= ray_probe.PROBE_TIMEOUT_S


@pytest.mark.slow
def test_a_hanging_cell_fails_alone_on_its_node(fleet, tmp_path):
    """A user ONNX model whose Loop runs practically forever at batch 1 (once at batch 64), shipped to
    node a: the batch-1 cell is killed at the timeout there; the batch-64 cell is measured."""
    from tests.harness.sweep.test_runner_resume import tiny_npz
    from tests.harness.sweep.test_runner_signals import HANG_TIMEOUT_S, RUN, loop_onnx

    out = tmp_path / "out"
    text = RUN.format(out=out, cache=fleet.root / "driver-cache", batches="[1, 64]", timeout_s=HANG_TIMEOUT_S,
                      model=loop_onnx(tmp_path / "loop.onnx"), data=tiny_npz(tmp_path / "d.npz"))
    cfg = parse_config(tomllib.loads(text.replace("[run]\n", '[run]\nray = "auto"\ntargets = ["qb-test-a"]\n')), "t")
    summary = run_sweep(cfg, out, log=lambda m: None)
    rows = {r["batch"]: r for r in rows_of(out)}
    assert (summary.ran, summary.failed) == (1, 1)
    assert rows[64]["status"] == "ok" and rows[64]["fleet"]["node_id"] == fleet.node_id("a")
    hung = rows[1]
    assert hung["status"] == "failed" and hung["error"].startswith(f"timed out after {HANG_TIMEOUT_S} s (log: ")
    assert hung["fleet"]["node_id"] == fleet.node_id("a")  # it ran (and was killed) there
    # The node's log came back next to the results; the error names both copies.
    driver_log = out / "cells" / hung["run_id"] / f"{hung['cell_id']}.log"
    node_log = fleet.caches["a"] / "fleet" / "cells" / hung["run_id"] / f"{hung['cell_id']}.log"
    assert f"(log: {driver_log}; on " in hung["error"] and str(node_log) in hung["error"]
    assert driver_log.read_text() == node_log.read_text()
    # The model travelled by content hash; the node ran its own copy.
    assert (fleet.caches["a"] / "fleet" / "files" / rows[64]["artifact_sha256"] / "loop.onnx").is_file()


@pytest.mark.slow
def test_a_sweep_here_and_on_the_cluster_says_the_same(fleet, tmp_path):
    """One plan for both launchers: the same tiny sweep run on this machine and on node b measures the same
    cells, and its reruns (unchanged, a timing setting changed, the model no longer preparable) keep or
    measure the same cells again with the same messages (less the fleet's own lines and target names).
    The unpreparable model (its data no longer readable) keeps its good rows, unchecked: a fleet sweep
    used to keep them without a word."""
    from tests.harness.sweep.test_runner_resume import RUN, tiny_npz, tiny_onnx

    model, data = tiny_onnx(tmp_path / "m.onnx"), tiny_npz(tmp_path / "d.npz")

    def run(where: str, min_iters: int = 3) -> tuple[Any, list[str]]:
        text = RUN.format(out=tmp_path / where, cache=fleet.root / "driver-cache", batches="[1, 2]", warmup=1,
                          min_iters=min_iters, io_batches=2)
        if where == "ray":
            text = text.replace("[run]\n", '[run]\nray = "auto"\ntargets = ["qb-test-b"]\n')
        text += f'[[models]]\nname = "{model}"\ndataset = "npz:{data}"\n[[variants]]\nname = "fp32"\n'
        logs: list[str] = []
        summary = run_sweep(parse_config(tomllib.loads(text), where), tmp_path / where, log=logs.append)
        said = [m.replace(str(tmp_path / where), "OUT").replace(" [qb-test-b]", "") for m in logs
                if not m.startswith(("node ", "fleet: "))]
        return (summary.ran, summary.failed, summary.skipped, summary.already, summary.remeasured), said

    run("warm")  # the model prepared once into the shared cache: both sweeps below find it there
    for change in ("first", "unchanged", "timing", "unpreparable"):
        if change == "unpreparable":
            data.write_bytes(b"not an npz file")
        min_iters = 4 if change in ("timing", "unpreparable") else 3
        here, on_cluster = run("local", min_iters), run("ray", min_iters)
        assert on_cluster == here, change
        counts, said = here
        assert counts == {"first": (2, 0, 0, 0, 0), "unchanged": (0, 0, 0, 2, 0), "timing": (2, 0, 0, 0, 2),
                          "unpreparable": (0, 0, 0, 2, 0)}[change], (change, said)
    assert any(m.startswith("warning: m/fp32: stored rows kept without checking them: ") for m in said), said
    measured = rows_of(tmp_path / "ray")
    assert len(measured) == 2 and all(r["fleet"]["target"] == "qb-test-b" for r in measured)
