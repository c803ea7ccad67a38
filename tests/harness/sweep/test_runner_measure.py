"""The timed loop and the interleaved speedup on a real runtime (ONNX Runtime CPU, tiny models built here)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quantbench.harness.measure.cell import (
    CellSpec,
    MeasureSettings,
    _timed_loop,
    interleaved_speedup,
    io_scope,
    measure_cell,
)
from quantbench.runtimes import Artifact, create_runtime
from tests.harness.sweep.test_runner_resume import SIDE, tiny_npz, tiny_onnx

pytestmark = pytest.mark.ort_cpu


@pytest.fixture
def ort(tmp_path):
    rt = create_runtime("ort-cpu", "cpu", {"threads": 1})
    rt.activate(Artifact("onnx", "fp32", tiny_onnx(tmp_path / "m.onnx")), batch=2)
    yield rt
    rt.deactivate()


X = np.zeros((2, 1, SIDE, SIDE), np.float32)


@pytest.mark.parametrize("settings, reason, n, valid", [
    ({"min_iters": 7, "min_time_s": 0.0, "max_iters": 1000, "max_time_s": 60.0}, "min_iters_and_time", 7, True),
    ({"min_iters": 50, "min_time_s": 0.0, "max_iters": 4, "max_time_s": 60.0}, "max_iters", 4, False),
    ({"min_iters": 1000, "min_time_s": 0.0, "max_iters": 10**6, "max_time_s": 0.0}, "max_time", 1, False),
], ids=["minimums-met", "max-iters-first", "max-time-first"])
def test_stop_reason_and_timing_valid(ort, settings, reason, n, valid):
    row = _timed_loop(ort, X, MeasureSettings(warmup_iters=0, **settings))
    assert row["stop_reason"] == reason and row["iterations"] == n and row["timing_valid"] is valid
    assert len(row["compute_raw_ms"]) == n and len(row["e2e_raw_ms"]) == n
    assert row["compute_p99_ms"] is None  # fewer than 100 samples
    assert row["compute_p90_ms"] is None if n < 10 else row["compute_p90_ms"] is not None


def test_host_memory_runtime_has_no_transfer_times_but_still_stages_and_fetches(ort):
    calls = {"stage": 0, "fetch": 0}
    stage, fetch = ort.stage, ort.fetch
    ort.stage = lambda x: (calls.__setitem__("stage", calls["stage"] + 1), stage(x))[1]
    ort.fetch = lambda o: (calls.__setitem__("fetch", calls["fetch"] + 1), fetch(o))[1]
    row = _timed_loop(ort, X, MeasureSettings(warmup_iters=0, min_iters=5, min_time_s=0.0))
    assert ort.host_memory is True and row["host_memory"] is True
    assert all(row[f"{p}_{s}_ms"] is None for p in ("h2d", "d2h") for s in ("mean", "p50", "raw"))
    assert row["compute_p50_ms"] > 0 and calls == {"stage": 5, "fetch": 5}


def test_interleaved_rounds_alternate_abba(tmp_path, ort):
    reference = create_runtime("ort-cpu", "cpu", {"threads": 1})
    reference.activate(Artifact("onnx", "fp32", tiny_onnx(tmp_path / "r.onnx", seed=3)), batch=2)
    order: list[str] = []
    for name, rt in (("V", ort), ("R", reference)):
        infer = rt.infer
        rt.infer = lambda s, infer=infer, name=name: (order.append(name), infer(s))[1]
    try:
        out = interleaved_speedup(ort, reference, X, rounds=4, iters=3, min_block_s=0.0)
    finally:
        reference.deactivate()
    blocks = [order[3:][i] for i in range(0, 4 * 2 * 3, 3)]  # after 3 warm-up calls of the reference
    assert "".join(blocks) == "VRRVVRRV"
    assert len(out["speedup_interleaved_rounds"]) == 4 and out["speedup_interleaved"] > 0


def _spec(tmp_path: Path, data: str, interleave_with: dict | None = None, precision: str = "int8") -> CellSpec:
    model = tiny_onnx(tmp_path / "m.onnx")
    return CellSpec(
        cell_id="c", runtime="ort-cpu", device="cpu", batch=4, runtime_options={"threads": 1},
        artifact={"format": "onnx", "precision": precision, "path": str(model), "input_name": "input"},
        data={"dataset": data, "preprocess": {}, "eval_samples": 20, "seed": 0},
        measure={"warmup_iters": 1, "min_iters": 3, "min_time_s": 0.0, "io_batches": 2, "interleave_rounds": 2,
                 "interleave_max_rounds": 2, "interleave_iters": 2, "interleave_block_s": 0.0, "noisy_retries": 0},
        accuracy={"num_classes": 10, "top_k": True, "note": ""}, interleave_with=interleave_with)


def test_failed_interleave_keeps_the_main_measurement(tmp_path):
    broken = {"format": "onnx", "precision": "fp32", "path": str(tmp_path / "missing.onnx"), "input_name": "input"}
    row = measure_cell(_spec(tmp_path, f"npz:{tiny_npz(tmp_path / 'd.npz')}", interleave_with=broken))
    assert row["compute_p50_ms"] > 0 and row["top1"] is not None
    assert row["speedup_interleaved"] is None and row["speedup_interleaved_rounds"] is None
    assert row["speedup_error"].startswith("interleaved FP32 timing failed: ") and "\n" not in row["speedup_error"]


def test_interleave_against_fp32_and_the_fp32_reference_itself(tmp_path):
    fp32 = {"format": "onnx", "precision": "fp32", "path": str(tiny_onnx(tmp_path / "f.onnx", seed=2)),
            "input_name": "input"}
    data = f"npz:{tiny_npz(tmp_path / 'd.npz')}"
    row = measure_cell(_spec(tmp_path, data, interleave_with=fp32))
    assert row["speedup_interleaved"] > 0 and len(row["speedup_interleaved_rounds"]) == 2
    assert row["speedup_error"] == ""
    ref = measure_cell(_spec(tmp_path, data, precision="fp32"))
    assert ref["speedup_interleaved"] is None and ref["speedup_error"] == ""
    none = measure_cell(_spec(tmp_path, data))
    assert none["speedup_interleaved"] is None and "no FP32 artifact" in none["speedup_error"]


def test_io_scope_follows_where_the_images_live(tmp_path):
    PIL = pytest.importorskip("PIL.Image")
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for c in range(10):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(4):
            PIL.fromarray(rng.integers(0, 256, (SIDE, SIDE), dtype=np.uint8)).save(root / f"c{c}" / f"{i}.png")
    folder = measure_cell(_spec(tmp_path, f"folder:{root}", precision="fp32"))
    npz = measure_cell(_spec(tmp_path, f"npz:{tiny_npz(tmp_path / 'd.npz')}", precision="fp32"))
    assert folder["io_scope"] == "read+decode+preprocess" and npz["io_scope"] == "index+preprocess"
    # decoding PNG files costs more than indexing an array, measured in the same process
    assert folder["io_min_ms"] > npz["io_min_ms"]
    assert folder["measure_settings"]["io_batches"] == 2 and len(folder["io_raw_ms"]) == 2


def test_io_scope_of_splits():
    from quantbench.calibration_data import open_source

    assert io_scope(open_source("digits").evaluation) == "index+preprocess"
