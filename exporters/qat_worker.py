"""Subprocess entry for ``mode = "qat"`` variants: fine-tune one model with fake quantization, export QDQ ONNX.

Usage: ``python -m quantbench.exporters.qat_worker JOB.json``; the parent calls :func:`run_qat_worker`, which
runs it contained (own process group, killed after ``timeout_s``) like the quantization worker.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .quantize import QuantSettings
from .quantize_worker import _peak_mb
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
    peak = _peak_mb()
    note = (f"QAT: {ran['steps']} steps of {ran['batch']} ({ran['optimizer']}) on {ran['n_train']} training images "
            f"({ran['train_split']}) in {ran['train_seconds']:g} s, {ran['layers_fake_quantized']} layers "
            f"fake-quantized, final loss {ran['final_loss']}")
    return {"time_s": round(elapsed, 3), "peak_rss_mb": round(peak, 1), "notes": [note], "qat": ran}


def run_qat_worker(source: ModelSource, out: Path, settings: QuantSettings, data_spec: str | dict[str, Any],
                   preprocess: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
    """QAT in a contained subprocess; returns its result. Raises a one-line ValueError on failure or timeout."""
    from quantbench.calibration_data import absolute_spec
    from quantbench.common.subproc import run_contained

    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="qb-qat-") as tmpdir:
        job_path, result_path = Path(tmpdir) / "job.json", Path(tmpdir) / "result.json"
        job = {"source": source.to_dict(), "out": str(out), "settings": settings.to_config(),
               "data": absolute_spec(data_spec, Path.cwd()), "preprocess": preprocess, "result": str(result_path)}
        job_path.write_text(json.dumps(job))
        log_path = out.with_name("qat.log")
        res = run_contained([sys.executable, "-m", "quantbench.exporters.qat_worker", str(job_path)],
                            timeout_s=timeout_s, log_path=log_path)
        if res.timed_out:
            raise ValueError(f"QAT timed out after {timeout_s:g} s (raise run.timeout_s or lower qat_steps)")
        result = json.loads(result_path.read_text()) if result_path.is_file() else None
    if result is not None and "error" in result:
        raise ValueError(f"QAT failed: {result['error']}")
    if res.returncode != 0 or result is None:
        why = res.signal_name or res.last_line() or f"exit {res.returncode}"
        raise ValueError(f"QAT failed: {why} (log: {log_path})")
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(args[0]).read_text())
    try:
        from quantbench.common.subproc import watch_parent

        watch_parent()
    except ImportError:  # pragma: no cover - harness not installed (exporters used alone)
        pass
    try:
        result = run(job)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        result = {"error": msg}
    Path(job["result"]).write_text(json.dumps(result))
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
