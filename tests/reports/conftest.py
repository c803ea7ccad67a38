"""Rows for renderer tests.

``real_results`` comes from a real (small) sweep of the shipped CNN on ONNX Runtime CPU, run once per
session. Renderer-only tests also use ``make_row``: schema-valid rows whose numbers are made up,
used only to exercise rendering (escaping, size limits), never as results.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantbench.common.row import SCHEMA_VERSION


@pytest.fixture(scope="session")
def real_results(tmp_path_factory, shared_cache) -> Path:
    """results.jsonl from a real sweep: fp32 + int8 on ort-cpu, batch 1 and 8."""
    pytest.importorskip("onnxruntime")
    from tests.harness.conftest import run_cli, write_config
    from tests.harness.test_cli_run import VARIANTS

    out = tmp_path_factory.mktemp("real")
    cfg = write_config(out / "c.toml", out, VARIANTS, batches="[1, 8]", eval_samples=200)
    proc = run_cli("run", str(cfg), cache=shared_cache)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return out / "results.jsonl"


def make_row(i: int, model: str = "m", host: str = "h", device: str = "cpu", status: str = "ok",
             precision: str = "fp32", variant: str | None = None, n_raw: int = 200) -> dict:
    """A schema-valid (current schema) row of a host-memory runtime with made-up numbers, for renderer tests only."""
    raw = [1.0 + 0.01 * ((i * 7 + k) % 13) for k in range(n_raw)]
    row = {"schema_version": SCHEMA_VERSION, "cell_id": f"c{i}-{host}", "status": status,
           "error": "" if status == "ok" else "boom <b>x</b>", "model": model, "variant": variant or f"v{i}",
           "precision": precision, "runtime": "ort-cpu", "runtime_label": "ort-cpu", "device": device,
           "batch": 1,
           "variant_settings": {"calibration": "minmax", "per_channel": True} if precision == "int8" else {},
           "weights": "trained:x.pt", "size_bytes": 1000 + i, "top1": 0.9 - 0.001 * i, "agreement_top1": 0.99,
           "compute_p50_ms": 1.0 + 0.01 * i, "compute_p99_ms": 1.2, "compute_raw_ms": raw, "io_p50_ms": 0.1,
           "h2d_p50_ms": None, "d2h_p50_ms": None, "host_memory": True, "iterations": n_raw,
           "stop_reason": "min_iters_and_time", "timing_valid": True, "clock": "host-perf_counter_ns",
           "speedup_interleaved": None, "speedup_error": "", "accuracy_note": "",
           "throughput_ips": 1000.0, "exec_precision": "float",
           "int8_op_share": 0.0, "audit_warning": "", "env": {"host": host, "cpu_model": "cpu " + host,
           "cpu_flags": ["avx2"], "gpu": [], "os": "Linux", "python": "3.11", "versions": {"onnxruntime": "1"},
           "git_rev": "abc"}, "dataset": {"name": "d", "variant": "full"}, "eval_samples": 100}
    return row


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_v1_row(i: int, **over) -> dict:
    """A row as schema 1 wrote it: h2d/d2h timed as 0 on the CPU, no timing validity, no speedup_error."""
    row = make_row(i)
    for key in ("host_memory", "stop_reason", "timing_valid", "speedup_error", "accuracy_note"):
        del row[key]
    row.update(schema_version=1, h2d_p50_ms=0.0, d2h_p50_ms=0.0, **over)
    return row
