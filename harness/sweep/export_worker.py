"""Subprocess entry: the FP32 ONNX artifact of one model (``python -m quantbench.harness.sweep.export_worker JOB OUT``).

The preparation worker (:mod:`.prepare_worker`) runs this for every model that is not an ONNX file:
exporting imports torch and torchvision (about 670 MiB before any model, ResNet-50 exports peak at
about 1.1–1.2 GiB), and in a process of its own that memory is gone before the FP32 reference runs.
OUT.json gets ``{"fp32": artifact fields, "peak_rss_mb": …}`` or ``{"error": "one line"}``.
"""
from __future__ import annotations

import json
import resource
import sys
import traceback
from pathlib import Path
from typing import Any


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MiB: the kernel's ``VmHWM``. ``ru_maxrss`` survives
    ``exec``, so a worker started by a large process reported its parent's size (a 158 MiB preparation
    worker read 634 MiB when started from a test process that had run a sweep)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_export(source: Any, store_root: Path, log_dir: Path) -> tuple[Any, float | None]:
    """``prepare_worker.export_fp32`` of ``source`` in a child process; returns (BuiltArtifact, its peak RSS MiB).

    Raises ValueError with the child's one-line reason when it fails.
    """
    from quantbench.exporters.artifacts import BuiltArtifact

    from quantbench.common.subproc import run_contained

    log_dir.mkdir(parents=True, exist_ok=True)
    job, out, log = log_dir / "export.job.json", log_dir / "export.out.json", log_dir / "export.log"
    job.write_text(json.dumps({"source": source.to_dict(), "store": str(store_root)}))
    out.unlink(missing_ok=True)
    # The parent (the preparation worker) carries run.timeout_s; this child dies with it.
    res = run_contained([sys.executable, "-m", "quantbench.harness.sweep.export_worker", str(job), str(out)],
                        timeout_s=None, log_path=log)
    result = json.loads(out.read_text()) if out.exists() else {}
    if "error" in result:
        raise ValueError(result["error"])
    if "fp32" not in result:
        why = res.describe(None) or "ended without a result"
        last = res.last_line()
        raise ValueError(f"export to ONNX {why}" + (f": {last[:160]}" if last else "") + f" (log: {log})")
    fields = dict(result["fp32"])
    for key in ("path", "reference_path"):
        if fields.get(key):
            fields[key] = Path(fields[key])
    return BuiltArtifact(**fields), result.get("peak_rss_mb")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job_path, out_path = Path(argv[0]), Path(argv[1])
    from quantbench.common.subproc import watch_parent

    watch_parent()
    job = json.loads(job_path.read_text())
    try:
        from quantbench.exporters.artifacts import ArtifactStore
        from quantbench.exporters.registry import ModelSource

        from quantbench.harness.sweep.prepare_worker import _artifact_dict, export_fp32

        built = export_fp32(ModelSource.from_dict(job["source"]), ArtifactStore(Path(job["store"])))
        result: dict[str, Any] = {"fp32": _artifact_dict(built), "peak_rss_mb": peak_rss_mb()}
    except Exception as exc:  # noqa: BLE001 - the model's failure, reported in one line
        from quantbench.harness.sweep.prepare_worker import describe_failure

        traceback.print_exc()
        result = {"error": describe_failure(exc, "export")}
    out_path.write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
