"""Calibration speed against its floor, and the peak memory of every process kind of a sweep.

Runs a whole ``quantbench run`` per calibration method (export, preparation, quantization with its
calibration, one measured cell: the processes a user waits on), on the same model and calibration
images, while sampling every process of the run's tree (``VmHWM``, the kernel's peak resident
memory of each process, read every 0.2 s). Prints per method: images/s of calibration, its floor
(the FP32 forward time of its passes, measured interleaved in the quantization process), the
ratio, the pass times and the peak RSS of each process kind (sweep, export, preparation,
quantization, cells), next to the load average (a shared machine slows both calibration and its
floor; the ratio, measured in one process, still holds). The first method runs on an empty cache,
so the export and the FP32 reference are measured there; later methods reuse them. Exits 1 when a
process exceeds ``--max-rss-mib``.

    python benchmarks/calibration_memory.py resnet50 --data folder:/tmp/cifar10 --images 1000
    python benchmarks/calibration_memory.py fashion_cnn --data fashion-mnist --images 200 --methods minmax
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from quantbench.common.row_file import read_rows

KINDS = {"quantbench.harness.sweep.export_worker": "export", "quantbench.harness.sweep.prepare_worker": "preparation",
         "quantbench.exporters.quantize_worker": "quantization", "quantbench.harness.measure.worker": "cell"}
ORDER = ["sweep", "export", "preparation", "quantization", "cell", "other"]


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def _kind(pid: int, root: int) -> str:
    if pid == root:
        return "sweep"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "other"
    args = [a.decode(errors="replace") for a in cmd]
    return next((KINDS[a] for a in args if a in KINDS), "other")


def _hwm_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class TreeSampler(threading.Thread):
    """Largest VmHWM per process kind over the whole tree under ``root``, sampled every ``interval_s``."""

    def __init__(self, root: int, interval_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.root, self.interval_s = root, interval_s
        self.peaks: dict[str, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            stack, seen = [self.root], set()
            while stack:
                pid = stack.pop()
                if pid in seen:
                    continue
                seen.add(pid)
                stack += _children(pid)
                hwm = _hwm_mib(pid)
                if hwm is not None:
                    kind = _kind(pid, self.root)
                    self.peaks[kind] = max(self.peaks.get(kind, 0.0), hwm)
            self.done.wait(self.interval_s)


def _config(args: argparse.Namespace, method: str, out: Path, cache: Path, run: int = 0) -> str:
    """The run's config; repeat ``run`` calibrates on its own images (``calib_seed``), so nothing is reused.
    ``method``: a calibration method, or ``method:graph`` to set ``calib_graph`` too."""
    name, _, graph = method.partition(":")
    model = str(Path(args.model).absolute()) if args.model.endswith(".onnx") else args.model
    weights = "" if args.model.endswith(".onnx") else 'weights = "random"\n'
    pre = f"preprocess = {{ resize = [{args.resize}, {args.resize}] }}\n" if args.resize else ""
    return (f'[run]\noutput = "{out}"\ncache_dir = "{cache}"\nruntimes = ["ort-cpu"]\nbatch_sizes = [1]\n'
            f"eval_samples = {args.eval_samples}\nwarmup_iters = 2\nmin_iters = 10\nmin_time_s = 0.5\n"
            f"max_time_s = 10.0\nreport = false\nthreads = {args.threads}\n\n"
            f'[[models]]\nname = "{model}"\n{weights}dataset = "{args.data}"\n{pre}\n'
            f'[[variants]]\nname = "int8-{name}"\ncalibration = "{name}"\ncalib_samples = {args.images}\n'
            f"calib_batch = {args.batch}\ncalib_seed = {run}\n" + (f'calib_graph = "{graph}"\n' if graph else ""))


def run_method(args: argparse.Namespace, method: str, work: Path, cache: Path, run: int = 0) -> dict[str, Any]:
    """Repeat ``run`` of ``method`` as one ``quantbench run``; returns its figures (or ``error``)."""
    out = work / f"{method}-{run}"
    cfg = work / f"{method}-{run}.toml"
    cfg.write_text(_config(args, method, out, cache, run))
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    log = work / f"{method}-{run}.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "quantbench.harness.cli", "run", str(cfg)], stdout=fh,
                                stderr=subprocess.STDOUT)
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
    row: dict[str, Any] = {"method": method, "wall_s": round(wall, 1), "peak_rss_mib": {
        k: round(v) for k, v in sorted(sampler.peaks.items(), key=lambda kv: ORDER.index(kv[0]))},
        "load_avg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)]}
    rows = read_rows(out / "results.jsonl").rows if (out / "results.jsonl").exists() else []
    int8 = [r for r in rows if r.get("precision") == "int8"]
    if not int8 or not int8[0].get("artifact_path"):
        tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-3:]
        row["error"] = (int8[0].get("error") if int8 else None) or " | ".join(tail) or f"exit {proc.returncode}"
        return row
    r = int8[0]
    if r.get("status") != "ok":  # the cell failed after the build: the calibration's figures still count
        row["cell_error"] = r.get("error")
    build = Path(r["artifact_path"]).with_name("build.json")
    stats = json.loads(build.read_text()).get("calibration", {}) if build.exists() else {}
    samples = stats.get("samples") or args.images
    row.update({"images": samples, "quant_time_s": r.get("quant_time_s"), "calib_time_s": r.get("calib_time_s"),
                "calib_floor_s": r.get("calib_floor_s"), "calib_time_ratio": r.get("calib_time_ratio"),
                "calib_time_ratio_ci95": r.get("calib_time_ratio_ci95"),
                "passes_s": stats.get("pass_s"), "floor_probes": stats.get("floor_probes"),
                "count_s": stats.get("count_s"),
                "images_per_s": round(samples / r["calib_time_s"], 2) if r.get("calib_time_s") else None})
    return row


def _ci(row: dict[str, Any]) -> str:
    """The ratio's 95% interval (from the floor's probe runs), when the row has one."""
    ci = row.get("calib_time_ratio_ci95")
    return f" [{ci[0]:.2f}-{ci[1]:.2f}]" if ci else ""


def _counting(row: dict[str, Any]) -> str:
    """Pass 2's bin counting time (worker threads, beside ORT's runs where cores are free: then it overlaps the pass's
    time; after each forward elsewhere)."""
    return f" (pass 2 counting {row['count_s']:.1f} s)" if row.get("count_s") is not None else ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="resnet50",
                    help="registry name (exported with random weights) or a .onnx file (default resnet50)")
    ap.add_argument("--data", default="fashion-mnist",
                    help="data spec: fashion-mnist, folder:DIR, idx:DIR, npz:FILE (default fashion-mnist)")
    ap.add_argument("--images", type=int, default=1000, help="calibration images (default 1000)")
    ap.add_argument("--methods", default="minmax,entropy,percentile,mse",
                    help="comma-separated calibration methods, each optionally with :GRAPH (calib_graph), e.g. "
                    "minmax:unoptimised")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs of each method in turn, each on its own images (calib_seed = run; default 1)")
    ap.add_argument("--batch", type=int, default=32, help="calibration reader batch (calib_batch)")
    ap.add_argument("--resize", type=int, default=None,
                    help="resize images to N x N (e.g. 224 for CIFAR-10 into ResNet-50)")
    ap.add_argument("--eval-samples", type=int, default=20, help="images the cell evaluates (default 20)")
    ap.add_argument("--threads", type=int, default=0, help="run.threads (0: ONNX Runtime's default)")
    ap.add_argument("--max-rss-mib", type=float, default=1024.0, help="memory goal per process (default 1 GiB)")
    ap.add_argument("--cache", type=Path, default=None, help="cache folder (default: a fresh temp folder, so the "
                    "first method measures the export)")
    ap.add_argument("--timeout-s", type=float, default=None, help="kill a run that takes longer")
    args = ap.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    from quantbench.exporters.calibrate import GRAPHS
    from quantbench.exporters.quantize import METHODS

    bad = [m for m in methods if m.partition(":")[0] not in METHODS or m.partition(":")[2] not in ("", *GRAPHS)]
    if bad or args.images < 1 or args.repeat < 1:
        print(f"error: unknown method(s) {', '.join(bad)} (known: {', '.join(METHODS)}, each optionally :"
              f"{' or :'.join(GRAPHS)})" if bad
              else "error: --images and --repeat must be >= 1", file=sys.stderr)
        return 2
    print(f"{args.model}: {args.images} calibration images from {args.data}; {os.cpu_count()} CPUs; load average "
          f"{os.getloadavg()[0]:.1f}; {time.strftime('%Y-%m-%d %H:%M %Z')}", flush=True)
    rows, worst = [], 0.0
    with tempfile.TemporaryDirectory(prefix="qb-calib-bench-") as tmpdir:
        work = Path(tmpdir)
        cache = args.cache or work / "cache"
        for run, method in [(k, m) for k in range(args.repeat) for m in methods]:
            row = run_method(args, method, work, cache, run)
            rows.append(row)
            peaks = "  ".join(f"{k} {v:.0f}" for k, v in row["peak_rss_mib"].items())
            worst = max([worst, *row["peak_rss_mib"].values()])
            if "error" in row:
                print(f"{method:<17} error: {row['error']}   peak RSS MiB: {peaks}", flush=True)
                continue
            print(f"{method:<17} {row['images_per_s']:6.2f} images/s   calibration {row['calib_time_s']:7.1f} s   "
                  f"floor {row['calib_floor_s']:6.1f} s   ratio {row['calib_time_ratio']:5.2f}{_ci(row)}   passes "
                  f"{row['passes_s']} s{_counting(row)}   quantization {row['quant_time_s']:.1f} s   "
                  f"run {row['wall_s']:.0f} s   "
                  f"load {row['load_avg_1m'][0]:.1f} -> {row['load_avg_1m'][1]:.1f}", flush=True)
            print(f"{'':<17} peak RSS MiB: {peaks}", flush=True)
            if row.get("cell_error"):
                print(f"{'':<17} (its cell failed: {row['cell_error']})", flush=True)
    if args.repeat > 1:
        for method in methods:
            ratios = sorted(r["calib_time_ratio"] for r in rows if r["method"] == method and r.get("calib_time_ratio"))
            if ratios:
                print(f"{method:<20} calibration / floor over {len(ratios)} runs: median "
                      f"{ratios[len(ratios) // 2]:.2f}, range {ratios[0]:.2f}-{ratios[-1]:.2f}", flush=True)
    print(json.dumps({"model": args.model, "data": args.data, "images": args.images, "rows": rows}))
    if worst > args.max_rss_mib:
        print(f"FAIL: a process peaked at {worst:.0f} MiB (goal {args.max_rss_mib:.0f} MiB)")
        return 1
    print(f"OK: every process stayed under {args.max_rss_mib:.0f} MiB (largest {worst:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
