"""The FP32 ONNX artifact of one model, and its worker: ``python -m quantbench.harness.sweep.export_worker JOB OUT``.

The preparation worker (:mod:`.prepare_worker`) runs this worker for every model that is not an ONNX file:
exporting imports torch (about 510 MiB before any model; torchvision's model files alone, see
:mod:`quantbench.exporters.torchvision_import`; ResNet-50's export peaks at about 950 MiB), and in a
process of its own that memory is gone before the FP32 reference runs.
Its result is ``{"fp32": artifact fields}`` with its peak RSS beside it, or a one-line error
(:mod:`quantbench.common.worker_protocol`).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from quantbench.common.worker_protocol import one_line, run_worker, worker_main

STAGE = "export to ONNX"  # how failures here are named (the preparation's stage "export")


def export_fp32(source: Any, store: Any) -> Any:
    """The FP32 ONNX artifact of ``source``.

    A ``module:`` function is exported afresh every time and stored under the hash of the exported
    bytes: its code and the weights it loads are not something a cache key can see.
    """
    from quantbench.common.files import sha256_file
    from quantbench.exporters.registry import ModelSource

    if source.kind != "callable":
        return store.with_param_counts(store.fp32(source), source)
    from quantbench.exporters.param_counts import torch_param_counts
    from quantbench.exporters.torch_export import export_onnx
    from quantbench.exporters.torch_models import build_module

    # Counted before the export: the export leaves its module without tensors, and a function that hands out one
    # cached module (functools.cache, a module-level instance) would give that emptied module to a later count.
    counts = torch_param_counts(build_module(source))
    tmp_dir = Path(tempfile.mkdtemp(prefix="export-", dir=store.root))
    try:
        tmp = export_onnx(source, tmp_dir / "model.onnx")
        final = store.root / f"fp32-callable-{sha256_file(tmp)[:24]}" / "model.onnx"
        if not final.exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    built = store.fp32(ModelSource(name=source.name, kind="onnx", target=str(final)))
    return store.with_param_counts(dataclasses.replace(built, weights=source.weights_label()), source, counts)


def artifact_dict(a: Any) -> dict[str, Any]:
    """A BuiltArtifact as JSON-able fields (paths as strings)."""
    d = dataclasses.asdict(a)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


def run_export(source: Any, store_root: Path, log_dir: Path) -> tuple[Any, float | None]:
    """:func:`export_fp32` of ``source`` in a child process; returns (BuiltArtifact, its peak RSS MiB).

    Raises ValueError with the child's one-line reason when it fails.
    """
    from quantbench.exporters.artifacts import BuiltArtifact

    # The parent (the preparation worker) carries run.timeout_s; this child dies with it.
    job = {"source": source.to_dict(), "store": str(store_root)}
    outcome = run_worker("quantbench.harness.sweep.export_worker", job, timeout_s=None, log_path=log_dir / "export.log",
                         job_path=log_dir / "export.job.json", out_path=log_dir / "export.out.json")
    if not outcome.ok:
        raise ValueError(outcome.error or outcome.failure(STAGE))
    fields = dict(outcome.result["fp32"])
    for key in ("path", "reference_path"):
        if fields.get(key):
            fields[key] = Path(fields[key])
    return BuiltArtifact(**fields), outcome.peak_rss_mb


def export(job: dict[str, Any]) -> dict[str, Any]:
    """The worker's job: export ``job["source"]`` into the store at ``job["store"]``."""
    from quantbench.exporters.artifacts import ArtifactStore
    from quantbench.exporters.registry import ModelSource

    return {"fp32": artifact_dict(export_fp32(ModelSource.from_dict(job["source"]), ArtifactStore(Path(job["store"]))))}


def main(argv: list[str] | None = None) -> int:
    return worker_main(export, argv, describe=lambda exc: f"{STAGE} failed: {one_line(exc)}")


if __name__ == "__main__":
    sys.exit(main())
