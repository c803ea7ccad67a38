"""Cross-check quantbench's OpenVINO compute timing against OpenVINO's own ``benchmark_app``.

In one run, interleaved over a few rounds (alternating which goes first, so drift in the load
from other processes hits both alike), the same ONNX model with the same compile properties
(PERFORMANCE_HINT=LATENCY, INFERENCE_NUM_THREADS, inference precision, static input shape,
synchronous inference) is timed by:

* the quantbench OpenVINO adapter in the harness's way: stage once, warm up, then
  ``perf_counter_ns`` around ``runtime.infer`` (the "compute" phase), median of the samples;
* ``benchmark_app -hint latency -api sync`` (threads through ``-load_config``, because its UI
  only takes ``-nthreads`` with ``-hint none``), its reported median latency.

The ratio of medians should be within 5% of 1. Exit status 0 when it is, 1 when not.

    python benchmarks/openvino_vs_benchmark_app.py --model /tmp/resnet50.onnx --threads 2 --precision f32
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from quantbench.runtimes import Artifact, create_runtime

TOLERANCE = 0.05


def input_shape(model: Path, batch: int) -> tuple[int, ...]:
    """The model's input shape with the batch axis set to ``batch``."""
    import onnx

    dims = onnx.load(str(model), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return (batch, *[int(d.dim_value) for d in dims[1:]])


class AdapterTimer:
    """The OpenVINO adapter, compiled once, timed the harness's way: stage once, time ``infer``."""

    def __init__(self, model: Path, batch: int, threads: int, precision: str) -> None:
        x = np.random.default_rng(0).standard_normal(input_shape(model, batch)).astype(np.float32)
        self.rt = create_runtime("openvino", "cpu", {"threads": threads, "hint": "latency", "precision": precision})
        self.rt.activate(Artifact("onnx", "fp32", model), batch=batch)
        self.clock = self.rt.clock()
        self.staged = self.rt.stage(x)
        for _ in range(10):  # warm-up, untimed
            self.rt.fetch(self.rt.infer(self.staged))
        self.ran = self.rt.execution_report().get("exec_precision", "?")

    def median_ms(self, seconds: float) -> float:
        """Median compute ms over ``seconds`` (at least 20 samples)."""
        samples: list[int] = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end or len(samples) < 20:
            _, ns = self.clock.time(self.rt.infer, self.staged)
            samples.append(ns)
        return statistics.median(samples) / 1e6


def benchmark_app_median(model: Path, batch: int, threads: int, precision: str, seconds: float) -> float:
    """Median latency ms that ``benchmark_app`` reports for the same settings."""
    exe = shutil.which("benchmark_app")
    if exe is None:
        raise SystemExit("benchmark_app not found: pip install .[openvino] (it ships with the openvino package)")
    shape = input_shape(model, batch)
    with tempfile.TemporaryDirectory(prefix="qb-bapp-") as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps({"CPU": {"INFERENCE_NUM_THREADS": str(threads)}}))
        cmd = [exe, "-m", str(model), "-d", "CPU", "-hint", "latency", "-api", "sync",
               "-load_config", str(config), "-shape", f"[{','.join(map(str, shape))}]",
               "-t", str(max(1, round(seconds))), "-report_type", "no_counters", "-report_folder", tmp,
               "-json_stats"]
        if precision != "default":
            cmd += ["-infer_precision", precision]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            raise SystemExit(f"benchmark_app failed: {lines[-1] if lines else proc.returncode}")
        match = re.search(r"Median:\s+([0-9.]+)\s*ms", proc.stdout)
        if match:
            return float(match.group(1))
        for report in Path(tmp).glob("*.json"):
            stats = json.loads(report.read_text()).get("execution_results", {})
            if "latency_median" in stats:
                return float(stats["latency_median"])
    raise SystemExit("could not find the median latency in benchmark_app's output")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, type=Path, help="ONNX file (fp32 or ORT QDQ int8)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="f32", choices=("f32", "bf16", "f16", "default"))
    ap.add_argument("--time", type=float, default=5.0, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if not args.model.is_file():
        raise SystemExit(f"model not found: {args.model}")
    adapter = AdapterTimer(args.model, args.batch, args.threads, args.precision)
    ours: list[float] = []
    theirs: list[float] = []
    try:
        for r in range(args.rounds):
            load = os.getloadavg()[0]
            if r % 2 == 0:
                ours.append(adapter.median_ms(args.time))
            theirs.append(benchmark_app_median(args.model, args.batch, args.threads, args.precision, args.time))
            if r % 2 == 1:
                ours.append(adapter.median_ms(args.time))
            print(f"round {r + 1}: adapter {ours[-1]:.3f} ms, benchmark_app {theirs[-1]:.3f} ms, "
                  f"ratio {ours[-1] / theirs[-1]:.3f}, load avg {load:.2f}", flush=True)
    finally:
        adapter.rt.deactivate()
    ratio = statistics.median(ours) / statistics.median(theirs)
    paired = statistics.median(o / t for o, t in zip(ours, theirs, strict=True))
    best = min(ours) / min(theirs)
    # Other tenants of this machine switch it between fast and slow phases for seconds at a time;
    # the median of per-round (adjacent) ratios cancels that best, so the verdict uses it.
    verdict = "OK" if abs(paired - 1) <= TOLERANCE else f"OUTSIDE {TOLERANCE:.0%}"
    print(f"{args.model.name} batch {args.batch} threads {args.threads} precision {args.precision} "
          f"(ran {adapter.ran}): adapter median {statistics.median(ours):.3f} ms, benchmark_app median "
          f"{statistics.median(theirs):.3f} ms; ratio of medians {ratio:.3f}, median paired ratio {paired:.3f}, "
          f"ratio of best rounds {best:.3f} ({verdict})")
    return 0 if verdict == "OK" else 1


if __name__ == "__main__":
    sys.exit(main())
