"""End to end: the CLI on the shipped Fashion-MNIST CNN with real data and ONNX Runtime CPU."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from quantbench.harness.results.store import read_rows
from tests.harness.conftest import ROOT, run_cli, write_config

VARIANTS = """
[[variants]]
name = "fp32"
precision = "fp32"

[[variants]]
name = "int8-minmax"
calibration = "minmax"
calib_samples = 64
"""

pytestmark = pytest.mark.ort_cpu


@pytest.mark.slow
def test_run_prints_table_and_writes_complete_rows(tmp_path, shared_cache):
    cfg = write_config(tmp_path / "c.toml", tmp_path / "out", VARIANTS)
    proc = run_cli("run", str(cfg), cache=shared_cache)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "quantbench results" in proc.stdout and "int8-minmax" in proc.stdout
    rows = read_rows(tmp_path / "out" / "results.jsonl").rows
    env = rows[0]["env"]  # the verdict names the machine, as the report does
    heading = f"fashion_cnn on {env['host']} · {env['cpu_model']} (cpu), batch 1 (accuracy budget 1 point)"
    assert "Verdict" in proc.stdout and " ".join(heading.split()) in " ".join(proc.stdout.split()), proc.stdout
    ok = {r["variant"]: r for r in rows if r["status"] == "ok"}
    assert set(ok) == {"fp32", "int8-minmax"}
    fp32, int8 = ok["fp32"], ok["int8-minmax"]
    for r in (fp32, int8):
        assert r["eval_samples"] == 200
        assert 0.8 < r["top1"] <= 1.0  # the shipped CNN is trained: ~90% on Fashion-MNIST
        assert r["compute_p50_ms"] > 0 and len(r["compute_raw_ms"]) == r["iterations"] >= 10
        assert r["io_p50_ms"] > 0 and r["e2e_p50_ms"] >= r["compute_p50_ms"] * 0.5
        assert r["env"]["cpu_model"] and r["env"]["versions"]["onnxruntime"]
        assert r["runtime_settings"]["threads"]
    assert fp32["agreement_top1"] == 1.0 and fp32["max_abs_err"] < 1e-3
    assert int8["agreement_top1"] > 0.95
    assert abs(int8["top1"] - fp32["top1"]) < 0.02
    # paired with FP32 on the same 200 images: the discordant counts make the difference exactly
    assert int8["delta_top1"] == pytest.approx((int8["variant_only_correct"] - int8["fp32_only_correct"]) / 200)
    assert int8["delta_top1_ci95"][0] <= int8["delta_top1"] <= int8["delta_top1_ci95"][1]
    assert fp32["delta_top1"] == 0 and fp32["delta_top1_p"] == 1.0 and fp32["fp32_only_correct"] == 0
    assert int8["top1_ci95"][0] < int8["top1"] < int8["top1_ci95"][1]
    assert int8["size_bytes"] < 0.3 * fp32["size_bytes"]
    assert int8["exec_precision"] in ("int8", "mixed") and int8["int8_op_share"] > 0.5
    assert 6 <= len(int8["speedup_interleaved_rounds"]) <= 20 and int8["speedup_interleaved"] > 0  # adaptive rounds
    lo, hi = int8["speedup_interleaved_ci95"]
    assert lo <= int8["speedup_interleaved"] <= hi and int8["speedup_ci_level"] >= 0.95
    assert int8["speedup_error"] == ""
    assert fp32["speedup_interleaved"] is None and fp32["speedup_error"] == ""  # fp32 is the reference
    assert fp32["exec_precision"] == "fp32"
    for r in (fp32, int8):
        assert r["schema_version"] == 3 and r["fingerprint"] and set(r["fingerprint_parts"]) >= {"timing", "data"}
        assert r["stop_reason"] in ("min_iters_and_time", "max_iters", "max_time")
        assert r["timing_valid"] is (r["iterations"] >= 10)
        assert r["host_memory"] is True and r["h2d_p50_ms"] is None and r["d2h_raw_ms"] is None
        assert r["io_scope"] in ("index+preprocess", "read+decode+preprocess")
        assert r["measure_settings"]["min_iters"] == 10
        # 10+ iterations but p99 needs 100 samples: null rather than the maximum in disguise
        assert (r["compute_p99_ms"] is None) is (r["iterations"] < 100)
    assert not list((tmp_path / "out" / "cells").glob("*.json")), "worker files live in cells/<run_id>/"
    assert len({p.name for p in (tmp_path / "out" / "cells").iterdir()}) == 1

    again = run_cli("run", str(cfg), cache=shared_cache)
    assert again.returncode == 0
    assert "2 cell(s) already in" in again.stdout
    assert len(read_rows(tmp_path / "out" / "results.jsonl", latest_per_cell=False).rows) == 2


@pytest.mark.slow
def test_killed_sweep_resumes_without_duplicates_or_losses(tmp_path, shared_cache):
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.toml", out, VARIANTS, batches="[1, 2, 4]", eval_samples=100)
    env = dict(os.environ, QUANTBENCH_CACHE=str(shared_cache), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "quantbench.harness.cli", "run", str(cfg)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    results = out / "results.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:
        if results.exists() and results.read_text().count("\n") >= 2:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # parent and the running worker, mid-sweep
    proc.wait()
    before = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    assert 2 <= len(before) < 6, "the kill should land mid-sweep"

    proc2 = run_cli("run", str(cfg), cache=shared_cache)
    assert proc2.returncode == 0, proc2.stderr
    rows = read_rows(results, latest_per_cell=False).rows
    ids = [r["cell_id"] for r in rows]
    assert len(ids) == 6 and len(set(ids)) == 6
    assert rows[: len(before)] == before  # nothing already written was touched
    assert all(r["status"] == "ok" for r in rows)
