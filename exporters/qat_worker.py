"""Subprocess entry for ``mode = "qat"`` variants: fine-tune one model with fake quantization, export QDQ ONNX.

Usage: ``python -m quantbench.exporters.qat_worker JOB.json OUT.json`` (:mod:`quantbench.common.worker_protocol`);
the parent calls :func:`run_qat_worker`, which runs it contained (own process group, killed after ``timeout_s``)
like the quantization worker.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from quantbench.common.worker_protocol import peak_rss_mb, run_worker, worker_main

from .quantize import QuantSettings
from .registry import ModelSource


def run(job: dict[str, Any]) -> dict[str, Any]:
    """Train and export as ``job`` says; returns time, peak RSS, notes and what the training ran."""
    from .qat_model import run as run_qat

    settings = QuantSettings.from_dict(job["settings"])
    out = Path(job["out"])
    tmp = out.with_suffix(".tmp.onnx")
    t0 = time.perf_counter()
    def progress(step: int, total: int, loss: float) -> None:  # a line every tenth of the steps, in qat.log
        if step == total or step % max(1, total // 10) == 0:
            print(f"step {step}/{total}: loss {loss:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)

    ran = run_qat(ModelSource.from_dict(job["source"]), settings, job["data"], job["preprocess"], tmp,
                  progress=progress, log=lambda msg: print(msg, flush=True))
    tmp.replace(out)
    elapsed = time.perf_counter() - t0
    peak = peak_rss_mb()
    note = (f"QAT: {ran['steps']} steps of {ran['batch']} ({ran['optimizer']}) on {ran['n_train']} training images "
            f"({ran['train_split']}) in {ran['train_seconds']:g} s, {ran['layers_fake_quantized']} layers "
            f"fake-quantized, final loss {ran['final_loss']}")
    return {"time_s": round(elapsed, 3), "peak_rss_mb": round(peak, 1), "notes": [note], "qat": ran}


def run_qat_worker(source: ModelSource, out: Path, settings: QuantSettings, data_spec: str | dict[str, Any],
                   preprocess: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
    """QAT in a contained subprocess; returns its result. Raises a one-line ValueError on failure or timeout."""
    from quantbench.calibration_data import absolute_spec

    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    job = {"source": source.to_dict(), "out": str(out), "settings": settings.to_config(),
           "data": absolute_spec(data_spec, Path.cwd()), "preprocess": preprocess}
    with tempfile.TemporaryDirectory(prefix="qb-qat-") as tmpdir:
        outcome = run_worker("quantbench.exporters.qat_worker", job, timeout_s=timeout_s,
                             log_path=out.with_name("qat.log"), job_path=Path(tmpdir) / "job.json",
                             out_path=Path(tmpdir) / "result.json")
    if not outcome.ok:
        raise ValueError(outcome.failure("QAT", timeout_hint="raise run.timeout_s or lower qat_steps"))
    return outcome.result


def main(argv: list[str] | None = None) -> int:
    return worker_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
