"""The interleaved speedup points the right way, with an interval that excludes 1, on real models.

Three ONNX files of one model (the same input and output), differing only in how many 3×3
convolutions run: the FP32 model has 3, a prebuilt variant (``onnx = FILE``) 9 (about 3× the
work: slower) and another 1 (faster). A speedup is FP32 time / variant time, so the slower file must
read below 1 with its whole 95% interval below 1, the faster one above 1 (an inverted ratio fails).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quantbench.harness.config import parse_config
from quantbench.harness.results.store import read_rows
from quantbench.harness.sweep.runner import run_sweep
from tests.harness.sweep.test_runner_resume import tiny_npz

pytestmark = [pytest.mark.ort_cpu, pytest.mark.slow]  # a real sweep of 3 cells: ~25 s on a busy 2-core machine

SIDE, CH = 24, 32


def conv_stack(path: Path, convs: int) -> Path:
    """input (N, 1, SIDE, SIDE) → Conv 1→CH → ``convs`` × (Conv CH→CH 3×3 + Relu) → global pool → Gemm to 10."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from quantbench.common.onnx_save import with_lowest_ir_version

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((CH, 1, 3, 3)).astype(np.float32) * 0.3, "w0"),
             numpy_helper.from_array(rng.standard_normal((10, CH)).astype(np.float32), "wf")]
    nodes = [helper.make_node("Conv", ["input", "w0"], ["h0"], pads=[1, 1, 1, 1])]
    for i in range(convs):
        weights = rng.standard_normal((CH, CH, 3, 3)).astype(np.float32) * 0.05
        inits.append(numpy_helper.from_array(weights, f"w{i + 1}"))
        nodes += [helper.make_node("Conv", [f"h{i}", f"w{i + 1}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"h{i + 1}"])]
    nodes += [helper.make_node("GlobalAveragePool", [f"h{convs}"], ["g"]),
              helper.make_node("Flatten", ["g"], ["f"]),
              helper.make_node("Gemm", ["f", "wf"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, f"convs{convs}",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, SIDE, SIDE])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    onnx.save(with_lowest_ir_version(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])), path)
    return path


def test_slower_variant_reads_below_one_and_faster_above(tmp_path):
    fp32, slow, fast = (conv_stack(tmp_path / f"{name}.onnx", n) for name, n in (("fp32", 3), ("slow", 9), ("fast", 1)))
    data = tiny_npz(tmp_path / "d.npz", side=SIDE)
    cfg = parse_config({
        "run": {"output": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"), "runtimes": ["ort-cpu"],
                "batch_sizes": [8], "threads": 1, "eval_samples": 16, "warmup_iters": 2, "min_iters": 10,
                "min_time_s": 0.05, "max_time_s": 2.0, "io_batches": 1, "interleave_block_s": 0.02,
                "interleave_iters": 3, "interleave_max_rounds": 10, "noisy_retries": 0, "report": False},
        "models": [{"name": str(fp32), "dataset": f"npz:{data}"}],
        "variants": [{"name": "fp32", "precision": "fp32"},
                     {"name": "slow", "precision": "fp16", "onnx": str(slow)},
                     {"name": "fast", "precision": "fp16", "onnx": str(fast)}],
    }, "test")
    run_sweep(cfg, tmp_path / "out", log=lambda msg: None)
    rows = {r["variant"]: r for r in read_rows(tmp_path / "out" / "results.jsonl").rows}
    assert all(r["status"] == "ok" for r in rows.values()), [r.get("error") for r in rows.values()]
    slow_row, fast_row = rows["slow"], rows["fast"]
    assert slow_row["speedup_interleaved"] < 1 and slow_row["speedup_interleaved_ci95"][1] < 1
    assert fast_row["speedup_interleaved"] > 1 and fast_row["speedup_interleaved_ci95"][0] > 1
    for r in (slow_row, fast_row):
        lo, hi = r["speedup_interleaved_ci95"]
        assert lo <= r["speedup_interleaved"] <= hi and r["speedup_ci_level"] >= 0.95
        assert r["speedup_stop_reason"] in ("ci_target", "max_rounds", "max_time")
        assert 6 <= len(r["speedup_interleaved_rounds"]) <= 10
