"""What each piece of a calibration pass costs against the floor, per image, measured in one process.

On the graph ``quantbench`` quantizes (ORT's ``quant_pre_process`` of an ONNX file) and the tensors an optimised
calibration reads (``calib_graph = "optimised"``, the default: Relu/Clip inputs adopt their node's range), runs a few
images through, in turn, groups of ``--group`` images each so that all pieces see the same load: the floor (the plain
FP32 model, ORT's default optimisations), pass 1 as calibration runs it (each activation read out, its min, max and
min |x| found by numba's kernel in the binning threads) and as it runs without numba (the in-graph min/max probes),
pass 2's forward alone with its outputs read in ORT's blocked layout and with ORT's copies back to NCHW (what reading
blocked saves), the counting of one image's activations alone (numba's kernel where installed, in calibration's
binning threads), and pass 2 as ``calibrate`` runs it (the forward, then the counting in worker threads). Prints each
piece's CPU seconds (all threads of this process) and wall seconds per image, both over the floor's: the CPU ratio
survives a busy machine, the wall ratio is what a user waits for on a quiet one.

    python benchmarks/calibration_pieces.py /tmp/resnet50.onnx --data folder:/tmp/cifar10 --resize 224 --images 32
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np


def _pieces(model: Path, feeds: list[dict], tmp: Path, method: str, bins: int) -> dict[str, Callable]:
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    from quantbench.exporters import calibrate as cal
    from quantbench.exporters.quantize import QuantSettings, calibration_config

    config = calibration_config(QuantSettings(calibration=method))
    shaped = load_model_with_shape_infer(model)
    tensors, _ = cal.tensors_to_calibrate(shaped, config.op_types)
    inputs = {i.name for i in shaped.graph.input} - {i.name for i in shaped.graph.initializer}
    types = cal._value_types(shaped)
    adopted = cal.adopted_ranges(shaped, tensors, config)
    probed = [t for t in tensors if t not in adopted]
    absolute = method == "percentile" and config.symmetric  # its probes also find min |x| (Abs + ReduceMin)
    plan = cal.write_range_model(shaped, probed, inputs, tmp / "range.onnx", abs_min=absolute,
                                 max_only=cal.nonnegative_tensors(shaped))
    range_out = [name for probe in plan for name in probe[1:] if name]
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    plain = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    ranges_session = cal.calibration_session(tmp / "range.onnx", 0, optimised=True)
    # every image's range, so that pass 2 bins over the ranges calibration would use
    tops = dict.fromkeys(probed, np.float32(0))
    for feed in feeds:
        values = dict(zip(range_out, ranges_session.run(range_out, feed), strict=True))
        for t, low, high, _ in plan:
            top = max(abs(float(np.min(values[low]))) if low else 0.0, abs(float(np.max(values[high]))))
            tops[t] = np.float32(max(tops[t], top))
    ranges = {t: (np.float32(0) if absolute else -tops[t], tops[t]) for t in probed}  # |x| from 0 (about min |x|)
    outputs = cal.write_activation_model(onnx.load(str(model)), probed, inputs, tmp / "acts.onnx", types)
    runs = cal._ActivationRuns(tmp / "acts.onnx", outputs, 0, optimised=True, pipeline=cal.counting_beside_forward(0))
    blocked_default = cal.READ_BLOCKED
    cal.READ_BLOCKED = False
    try:
        nchw_runs = cal._ActivationRuns(tmp / "acts.onnx", outputs, 0, optimised=True)
    finally:
        cal.READ_BLOCKED = blocked_default
    hists = cal._Histograms(ranges, bins, absolute)
    binners = ThreadPoolExecutor(cal.BINNING_THREADS)
    worker = ThreadPoolExecutor(1)
    pending: dict[Any, Any] = {}
    columns = list(range(len(probed)))
    # calibration's consumers: each tensor's counting, or pass 1's min, max and min |x| (numba), in the binning threads
    count = cal._per_tensor(binners, lambda k, a: hists.add_values(probed[k], a), columns, [0.0])
    found = [cal.ValueRange() for _ in probed] if hists.compiled else []
    read_ranges = cal._per_tensor(binners, lambda k, a: found[k].add(a), columns, [0.0])

    def as_calibrate_runs(consume: Callable) -> Callable:
        def one(feed: dict) -> None:  # as calibrate's _run_pass, without its floor probes
            slot = runs.next_slot
            if slot in pending:
                pending.pop(slot).result()
            arrays, slot = runs.run(feed)
            if slot in pending:
                pending.pop(slot).result()
            pending[slot] = worker.submit(consume, arrays)
        return one

    one_image = [a.copy() for a in runs.run(feeds[0])[0]]
    count(one_image)  # numba's kernel loads (or compiles) on its first call: not part of any piece
    if found:
        read_ranges(one_image)
    pieces = {"floor (optimised FP32)": lambda f: plain.run(None, f),
              "pass 1 in-graph probes (no numba)": lambda f: ranges_session.run(range_out, f)}
    if found:
        pieces["pass 1 read out (numba min/max)"] = as_calibrate_runs(read_ranges)
    pieces |= {"pass 2 forward alone (read blocked)": lambda f: runs.run(f),
              "pass 2 forward alone (NCHW copies)": lambda f: nchw_runs.run(f),
              "counting alone": lambda f: count(one_image),
              "pass 2 (forward + counting)": as_calibrate_runs(count)}

    def settle() -> None:
        for job in list(pending.values()):
            job.result()
        pending.clear()

    pieces["_settle"] = settle
    print(f"{len(tensors)} tensors, {len(adopted)} adopting their Relu/Clip's range, "
          f"{sum(a.size for a in one_image)} values binned per image; numba: {hists.compiled}", flush=True)
    settle()
    return pieces


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="an FP32 .onnx file (pre-processed here as quantbench does)")
    ap.add_argument("--data", default="fashion-mnist", help="data spec (default fashion-mnist)")
    ap.add_argument("--resize", type=int, default=None, help="resize images to N x N")
    ap.add_argument("--images", type=int, default=24, help="images (default 24)")
    ap.add_argument("--group", type=int, default=4, help="images per turn of each piece (default 4)")
    ap.add_argument("--method", default="entropy", help="histogram method whose bins pass 2 counts (default entropy)")
    args = ap.parse_args(argv)
    if not Path(args.model).is_file() or args.images < 1:
        why = f"{args.model} is not a file" if not Path(args.model).is_file() else "--images must be >= 1"
        print(f"error: {why}", file=sys.stderr)
        return 2
    from quantbench.calibration_data import BatchReader, Preprocess, open_source
    from quantbench.exporters import calibrate as cal
    from quantbench.exporters.quantize import QuantSettings, pre_processed
    from quantbench.exporters.registry import resolve_model

    source = resolve_model(args.model)
    pre = dict(source.preprocess, **({"resize": [args.resize, args.resize]} if args.resize else {}))
    split = open_source(args.data).calibration
    reader = BatchReader(split, Preprocess.from_dict(pre), split.select(args.images, seed=0), 32, "input")
    bins = QuantSettings(calibration=args.method).effective_bins
    print(f"{Path(args.model).name}: {args.images} images from {args.data}; {os.cpu_count()} CPUs; load average "
          f"{os.getloadavg()[0]:.1f}; {time.strftime('%Y-%m-%d %H:%M %Z')}", flush=True)
    with tempfile.TemporaryDirectory(prefix="qb-pieces-") as tmpdir:
        tmp = Path(tmpdir)
        model = pre_processed(Path(args.model), tmp, [])
        feeds = list(cal.one_sample_feeds(reader))
        pieces = _pieces(model, feeds, tmp, args.method, int(bins))
        settle = pieces.pop("_settle")
        cpu = dict.fromkeys(pieces, 0.0)
        wall = dict.fromkeys(pieces, 0.0)
        for start in range(0, len(feeds), args.group):
            for name, run in pieces.items():
                c0, w0 = time.process_time(), time.perf_counter()
                for feed in feeds[start:start + args.group]:
                    run(feed)
                settle()
                cpu[name] += time.process_time() - c0
                wall[name] += time.perf_counter() - w0
    floor = next(iter(pieces))
    for name in pieces:
        print(f"{name:36s} CPU {cpu[name] / len(feeds) * 1000:7.1f} ms/image ({cpu[name] / cpu[floor]:.2f} x)   "
              f"wall {wall[name] / len(feeds) * 1000:7.1f} ms/image ({wall[name] / wall[floor]:.2f} x)")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
