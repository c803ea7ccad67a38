"""Subprocess entry for per-node sensitivity: ``python -m quantbench.harness.studies.sensitivity_worker JOB OUT``.

Modes (``job["mode"]``):

- ``sensitivity``: pre-process and calibrate once (skipped when the job's workdir already holds
  them), quantize the whole model, then for every quantizable node the model with only that node
  quantized and the model with only that node in float, each scored by SQNR of the output against
  FP32 on ``sqnr_samples`` evaluation images;
- ``accuracy``: top-1 on the evaluation set of the FP32 and whole-INT8 models and of both per-node
  models of ``job["nodes"]``;
- ``quantize``: one model with ``job["exclude"]`` kept in float (a mixed-precision search step).

Each finished item is one JSON line appended to ``job["progress"]`` as it ends (a ``start`` line
before each node, a ``done`` line at the end), so the parent can resume after a timeout or crash without
redoing finished nodes. The end itself, or the one-line error that stopped the job, goes to OUT
(:mod:`quantbench.common.worker_protocol`).
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from quantbench.common.accuracy_stats import paired_accuracy
from quantbench.common.memory import release_freed_memory
from quantbench.harness.studies import node_quant as nq


class _Progress:
    def __init__(self, path: Path) -> None:
        self.path = path

    def emit(self, **event: Any) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(event) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def _one_line(exc: BaseException) -> str:
    from quantbench.common.worker_protocol import one_line

    return one_line(exc)


def _settings(job: dict[str, Any]) -> Any:
    from quantbench.exporters.quantize import QuantSettings

    return QuantSettings.from_dict(job["settings"])


def _images(job: dict[str, Any], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` evaluation images as the harness selects them (seed 0), preprocessed, with labels."""
    from quantbench.calibration_data import BatchReader, Preprocess, open_source

    split = open_source(job["data"]).evaluation
    idx = split.select(min(n, len(split)), seed=0)
    reader = BatchReader(split, Preprocess.from_dict(job["preprocess"]), idx, 256, job["input_name"])
    xs, ys = [], []
    for x, y, n_valid in reader:
        xs.append(np.asarray(x[:n_valid], np.float32))
        ys.append(np.asarray(y[:n_valid]))
    return np.concatenate(xs), np.concatenate(ys).astype(np.int64)


def _setup(job: dict[str, Any], settings: Any, progress: _Progress) -> Path:
    """Pre-processed graph + calibration cache + whole-model QDQ model in the workdir (once per workdir)."""
    from quantbench.calibration_data import BatchReader, Preprocess, open_source

    workdir = Path(job["workdir"])
    full = workdir / "full.onnx"
    if (workdir / nq.PRE_FILE).exists() and (workdir / nq.CACHE_FILE).exists() and full.exists():
        return full
    split = open_source(job["calib_data"]).calibration
    idx = split.select(settings.calib_samples, seed=settings.calib_seed,
                       classes=list(settings.calib_classes) if settings.calib_classes else None)
    reader = BatchReader(split, Preprocess.from_dict(job["preprocess"]), idx, settings.calib_batch, job["input_name"])
    from quantbench.common.progress import Reporter

    info = nq.prepare_graph(Path(job["fp32"]), settings, reader, workdir, progress=Reporter().calibration())
    tmp = workdir / "full.tmp.onnx"
    nq.quantize(workdir, settings, tmp)
    tmp.replace(full)
    progress.emit(event="setup", **info)
    # the calibration's freed buffers (730 MB on ResNet-50), before the scan's models and sessions
    release_freed_memory()
    return full


