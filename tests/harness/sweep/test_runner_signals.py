"""Workers never outlive the sweep, a hanging cell fails alone, and one output folder serves one run.

The hanging cell is real: an ONNX model whose Loop runs 1e11 / N^6 times for a batch of N (once
at the reference's batch of 64, practically forever at batch 1), run by ONNX Runtime CPU.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from quantbench.harness.config import parse_config
from quantbench.harness.results.store import read_rows
from quantbench.harness.sweep.runner import RunError, output_lock, run_sweep
from tests.harness.conftest import ROOT
from tests.harness.sweep.test_runner_resume import SIDE, tiny_npz

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

pytestmark = pytest.mark.ort_cpu

WORKER = "quantbench.harness.measure.worker"


def loop_onnx(path: Path, side: int = SIDE) -> Path:
    """Flatten + Gemm, plus a Loop of floor(1e11 / N^6) empty iterations whose result is added to the logits."""
    import onnx
    from onnx import TensorProto, helper

    from quantbench.common.onnx_save import with_lowest_ir_version

    w = np.random.default_rng(0).standard_normal((10, side * side)).astype(np.float32)
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1])])
    nodes = [
        helper.make_node("Shape", ["input"], ["shape"], end=1),
        helper.make_node("Mul", ["shape", "shape"], ["n2"]),
        helper.make_node("Mul", ["n2", "n2"], ["n4"]),
        helper.make_node("Mul", ["n4", "n2"], ["n6"]),
        helper.make_node("Div", ["big", "n6"], ["trips1"]),
        helper.make_node("Squeeze", ["trips1"], ["trips"]),
        helper.make_node("Loop", ["trips", "true", "zero"], ["v"], body=body),
        helper.make_node("Flatten", ["input"], ["f"]),
        helper.make_node("Gemm", ["f", "w"], ["g"], transB=1),
        helper.make_node("Add", ["g", "v"], ["logits"]),
    ]
    inits = [onnx.numpy_helper.from_array(w, "w"),
             onnx.numpy_helper.from_array(np.array([10**11], np.int64), "big"),
             onnx.numpy_helper.from_array(np.array(True), "true"),
             onnx.numpy_helper.from_array(np.zeros(1, np.float32), "zero")]
    graph = helper.make_graph(
        nodes, "loop", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, side, side])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    onnx.save(with_lowest_ir_version(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])), path)
    return path


RUN = """
[run]
output = "{out}"
cache_dir = "{cache}"
runtimes = ["ort-cpu"]
batch_sizes = {batches}
eval_samples = 40
warmup_iters = 1
min_iters = 3
min_time_s = 0.01
max_time_s = 2.0
io_batches = 2
interleave_rounds = 0
timeout_s = {timeout_s}
report = false

[[models]]
name = "{model}"
dataset = "npz:{data}"

