"""``sensitivity_floor.py --compare K``: the full scan's per-node work built two ways, in one process.

Per node, in turn: (a) ``quantize_static`` writes each of the node's two models and a session opens the
file (the scan before ``harness/studies/node_models.py``), (b) :class:`NodeModels` builds them in memory and a
session opens the bytes (the scan now). Both run the SQNR images at the scan's batch; the floor of each way
is two FP32 passes per node, the pass timed here once per node between the two ways. Loading the graph once
is counted in the in-memory way; the scan's check of its first node against ``quantize_static`` (two more
models, once per scan) is not.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.modules.setdefault("torch", None)  # type: ignore[arg-type] - as the worker: ORT's tools import it for nothing


def _job(args: Any, work: Path) -> dict[str, Any]:
    from quantbench.exporters.artifacts import onnx_input_info
    from quantbench.exporters.quantize import QuantSettings
    from quantbench.exporters.registry import resolve_model

    fp32 = Path(args.model).absolute()
    try:  # a registry model's file (exporters/assets/cifar10_cnn.onnx): its preprocessing; else ImageNet's
        pre = dict(resolve_model(fp32.stem).preprocess)
    except Exception:  # noqa: BLE001 - not a registry model's file: ImageNet's preprocessing
        pre = dict(resolve_model("resnet50", weights="random").preprocess)
    if args.resize:
        pre["resize"] = [args.resize, args.resize]
    qs = QuantSettings(calibration=args.calibration, calib_samples=args.calib_samples)
    return {"fp32": str(fp32), "settings": qs.to_config(), "data": args.data, "calib_data": args.data,
            "preprocess": pre, "input_name": onnx_input_info(fp32)[0], "sqnr_samples": args.sqnr_samples,
            "batch": args.batch, "threads": args.threads, "workdir": str(work), "progress": str(work / "p.jsonl")}


def compare(args: Any) -> int:
    """Print and return 0 when both ways gave the same SQNR on every node, else 1."""
    from quantbench.harness.studies import node_quant as nq
    from quantbench.harness.studies import sensitivity_worker as sw
    from quantbench.harness.studies.node_models import NodeModels, has_qdq

    print(f"{args.model}: --compare {args.compare}, {args.sqnr_samples} SQNR images from {args.data}, batch "
          f"{args.batch}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}; "
          f"{time.strftime('%Y-%m-%d %H:%M %Z')}", flush=True)
    with tempfile.TemporaryDirectory(prefix="qb-sens-compare-") as tmpdir:
        work = Path(tmpdir)
        job = _job(args, work)
        settings = sw._settings(job)
        t0 = time.perf_counter()
        full = sw._setup(job, settings, sw._Progress(work / "p.jsonl"))
        print(f"setup (pre-process, calibration, whole model) {time.perf_counter() - t0:.1f} s", flush=True)
        x, _ = sw._images(job, args.sqnr_samples)
        fp32 = Path(job["fp32"])
        ref = nq.run_outputs(fp32, x, args.batch, args.threads)
        builder = NodeModels(work, settings)
        # the nodes the scan measures: a pass-through op (MaxPool) quantizes nothing alone and runs no model
        cands = [c for c in nq.candidate_nodes(settings, full) if has_qdq(builder.build(only=[c[0]]))]
        k = min(args.compare, len(cands))
        picked = [cands[round(i * (len(cands) - 1) / max(k - 1, 1))] for i in range(k)]
        t0 = time.perf_counter()
        builder = NodeModels(work, settings)  # a fresh one, so that its cost and first-time work are timed
        init_s = time.perf_counter() - t0
        tmp = work / "node.onnx"
        ways: dict[str, dict[str, float]] = {w: {"time": 0.0, "build": 0.0, "session+run": 0.0}
                                             for w in ("quantize_static", "in-memory")}
        ways["in-memory"]["time"] = ways["in-memory"]["build"] = init_s  # loading pre.onnx once: its cost too
        floor = 0.0
        same = True
        for name, op in picked:
            passes: list[float] = []
            nq.run_outputs(fp32, x, args.batch, args.threads, times=passes)
            floor += 2 * passes[0]
            sqnr: dict[str, list[Any]] = {}
            for way in ways:
                got = []
                for kw in ({"only": [name]}, {"exclude": [name]}):
                    t0 = time.perf_counter()
                    if way == "quantize_static":
                        nq.quantize(work, settings, tmp, **kw)
                        model: Any = tmp if nq.has_qdq(tmp) else None
                    else:
                        proto = builder.build(**kw)
                        model = proto.SerializeToString() if has_qdq(proto) else None
                        del proto
                    t1 = time.perf_counter()
                    got.append(nq.sqnr_db(ref, nq.run_outputs(model, x, args.batch, args.threads)) if model else None)
                    t2 = time.perf_counter()
                    ways[way]["build"] += t1 - t0
                    ways[way]["session+run"] += t2 - t1
                    ways[way]["time"] += t2 - t0
                sqnr[way] = got
            same &= sqnr["quantize_static"] == sqnr["in-memory"]
            print(f"  {name} ({op}): FP32 pass {passes[0]:.2f} s; SQNR only-quantized / only-float "
                  f"{sqnr['in-memory']} dB, equal: {sqnr['quantize_static'] == sqnr['in-memory']}", flush=True)
        rows = []
        for way, t in ways.items():
            rows.append({"way": way, "nodes": k, "time_s": round(t["time"], 2), "floor_s": round(floor, 2),
                         "ratio": round(t["time"] / floor, 3), "build_s": round(t["build"], 2),
                         "session_and_run_s": round(t["session+run"], 2)})
            print(f"{way:<16} {k} nodes   time {t['time']:.1f} s   floor {floor:.1f} s   ratio {t['time'] / floor:.2f}"
                  f"   (building {t['build']:.1f} s, sessions and runs {t['session+run']:.1f} s)", flush=True)
        print(f"SQNR equal on every node: {same}; load average now {os.getloadavg()[0]:.1f}")
        print(json.dumps({"model": args.model, "sqnr_samples": args.sqnr_samples, "batch": args.batch,
                          "same_sqnr": same, "rows": rows}))
    return 0 if same else 1
