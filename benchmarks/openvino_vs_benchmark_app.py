"""Cross-check the harness's OpenVINO compute timing against OpenVINO's own ``benchmark_app``.

In one run, interleaved over several rounds, the same ONNX model with the same settings (latency
hint, thread count, inference precision, static shape, synchronous API) is timed by:
  * quantbench's OpenVINO adapter inside the harness's timing loop (compute phase median), and
  * ``benchmark_app -api sync -hint none -nstreams 1 -nthreads N`` (its reported median latency),
then the ratio of medians is printed. The harness should be within 5% of benchmark_app.

    python benchmarks/openvino_vs_benchmark_app.py --model resnet50.onnx --threads 2 --precision f32
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.measure import MeasureSettings, _timed_loop  # noqa: E402
from runtimes import Artifact, create_runtime  # noqa: E402


def harness_median(model: Path, batch: int, threads: int, precision: str, seconds: float) -> float:
    """Median compute ms measured by the harness's own timing loop."""
    shape = _input_shape(model, batch)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    with create_runtime("openvino", "cpu", {"threads": threads, "hint": "latency", "precision": precision}) as rt:
        rt.activate(Artifact("onnx", "fp32", model), batch=batch)
        row = _timed_loop(rt, x, MeasureSettings(warmup_iters=10, min_iters=20, min_time_s=seconds,
                                                 max_time_s=seconds * 3))
    return float(row["compute_p50_ms"])


def benchmark_app_median(model: Path, batch: int, threads: int, precision: str, seconds: float) -> float:
    """Median latency ms reported by benchmark_app (sync API, latency hint)."""
    exe = shutil.which("benchmark_app")
    if exe is None:
        raise SystemExit("benchmark_app not found: pip install .[openvino]")
    shape = _input_shape(model, batch)
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp)
        # benchmark_app only takes -nthreads with -hint none; one stream is what the latency hint picks.
        cmd = [exe, "-m", str(model), "-d", "CPU", "-api", "sync", "-hint", "none", "-nstreams", "1",
               "-nthreads", str(threads),
               "-t", str(int(max(1, seconds))), "-shape", f"[{','.join(map(str, shape))}]",
               "-report_type", "no_counters", "-report_folder", str(stats), "-json_stats"]
        if precision != "default":
            cmd += ["-infer_precision", precision]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"benchmark_app failed: {(out.stderr or out.stdout).strip().splitlines()[-1]}")
        for line in out.stdout.splitlines():
            if "Median:" in line and "ms" in line:
                return float(line.split("Median:")[1].split("ms")[0])
        report = json.loads(next(stats.glob("*.json")).read_text())
        return float(report["execution_results"]["latency_median"])


def _input_shape(model: Path, batch: int) -> tuple[int, ...]:
    from exporters.onnx_info import onnx_input_info

    _, dims, _ = onnx_input_info(model)
    return (batch, *[int(d) for d in dims])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, type=Path, help="ONNX file (fp32 or QDQ int8)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="f32", help="f32, bf16, f16 or default")
    ap.add_argument("--time", type=float, default=5.0, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    ours, theirs = [], []
    for r in range(args.rounds):  # interleaved, so drift in machine load hits both alike
        ours.append(harness_median(args.model, args.batch, args.threads, args.precision, args.time))
        theirs.append(benchmark_app_median(args.model, args.batch, args.threads, args.precision, args.time))
        print(f"round {r + 1}: harness {ours[-1]:.3f} ms, benchmark_app {theirs[-1]:.3f} ms")
    h, b = statistics.median(ours), statistics.median(theirs)
    ratio = h / b
    verdict = "OK" if abs(ratio - 1) <= 0.05 else "OUTSIDE 5%"
    print(f"{args.model.name}: harness median {h:.3f} ms, benchmark_app median {b:.3f} ms, ratio {ratio:.3f} ({verdict})")
    return 0 if verdict == "OK" else 1


if __name__ == "__main__":
    sys.exit(main())