[[variants]]
name = "fp32"
precision = "fp32"
"""


def _config(tmp_path: Path, cache: Path, batches: str, timeout_s: float = 600) -> tuple[Path, Path]:
    out = tmp_path / "out"
    text = RUN.format(out=out, cache=cache, batches=batches, timeout_s=timeout_s,
                      model=loop_onnx(tmp_path / "loop.onnx"), data=tiny_npz(tmp_path / "d.npz"))
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path, out


def _workers(sweep_pid: int) -> list[psutil.Process]:
    """Cell workers started by the sweep ``sweep_pid`` (run_contained names the parent in their environment)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if WORKER in (p.info.get("cmdline") or []) and p.environ().get("QUANTBENCH_PARENT_PID") == str(sweep_pid):
                found.append(p)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _start_sweep(cfg: Path, cache: Path) -> subprocess.Popen:
    env = dict(os.environ, QUANTBENCH_CACHE=str(cache),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.Popen([sys.executable, "-m", "quantbench.harness.cli", "run", str(cfg)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for_hanging_worker(proc: subprocess.Popen, results: Path, within_s: float = 240) -> psutil.Process:
    """The batch-64 row is written and the batch-1 worker is running (hanging in its Loop)."""
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        if results.exists() and results.read_text().count("\n") >= 1:
            workers = _workers(proc.pid)
            if workers:
                return workers[0]
        time.sleep(0.2)
    raise AssertionError("the hanging cell's worker never started")


def _cleanup(proc: subprocess.Popen, worker: psutil.Process | None) -> None:
    for p in ([worker] if worker is not None else []):
        if _alive(p):
            p.kill()
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=["term", "int", "kill"])
@pytest.mark.slow
def test_signal_to_sweep_leaves_no_worker_and_keeps_rows(tmp_path, shared_cache, sig):
    cfg, out = _config(tmp_path, shared_cache, batches="[64, 1]")
    proc, worker = _start_sweep(cfg, shared_cache), None
    try:
        worker = _wait_for_hanging_worker(proc, out / "results.jsonl")
        time.sleep(0.5)
        assert _alive(worker)
        os.kill(proc.pid, sig)  # the sweep alone, not its process group
        proc.wait(timeout=30)
        end = time.monotonic() + 5
        while _alive(worker) and time.monotonic() < end:
            time.sleep(0.1)
        assert not _alive(worker), "the worker outlived the sweep"
        if sig != signal.SIGKILL:
            _, err = proc.communicate()
            lines = [ln for ln in err.splitlines() if ln.strip()]
            assert proc.returncode != 0 and len(lines) == 1 and "interrupted" in lines[0], err
            # a true message: the one row this run measured, where it is
            assert lines[0] == (f"error: interrupted: the 1 row(s) measured in this run are kept in "
                                f"{out / 'results.jsonl'}; rerun to finish the remaining cells"), err
        rows = read_rows(out / "results.jsonl").rows
        assert [(r["batch"], r["status"]) for r in rows] == [(64, "ok")]
    finally:
        _cleanup(proc, worker)


# A hung cell is waited out for this long: the shortest timeout that still lets the healthy cells (process
# start, ONNX Runtime import, a few iterations) finish on two busy shared cores.
HANG_TIMEOUT_S = 8


@pytest.mark.slow
def test_hanging_cell_times_out_alone(tmp_path, shared_cache):
    cfg, out = _config(tmp_path, shared_cache, batches="[1, 64]", timeout_s=HANG_TIMEOUT_S)
    logs: list[str] = []
    summary = run_sweep(parse_config(tomllib.loads(cfg.read_text()), "test"), out, log=logs.append)
    rows = {r["batch"]: r for r in read_rows(out / "results.jsonl").rows}
    assert rows[1]["status"] == "failed" and rows[1]["error"].startswith(f"timed out after {HANG_TIMEOUT_S} s")
    assert rows[1]["stop_reason"] is None and rows[1]["timing_valid"] is None  # nothing was timed
    assert rows[64]["status"] == "ok" and summary.ran == 1 and summary.failed == 1
    log_file = Path(rows[1]["error"].split("(log: ")[1].rstrip(")"))
    assert log_file.parent.parent == out / "cells" and log_file.parent.name == summary.run_id


@pytest.mark.slow
def test_second_run_on_a_busy_output_folder_stops_at_once(tmp_path, shared_cache):
    cfg, out = _config(tmp_path, shared_cache, batches="[64]")
    out.mkdir()
    with output_lock(out):
        with pytest.raises(RunError, match=f"output directory {out} is in use by another quantbench run "
                                           rf"\(pid {os.getpid()}\)"):
            run_sweep(parse_config(tomllib.loads(cfg.read_text()), "test"), out)
        proc = _start_sweep(cfg, shared_cache)
        _, err = proc.communicate(timeout=120)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert proc.returncode != 0 and len(lines) == 1 and "is in use by another quantbench run" in lines[0], err
        assert not (out / "results.jsonl").exists()
    # released: the same folder works now
    summary = run_sweep(parse_config(tomllib.loads(cfg.read_text()), "test"), out)
    assert summary.ran == 1
