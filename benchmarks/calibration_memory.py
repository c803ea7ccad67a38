"""Peak memory and speed of INT8 quantization (calibration included) per calibration method.

Runs quantbench's own quantization subprocess (the one every sweep uses) once per method on the
same model and calibration images, and prints the subprocess's peak RSS, wall time, images/s and
the time of each calibration pass, next to the machine's load average (a shared machine makes
images/s a lower bound). Exits 1 when a peak RSS exceeds --max-rss-mb.

    python benchmarks/calibration_memory.py resnet50 --data folder:/tmp/cifar10 --images 1000
    python benchmarks/calibration_memory.py model.onnx --data fashion-mnist --images 200 --methods entropy
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="registry name (e.g. resnet50, exported with random weights) or a .onnx file")
    ap.add_argument("--data", default="fashion-mnist",
                    help="calibration data spec: fashion-mnist, folder:DIR, idx:DIR, npz:FILE (default fashion-mnist)")
    ap.add_argument("--images", type=int, default=1000, help="calibration images (default 1000)")
    ap.add_argument("--methods", default="minmax,entropy,percentile", help="comma-separated calibration methods")
    ap.add_argument("--batch", type=int, default=32, help="calibration reader batch (calib_batch)")
    ap.add_argument("--resize", type=int, default=None, help="resize images to N x N (default: the model's own)")
    ap.add_argument("--max-rss-mb", type=float, default=1536.0, help="memory goal per process (default 1.5 GiB)")
    ap.add_argument("--min-images-per-s", type=float, default=4.0, help="speed goal (reported, not enforced)")
    ap.add_argument("--cache", type=Path, default=None, help="folder for the FP32 export (default: a temp folder)")
    ap.add_argument("--timeout-s", type=float, default=None, help="kill a quantization that runs longer")
    args = ap.parse_args(argv)

    from quantbench.exporters.artifacts import run_quantize_worker
    from quantbench.exporters.quantize import QuantSettings
    from quantbench.exporters.registry import resolve_model

    try:
        overrides = {} if args.model.endswith(".onnx") else {"weights": "random"}
        try:
            source = resolve_model(args.model, **overrides)
        except (TypeError, ValueError):
            source = resolve_model(args.model)
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        settings = {m: QuantSettings(calibration=m, calib_samples=args.images, calib_batch=args.batch) for m in methods}
    except ValueError as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    preprocess = dict(source.preprocess)
    if args.resize:
        preprocess["resize"] = [args.resize, args.resize]

    with tempfile.TemporaryDirectory(prefix="qb-calib-bench-") as tmpdir:
        cache = args.cache or Path(tmpdir) / "cache"
        t0 = time.perf_counter()
        # Export in a child so that torch never inflates this process (or the forks it makes).
        code = ("import sys; from quantbench.exporters.artifacts import ArtifactStore; "
                "from quantbench.exporters.registry import ModelSource; import json; "
                "print(ArtifactStore(sys.argv[1]).fp32(ModelSource.from_dict(json.loads(sys.argv[2]))).path)")
        proc = subprocess.run([sys.executable, "-c", code, str(cache), json.dumps(source.to_dict())],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            print(f"error: export failed: {err[-1] if err else proc.returncode}", file=sys.stderr)
            return 2
        fp32 = Path(proc.stdout.strip().splitlines()[-1])
        export_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"model {source.name}: {fp32} ({fp32.stat().st_size / 2**20:.0f} MB, ready in "
              f"{time.perf_counter() - t0:.0f} s, export peak RSS {export_mb:.0f} MB); data {args.data}; "
              f"{args.images} images; {os.cpu_count()} CPUs", flush=True)
        rows, worst = [], 0.0
        for method in methods:
            load0 = os.getloadavg()[0]
            try:
                meta = run_quantize_worker(fp32, Path(tmpdir) / method / "model.onnx", settings[method],
                                           args.data, preprocess, timeout_s=args.timeout_s)
            except ValueError as exc:
                print(f"{method}: error: {exc}", flush=True)
                rows.append({"method": method, "error": str(exc)})
                worst = float("inf")
                continue
            load1 = os.getloadavg()[0]
            ips = meta["calib_samples"] / meta["time_s"]
            row = {"method": method, "peak_rss_mb": meta["peak_rss_mb"], "time_s": meta["time_s"],
                   "images_per_s": round(ips, 2), "passes_s": meta.get("calibration", {}).get("pass_s"),
                   "load_avg_1m": [round(load0, 2), round(load1, 2)]}
            rows.append(row)
            worst = max(worst, meta["peak_rss_mb"])
            print(f"{method:<12} peak RSS {meta['peak_rss_mb']:7.0f} MB   {meta['time_s']:7.1f} s   "
                  f"{ips:6.2f} images/s   passes {row['passes_s']} s   load avg {load0:.1f} -> {load1:.1f}",
                  flush=True)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"largest quantization peak RSS {worst:.0f} MB; this process {own:.0f} MB")
    print(json.dumps({"model": source.name, "data": args.data, "images": args.images, "rows": rows}))
    slow = [r["method"] for r in rows if "images_per_s" in r and r["images_per_s"] < args.min_images_per_s]
    if slow:
        print(f"note: below {args.min_images_per_s:g} images/s: {', '.join(slow)} (shared machine: see load avg)")
    if max(worst, own) > args.max_rss_mb:
        print(f"FAIL: a process exceeded {args.max_rss_mb:.0f} MB")
        return 1
    print(f"OK: every process stayed under {args.max_rss_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