def run_sensitivity(job: dict[str, Any], progress: _Progress) -> None:
    settings = _settings(job)
    workdir = Path(job["workdir"])
    full = _setup(job, settings, progress)
    threads, batch = int(job.get("threads", 0)), int(job["batch"])
    x, _ = _images(job, int(job["sqnr_samples"]))
    ref_path = workdir / "ref_sqnr.npy"
    loaded = ref_path.exists()
    passes: list[float] = []  # the unit of the scan's floor: one FP32 forward pass over the SQNR images
    batches: list[list[float]] = []  # [images, seconds] of that pass's batches: the floor's spread
    if loaded:
        ref = np.load(ref_path)
    else:
        ref = nq.run_outputs(Path(job["fp32"]), x, batch, threads, times=passes, batch_times=batches)
        tmp = workdir / "ref_sqnr.tmp.npy"  # a kill mid-write must not leave a file a resumed run would trust
        np.save(tmp, ref)
        tmp.replace(ref_path)
    skip = set(job.get("skip") or [])
    candidates = nq.candidate_nodes(settings, full)
    if "whole" not in skip:
        if loaded:  # a resumed worker read the reference: time one FP32 pass for the floor
            nq.run_outputs(Path(job["fp32"]), x, batch, threads, times=passes, batch_times=batches)
        fp32_pass_s = passes[-1]
        t0 = time.perf_counter()
        whole_db = nq.sqnr_db(ref, nq.run_outputs(full, x, batch, threads))
        progress.emit(event="whole", sqnr_db=whole_db, candidates=[[n, op] for n, op in candidates],
                      sqnr_samples=len(x), fp32_pass_s=float(f"{fp32_pass_s:.5g}"), fp32_batches=_rounded(batches),
                      seconds=round(time.perf_counter() - t0, 3))
    from quantbench.common.progress import Reporter

    fp32_pass_s = passes[-1] if passes else None
    todo = [c for c in candidates if c[0] not in skip]
    t0 = time.perf_counter()
    build, in_memory = _node_builder(workdir, settings, todo[0][0] if todo else None)
    progress.emit(event="builder", in_memory=in_memory, seconds=round(time.perf_counter() - t0, 3))  # scan time too
    report, t_scan, lock = Reporter(), time.perf_counter(), threading.Lock()  # the lanes' probe is scan time too
    lanes = _lanes(threads, len(todo)) if in_memory else 1  # quantize_static's fallback writes one file
    done = first = len(candidates) - len(todo)

    def emit(**event: Any) -> None:
        with lock:
            progress.emit(**event)

    def measure(name: str, op: str) -> dict[str, Any]:
        emit(event="start", node=name)
        t0 = time.perf_counter()
        try:
            with lock:  # building is Python (and patches ORT's quantizer while it runs): one at a time
                model = build(only=[name])
            if model is None:  # an 8-bit pass-through op: ORT quantizes it only next to quantized neighbours
                return {"event": "node", "node": name, "op_type": op, "alone": False,
                        "seconds": round(time.perf_counter() - t0, 3)}
            t1 = time.perf_counter()
            q_only = nq.sqnr_db(ref, nq.run_outputs(model, x, batch, threads))
            t2 = time.perf_counter()
            with lock:
                model = build(exclude=[name])
            t3 = time.perf_counter()
            f_only = nq.sqnr_db(ref, nq.run_outputs(model, x, batch, threads))
            infer_s = time.perf_counter() - t3 + t2 - t1
            del model
            release_freed_memory()  # the two models and sessions just freed: glibc kept their pages
        except Exception as exc:  # noqa: BLE001 - one node's failure is its row, not the study's end
            return {"event": "node", "node": name, "op_type": op, "alone": True, "error": _one_line(exc)}
        return {"event": "node", "node": name, "op_type": op, "alone": True, "sqnr_quant_only_db": q_only,
                "sqnr_float_only_db": f_only, "seconds": round(time.perf_counter() - t0, 3),
                "infer_seconds": round(infer_s, 3)}

    def tick() -> None:
        left = len(candidates) - done
        report("scan", done=done, total=len(candidates), unit="nodes",
               eta_s=round((time.perf_counter() - t_scan) / (done - first) * left, 1) if done > first else None,
               floor_eta_s=round(2 * fp32_pass_s * left / lanes, 1) if fp32_pass_s else None)

    tick()
    if lanes == 1:
        results: Any = (measure(name, op) for name, op in todo)
    else:  # ORT runs without the GIL: each lane's session uses `threads` cores that were idle
        from concurrent.futures import ThreadPoolExecutor, as_completed

        pool = ThreadPoolExecutor(lanes, thread_name_prefix="scan-lane")
        results = (f.result() for f in as_completed([pool.submit(measure, name, op) for name, op in todo]))
    for event in results:
        emit(**event)
        done += 1
        tick()
    if lanes > 1:
        pool.shutdown()
    # the loop's own wall time: with lanes the nodes' seconds overlap (scan_cost uses this for these nodes)
    emit(event="scan", lanes=lanes, nodes=[name for name, _ in todo], seconds=round(time.perf_counter() - t_scan, 3))
    if todo:  # the floor timed again after the scan (one pass, not scan time): its load, not only the start's
        end: list[list[float]] = []
        nq.run_outputs(Path(job["fp32"]), x, batch, threads, batch_times=end)
        emit(event="floor", fp32_batches=_rounded(end))
    for leftover in workdir.glob("node*.onnx*"):
        leftover.unlink(missing_ok=True)


