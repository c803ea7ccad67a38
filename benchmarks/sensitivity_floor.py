"""Sensitivity scans against their floor: ``quantbench sensitivity`` per scan mode, with peak memory.

Runs the real command (``--top 0``: the scan alone) for each ``--scans`` mode on one model and prints
the summary row's scan time, its floor (the FP32 forward passes the scan needs over the SQNR images,
timed in the scan's own worker), their ratio, the calibration's ratio, the whole command's wall time,
and the peak RSS of each process kind (sampled as in ``calibration_memory.py``), next to the load average.

    python benchmarks/sensitivity_floor.py resnet50 --data folder:/tmp/cifar10 --resize 224 --sqnr-samples 100
    python benchmarks/sensitivity_floor.py cifar10_cnn --data folder:/tmp/cifar10 --scans local,full

``--compare K`` (an ``.onnx`` file) instead runs, in this one process, K nodes spread over the model's
candidates two ways, node by node in turn: one ``quantize_static`` file per per-node model (the scan before
``node_models.py``) and the in-memory models the scan now uses; it prints each way's time, floor (two FP32
passes per node, the pass timed here) and ratio, what the time went to, and whether the SQNRs are equal:

    python benchmarks/sensitivity_floor.py /tmp/resnet50.onnx --data folder:/tmp/cifar10 --resize 224 --compare 6
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibration_memory import KINDS, TreeSampler

from quantbench.reports.console_sensitivity import ratio_interval

KINDS.setdefault("quantbench.harness.studies.sensitivity_worker", "scan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="resnet50", help="registry name (random weights) or a .onnx file")
    ap.add_argument("--data", default="fashion-mnist", help="data spec (default fashion-mnist)")
    ap.add_argument("--resize", type=int, default=None, help="resize images to N x N")
    ap.add_argument("--scans", default="local,full", help="comma-separated scan modes (default local,full)")
    ap.add_argument("--sqnr-samples", type=int, default=100, help="SQNR images (default 100)")
    ap.add_argument("--calib-samples", type=int, default=64, help="calibration images (default 64)")
    ap.add_argument("--calibration", default="minmax", help="calibration method (default minmax)")
    ap.add_argument("--threads", type=int, default=0, help="run.threads (0: ONNX Runtime's default)")
    ap.add_argument("--timeout-s", type=float, default=None, help="kill a scan that takes longer")
    ap.add_argument("--cache-dir", default=None, help="export cache to reuse across runs (default: a fresh one)")
    ap.add_argument("--compare", type=int, default=0, metavar="K",
                    help="in one process: K nodes built by quantize_static files vs in memory (an .onnx model)")
    ap.add_argument("--batch", type=int, default=32, help="SQNR batch of --compare (default 32, as the scan)")
    args = ap.parse_args(argv)
    if args.compare:
        if not args.model.endswith(".onnx"):
            ap.error("--compare needs an .onnx file (export a registry model once with quantbench export)")
        from sensitivity_compare import compare

        return compare(args)
    model = str(Path(args.model).absolute()) if args.model.endswith(".onnx") else args.model
    weights = "" if args.model.endswith(".onnx") else 'weights = "random"\n'
    pre = f"preprocess = {{ resize = [{args.resize}, {args.resize}] }}\n" if args.resize else ""
    print(f"{args.model}: {args.sqnr_samples} SQNR images from {args.data}; {os.cpu_count()} CPUs; load average "
          f"{os.getloadavg()[0]:.1f}; {time.strftime('%Y-%m-%d %H:%M %Z')}", flush=True)
    out_rows = []
    with tempfile.TemporaryDirectory(prefix="qb-sens-bench-") as tmpdir:
        work = Path(tmpdir)
        for scan in [s.strip() for s in args.scans.split(",") if s.strip()]:
            cfg = work / f"{scan}.toml"
            cache = args.cache_dir or work / "cache"
            cfg.write_text(f'[run]\noutput = "{work / scan}"\ncache_dir = "{cache}"\nthreads = {args.threads}\n'
                           f"report = false\neval_samples = {args.sqnr_samples}\n\n"
                           f'[[models]]\nname = "{model}"\n{weights}dataset = "{args.data}"\n{pre}\n'
                           f'[[variants]]\nname = "int8"\ncalibration = "{args.calibration}"\n'
                           f"calib_samples = {args.calib_samples}\n")
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            with open(work / f"{scan}.log", "w") as log:
                proc = subprocess.Popen([sys.executable, "-m", "quantbench.harness.cli", "sensitivity", str(cfg),
                                         "--scan", scan, "--top", "0", "--sqnr-samples", str(args.sqnr_samples),
                                         "--no-report"], stdout=log, stderr=subprocess.STDOUT)
                sampler = TreeSampler(proc.pid)
                sampler.start()
                try:
                    proc.wait(timeout=args.timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                sampler.done.set()
                sampler.join()
            wall = time.perf_counter() - t0
            rows_path = work / scan / "sensitivity.jsonl"
            rows = [json.loads(line) for line in rows_path.read_text().splitlines()] if rows_path.exists() else []
            s = next((r for r in rows if r.get("kind") == "sensitivity_summary" and r.get("status") == "ok"), None)
            peaks = {k: round(v) for k, v in sampler.peaks.items()}
            if s is None:
                tail = [ln for ln in (work / f"{scan}.log").read_text(errors="replace").splitlines() if ln.strip()][-3:]
                print(f"{scan:<6} error: {' | '.join(tail)}", flush=True)
                out_rows.append({"scan": scan, "error": tail, "peak_rss_mib": peaks})
                continue
            # the per-node models' own passes (node rows' infer_seconds); the rest of a full scan: building, sessions
            infer = sum(r.get("infer_seconds") or 0.0 for r in rows if r.get("kind") == "sensitivity")
            row = {"scan": scan, "nodes": s.get("nodes"), "scan_time_s": s.get("scan_time_s"),
                   "node_passes_s": round(infer, 1) if infer else None,
                   "scan_floor_s": s.get("scan_floor_s"), "scan_time_ratio": s.get("scan_time_ratio"),
                   "scan_time_ratio_ci95": s.get("scan_time_ratio_ci95"), "scan_lanes": s.get("scan_lanes"),
                   "calib_time_ratio": s.get("calib_time_ratio"),
                   "wall_s": round(wall, 1), "peak_rss_mib": peaks,
                   "load_avg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)]}
            out_rows.append(row)
            print(f"{scan:<6} {row['nodes']} nodes   scan {row['scan_time_s']:.1f} s   floor "
                  f"{row['scan_floor_s']:.1f} s   ratio {row['scan_time_ratio']:.2f}{ratio_interval(row)}   "
                  f"lanes {row['scan_lanes']}   "
                  f"calibration ratio {row['calib_time_ratio']}   "
                  + (f"per-node models' passes {infer:.1f} s   " if infer else "") + "command "
                  f"{wall:.0f} s   load {load0:.1f} -> {os.getloadavg()[0]:.1f}\n{'':<6} peak RSS MiB: "
                  + "  ".join(f"{k} {v}" for k, v in peaks.items()), flush=True)
    print(json.dumps({"model": args.model, "data": args.data, "sqnr_samples": args.sqnr_samples, "rows": out_rows}))
    return 0 if all("error" not in r for r in out_rows) else 1


if __name__ == "__main__":
    sys.exit(main())
