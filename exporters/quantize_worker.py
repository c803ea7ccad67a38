"""Subprocess entry: quantize one model; its result is the time, peak RSS and notes of the quantization.

Usage: ``python -m quantbench.exporters.quantize_worker JOB.json OUT.json``
(:mod:`quantbench.common.worker_protocol`); the parent calls :func:`.artifacts.run_quantize_worker`.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from quantbench.common.worker_protocol import peak_rss_mb, rss_mb, worker_main


def _first_input(path: str) -> str:
    import onnx

    graph = onnx.load(path, load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    return next(i.name for i in graph.input if i.name not in initializers)


def _progress() -> Any:
    """Calibration progress for the sweep's display (quantbench/common/progress.py)."""
    from quantbench.common.progress import Reporter

    return Reporter().calibration()


def calibration_indices(split: Any, settings: Any) -> Any:
    """The calibration images ``settings`` asks for; more than there are is one line naming both numbers."""
    classes = list(settings.calib_classes) if settings.calib_classes else None
    labels = getattr(split, "labels", None)
    if labels is not None:
        import numpy as np

        available = int(np.isin(labels, classes).sum()) if classes else len(labels)
        if 0 < available < settings.calib_samples:
            where = " of calib_classes" if classes else ""
            raise ValueError(f"calib_samples = {settings.calib_samples}, but {split.name} has only {available} "
                             f"calibration images{where}: lower it, or leave it out to use all of them")
    return split.select(settings.calib_samples, seed=settings.calib_seed, classes=classes)


def run(job: dict[str, Any]) -> dict[str, Any]:
    """Quantize as ``job`` says; returns the result record (raises on failure)."""
    # quant_pre_process imports onnxruntime.tools, which imports torch whenever it is installed, only
    # to offer a PyTorch export helper: 500 MB of RSS and seconds of start-up this process never uses.
    # A None entry makes importlib.util.find_spec("torch") report it absent.
    if "torch" not in sys.modules:
        sys.modules["torch"] = None  # type: ignore[assignment]
    import onnxruntime  # noqa: F401 - import before the baseline so it is not counted

    from quantbench.calibration_data import BatchReader, Preprocess, open_source

    from .quantize import QuantSettings, quantize_qdq

    settings = QuantSettings.from_dict(job["settings"])
    if settings.mode == "dynamic":
        return _run_dynamic(job, settings)
    split = open_source(job["data"]).calibration
    idx = calibration_indices(split, settings)
    reader = BatchReader(split, Preprocess.from_dict(job["preprocess"]), idx, settings.calib_batch,
                         _first_input(job["fp32"]))
    base = rss_mb()
    t0 = time.perf_counter()
    out = Path(job["out"])
    tmp = out.with_suffix(".tmp.onnx")
    stats: dict[str, Any] = {}
    notes = quantize_qdq(Path(job["fp32"]), tmp, settings, reader, stats, progress=_progress())
    tmp.replace(out)
    elapsed = time.perf_counter() - t0
    peak = peak_rss_mb()
    return {"time_s": round(elapsed, 3), "peak_rss_mb": round(peak, 1), "delta_rss_mb": round(peak - base, 1),
            "notes": notes, "calib_samples": len(idx), "calibration": stats}


def _run_dynamic(job: dict[str, Any], settings: Any) -> dict[str, Any]:
    """``mode = "dynamic"``: no calibration data is opened (none is used)."""
    from .dynamic import integer_ops, quantize_dynamic_model

    base = rss_mb()
    t0 = time.perf_counter()
    out = Path(job["out"])
    tmp = out.with_suffix(".tmp.onnx")
    notes = quantize_dynamic_model(Path(job["fp32"]), tmp, settings)
    tmp.replace(out)
    elapsed = time.perf_counter() - t0
    peak = peak_rss_mb()
    return {"time_s": round(elapsed, 3), "peak_rss_mb": round(peak, 1), "delta_rss_mb": round(peak - base, 1),
            "notes": notes, "calib_samples": 0, "dynamic_ops": integer_ops(out)}


def main(argv: list[str] | None = None) -> int:
    return worker_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