def _rounded(batches: list[list[float]]) -> list[list[float]]:
    """``[images, seconds]`` pairs with 5 significant digits (events travel as JSON lines)."""
    return [[int(n), float(f"{t:.5g}")] for n, t in batches]


def _lanes(threads: int, nodes: int, window_s: float = 0.5, most: int = 4) -> int:
    """How many nodes to measure at once: 1 unless the sessions' threads are set (``run.threads`` > 0; ORT's
    default takes every core) and ``/proc/stat`` shows idle cores for more, measured over ``window_s`` while this
    process waits (:mod:`quantbench.harness.measure.interference`); at most ``most`` (each lane holds its
    sessions' memory)."""
    if threads <= 0 or nodes < 2:
        return 1
    from quantbench.harness.measure.interference import between, sample

    before = sample()
    time.sleep(window_s)
    other = between(before, sample()).get("other_cpu_frac")
    if other is None:
        return 1
    free = (os.cpu_count() or 1) - other
    return max(1, min(int(free // threads), nodes, most))


def _node_builder(workdir: Path, settings: Any, check_node: str | None) -> tuple[Any, bool]:
    """``(build, in_memory)``; ``build(only=..., exclude=...)``: a per-node model for a session (bytes, or a file
    when it is too large for one protobuf), or None when it quantizes nothing.

    In memory (:class:`.node_models.NodeModels`) when that gives the very model ``quantize_static`` writes for
    ``check_node`` (both of its models, compared here once per scan); otherwise ``quantize_static`` per model,
    as before, with a warning on stderr (slower, the same numbers)."""
    from quantbench.harness.studies.node_models import NodeModels, has_qdq

    why = "differ from quantize_static's"
    try:
        builder = NodeModels(workdir, settings)
        same = check_node is None or all(builder.matches_quantize_static(**kw)
                                         for kw in ({"only": [check_node]}, {"exclude": [check_node]}))
    except Exception as exc:  # noqa: BLE001 - an ORT whose quantizer internals moved: the files still work
        same, why = False, f"failed ({_one_line(exc)})"
    tmp = workdir / "node.onnx"
    if same:
        def build(only: list[str] | None = None, exclude: list[str] | tuple[str, ...] = ()) -> bytes | Path | None:
            model = builder.build(only=only, exclude=exclude)
            if not has_qdq(model):
                return None
            if model.ByteSize() < 2**31 - 2**26:
                return model.SerializeToString()
            from quantbench.common.onnx_save import save_model

            path = workdir / f"node-{threading.get_ident()}.onnx"  # one per lane
            return save_model(model, path, save_as_external_data=True, location=path.name + ".data")

        return build, True
    print(f"warning: in-memory per-node models {why} for {check_node} with this onnxruntime; building each "
          "with quantize_static (slower, the same numbers)", file=sys.stderr)

    def build_file(only: list[str] | None = None, exclude: list[str] | tuple[str, ...] = ()) -> Path | None:
        nq.quantize(workdir, settings, tmp, only=only, exclude=exclude)
        return tmp if nq.has_qdq(tmp) else None

    return build_file, False


def run_accuracy(job: dict[str, Any], progress: _Progress) -> None:
    settings = _settings(job)
    workdir = Path(job["workdir"])
    full = _setup(job, settings, progress)
    threads, batch = int(job.get("threads", 0)), int(job["batch"])
    x, y = _images(job, int(job["eval_samples"]))
    skip = set(job.get("skip") or [])
    fp32_right = _correct(nq.run_outputs(Path(job["fp32"]), x, batch, threads), y)  # every comparison is paired with it
    if "whole" not in skip:
        int8_right = _correct(nq.run_outputs(full, x, batch, threads), y)
        progress.emit(event="whole_accuracy", eval_samples=len(x), top1_fp32=round(float(fp32_right.mean()), 6),
                      top1_int8=round(float(int8_right.mean()), 6), paired_int8=paired_accuracy(fp32_right, int8_right))
    tmp = workdir / "node.onnx"
    todo = [name for name in job["nodes"] if name not in skip]
    build, _ = _node_builder(workdir, settings, todo[0] if todo else None)  # in memory where it is quantize_static's

    def model(**which: Any) -> bytes | Path:
        built = build(**which)
        if built is None:  # nothing quantized: the (float) file quantize_static writes, as before
            nq.quantize(workdir, settings, tmp, **which)
            return tmp
        return built

    for name in todo:
        progress.emit(event="start", node=name)
        try:
            q_only = _correct(nq.run_outputs(model(only=[name]), x, batch, threads), y)
            f_only = _correct(nq.run_outputs(model(exclude=[name]), x, batch, threads), y)
        except Exception as exc:  # noqa: BLE001 - one node's failure is its event; the others go on
            progress.emit(event="accuracy", node=name, error=_one_line(exc))
            continue
        finally:
            release_freed_memory()
        progress.emit(event="accuracy", node=name, top1_quant_only=round(float(q_only.mean()), 6),
                      top1_float_only=round(float(f_only.mean()), 6),
                      paired_quant_only=paired_accuracy(fp32_right, q_only),
                      paired_float_only=paired_accuracy(fp32_right, f_only))
    for leftover in workdir.glob("node*.onnx*"):  # node.onnx, and a lane's file of a model over 2 GB
        leftover.unlink(missing_ok=True)


def _correct(outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per image: is the arg-max the label (the vector :func:`.accuracy_stats.paired_accuracy` pairs)."""
    return np.asarray(outputs).argmax(axis=1) == np.asarray(labels)


def run_quantize(job: dict[str, Any], progress: _Progress) -> None:
    settings = _settings(job)
    _setup(job, settings, progress)
    out = Path(job["out"])
    tmp = out.with_suffix(".tmp.onnx")
    t0 = time.perf_counter()
    nq.quantize(Path(job["workdir"]), settings, tmp, exclude=list(job.get("exclude") or []))
    tmp.replace(out)
    progress.emit(event="quantized", out=str(out), seconds=round(time.perf_counter() - t0, 3))


def run_local(job: dict[str, Any], progress: _Progress) -> None:
    """``local``: each node's own output error from one FP32 pass (:mod:`.node_local`)."""
    from quantbench.common.progress import Reporter
    from quantbench.exporters.calibrate import activation_bytes_per_sample
    from quantbench.harness.studies.node_local import build_local_models, local_sqnr

    settings = _settings(job)
    workdir = Path(job["workdir"])
    full = _setup(job, settings, progress)
    threads, batch = int(job.get("threads", 0)), int(job["batch"])
    x, _ = _images(job, int(job["sqnr_samples"]))
    candidates = nq.candidate_nodes(settings, full)
    models = build_local_models(full, workdir / nq.PRE_FILE, candidates, workdir)
    import onnx

    per_sample = activation_bytes_per_sample(onnx.shape_inference.infer_shapes(
        onnx.load(str(workdir / nq.PRE_FILE), load_external_data=False)))
    report = Reporter()
    result = local_sqnr(workdir / nq.PRE_FILE, Path(job["fp32"]), models, x, batch, threads, workdir, per_sample,
                        lambda done, total: report("local", done=done, total=total, unit="images"))
    t0 = time.perf_counter()  # the whole INT8 model's SQNR, for context: one more pass
    whole_db = nq.sqnr_db(result["fp32_outputs"], nq.run_outputs(full, x, batch, threads))
    whole_s = time.perf_counter() - t0
    progress.emit(event="whole", sqnr_db=whole_db, candidates=[[n, op] for n, op in candidates], sqnr_samples=len(x),
                  fp32_pass_s=result["fp32_pass_s"], seconds=round(whole_s, 3))
    for m in models:
        progress.emit(event="node", node=m.node, op_type=m.op_type, alone=True, sqnr_local_db=result["nodes"][m.node])
    # two passes of floor: the FP32 pass the activations come from and the whole model's
    progress.emit(event="local", seconds=round(result["seconds"] + whole_s, 3), fp32_pass_s=result["fp32_pass_s"],
                  passes=2)


MODES = {"local": run_local, "sensitivity": run_sensitivity, "accuracy": run_accuracy, "quantize": run_quantize}


def run_job(job: dict[str, Any]) -> None:
    """The worker's job: ``job["mode"]`` (:data:`MODES`), its events appended to ``job["progress"]``."""
    progress = _Progress(Path(job["progress"]))
    MODES[job["mode"]](job, progress)
    progress.emit(event="done")


def main(argv: list[str] | None = None) -> int:
    from quantbench.common.worker_protocol import worker_main

    # onnxruntime.tools (quant_pre_process) imports torch only to offer an export helper: +500 MB, never used here.
    if "torch" not in sys.modules:
        sys.modules["torch"] = None  # type: ignore[assignment]
    return worker_main(run_job, argv)


if __name__ == "__main__":
    sys.exit(main())
