"""Subprocess entry point: export one model, check it against its data, compute its FP32 reference.

``python -m quantbench.harness.sweep.prepare_worker JOB.json OUT.json``. Everything that runs the user's
code or a runtime during preparation happens here (a ``module:`` function, a PyTorch export, an
ONNX model's forward pass), so a segfault or an endless Loop fails this model, not the sweep: the
parent runs this under ``run.timeout_s`` with :func:`quantbench.common.worker_protocol.run_worker`.

Its result is the prepared model: the FP32 artifact, the data it is evaluated and calibrated on
(``describe()`` of each), the reference outputs' path and the accuracy plan (``num_classes``, whether
top-k applies, the note when it does not); or a one-line error naming the step that broke.
Stage lines (:func:`~quantbench.common.worker_protocol.mark_stage`) go to the log, so a timeout can
say where it hung.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from quantbench.common.worker_protocol import mark_stage, one_line, peak_rss_mb, worker_main
from quantbench.harness.sweep.export_worker import STAGE as EXPORT_STAGE
from quantbench.harness.sweep.export_worker import artifact_dict, export_fp32

STAGES = {
    "load": "loading the ONNX file",
    "export": EXPORT_STAGE,
    "data": "opening its data",
    "reference": "FP32 reference outputs",
}
# ResNet-50 at 224 px: batch 64 peaked at 1.1 GiB in ONNX Runtime, batch 16 at 0.5 GiB, at the same speed on CPU.
REFERENCE_BATCH = 16
FLOAT_TYPES = ("float32", "float16", "float64", "bfloat16")


class PrepareProblem(ValueError):
    """A problem with this model (its export, data, shapes or outputs), described in one line."""


_current = {"stage": "start-up"}


def _stage(name: str) -> None:
    from quantbench.common.progress import Reporter

    _current["stage"] = name
    mark_stage(name)
    Reporter()(name, force=True)


def _sample_shape(split: Any, preprocess: Any, input_name: str) -> tuple[int, ...]:
    """Per-sample shape of one image after preprocessing (reads and decodes one image)."""
    from quantbench.calibration_data import BatchReader

    x, _, _ = BatchReader(split, preprocess, np.arange(1), 1, input_name).load_batch(0)
    return tuple(int(d) for d in x.shape[1:])


def _fits(model_dims: list[Any], data_shape: tuple[int, ...]) -> bool:
    return len(model_dims) == len(data_shape) and all(
        not (isinstance(a, int) and a > 0) or a == b for a, b in zip(model_dims, data_shape, strict=True))


def _raw_chw(split: Any) -> tuple[int, int, int]:
    """A split's native image shape as (C, H, W)."""
    shape = tuple(split.image_shape)
    return (1, *shape[:2]) if len(shape) == 2 else (shape[2], shape[0], shape[1])


def _eval_indices(split: Any, eval_samples: int) -> np.ndarray:
    # Exactly the selection the cell worker evaluates (measure._eval_reader).
    n = min(int(eval_samples), len(split)) if eval_samples else len(split)
    return split.select(n, seed=0)


def _fmt_shape(dims: Any) -> str:
    return "×".join(str(d) for d in dims)


def _reference(fp32_path: Path, split: Any, preprocess: Any, idx: np.ndarray, path: Path,
               input_name: str) -> np.ndarray:
    """FP32 first-output values on the evaluation images (ONNX Runtime CPU), cached at ``path``.

    Batches follow the model's batch dimension when it is fixed, else :data:`REFERENCE_BATCH`.
    Kept in the output's own per-sample shape, (N, ...), so its structure can be judged.
    """
    if path.exists():
        return np.load(path)
    import onnxruntime as ort

    from quantbench.calibration_data import BatchReader

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(fp32_path), opts, providers=["CPUExecutionProvider"])
    dims = next(i.shape for i in sess.get_inputs() if i.name == input_name)
    batch = dims[0] if dims and isinstance(dims[0], int) and dims[0] > 0 else REFERENCE_BATCH
    reader = BatchReader(split, preprocess, idx, batch, input_name, pad_last=True)
    outs = []
    from quantbench.common.progress import Reporter

    report, done, t0 = Reporter(), 0, time.monotonic()
    for x, _, n in reader:
        out = np.asarray(sess.run(None, {input_name: x})[0])
        if out.ndim == 0 or out.shape[0] != len(x):
            raise PrepareProblem(f"the model's first output has shape {out.shape} for a batch of {len(x)}: "
                                 f"it has no batch axis")
        if outs and out.shape[1:] != outs[0].shape[1:]:
            raise PrepareProblem("the model's first output changes shape from batch to batch")
        outs.append(out[:n])
        done += n
        # this pass is the FP32 forward itself: its own rate is its floor
        report("reference", done=done, total=len(idx), unit="images",
               eta_s=round((time.monotonic() - t0) / done * (len(idx) - done), 1))
    values = np.concatenate(outs)
    if values.dtype.kind == "f":
        values = values.astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, values)
    tmp.replace(path)
    return values


def prepare(job: dict[str, Any]) -> dict[str, Any]:
    """Run every preparation step of one model; raises PrepareProblem (or anything) on failure."""
    import importlib.util

    from quantbench.calibration_data import Preprocess, open_source
    from quantbench.calibration_data.sources import restricted_classes
    from quantbench.exporters.artifacts import ArtifactStore
    from quantbench.exporters.onnx_info import onnx_input_info, onnx_output_info
    from quantbench.exporters.registry import ModelSource

    source = ModelSource.from_dict(job["source"])
    label = job["label"]
    store = ArtifactStore(Path(job["store"]))

    _stage("load" if source.kind == "onnx" else "export")
    peaks: dict[str, float | None] = {}
    if source.kind == "onnx":
        fp32 = export_fp32(source, store)
    else:  # torch in a process of its own (harness/sweep/export_worker.py): this one stays small for the reference
        from quantbench.harness.sweep.export_worker import run_export

        job_dir = Path(tempfile.mkdtemp(prefix="export-job-", dir=store.root))
        try:
            fp32, peaks["export"] = run_export(source, store.root, job_dir)
        except ValueError as exc:
            raise PrepareProblem(str(exc)) from None
        shutil.rmtree(job_dir, ignore_errors=True)
    input_name, in_dims, in_type = onnx_input_info(fp32.path)
    outputs = onnx_output_info(fp32.path)
    if not outputs:
        raise PrepareProblem(f"model '{label}' has no outputs")
    if in_type != "float32":
        raise PrepareProblem(f"model '{label}' takes {in_type} input; quantbench feeds preprocessed float32 images")

    _stage("data")
    pre = Preprocess.from_dict(job["preprocess"])
    evaluation = open_source(job["dataset"])
    split = evaluation.evaluation
    model_chw = list(in_dims)
    if pre.layout == "NHWC" and len(model_chw) == 3:
        model_chw = [model_chw[2], model_chw[0], model_chw[1]]
    data_shape = _sample_shape(split, pre, input_name)
    if not _fits(list(in_dims), data_shape):
        raise PrepareProblem(
            f"model '{label}' expects input {tuple(in_dims)} per sample but dataset '{evaluation.spec}' gives "
            f"{data_shape} after preprocessing: set preprocess (resize, channels) for this model")
    random = source.is_random
    default_data = not job["dataset_named"] and source.kind != "builtin"
    if default_data and not random and not _fits(model_chw, _raw_chw(split)):
        static = outputs[0][1]
        classes = source.num_classes or (int(np.prod(static)) if all(isinstance(d, int) for d in static) else None)
        raise PrepareProblem(_no_dataset_advice(label, model_chw, classes, evaluation, split))
    if job.get("calib_dataset") is not None:
        calibration = open_source(job["calib_dataset"])
        calib_split = calibration.calibration
        calib_shape = _sample_shape(calib_split, pre, input_name)
        if not _fits(list(in_dims), calib_shape):
            raise PrepareProblem(
                f"model '{label}' expects input {tuple(in_dims)} per sample but calib_dataset "
                f"'{calibration.spec}' gives {calib_shape} after preprocessing")
        calib_info = {**calibration.describe(), "split_used": "calibration"}
    else:
        calib_split = evaluation.calibration
        whole = evaluation.describe()
        calib_info = {"source": "the evaluation data set", "split_used": "calibration",
                      **{k: whole[k] for k in ("name", "spec", "n_calibration", "fingerprint") if k in whole}}
    if len(calib_split) == 0:
        raise PrepareProblem(f"no calibration images in '{calib_info.get('spec')}'")
    dataset_info = evaluation.describe()
    idx = _eval_indices(split, int(job["eval_samples"]))
    labels = np.asarray(split.labels)[idx]

    _stage("reference")
    out_name, out_dims, out_type = outputs[0]
    reference_path = None
    per_sample: list[Any] = list(out_dims)
    float_out = out_type in FLOAT_TYPES
    if importlib.util.find_spec("onnxruntime") is not None:
        key = hashlib.sha256(json.dumps(["v2", fp32.sha256, dataset_info, pre.to_dict(), int(job["eval_samples"])],
                                        sort_keys=True, default=str).encode()).hexdigest()[:20]
        path = Path(job["reference_dir"]) / f"{key}.npy"
        values = _reference(fp32.path, split, pre, idx, path, input_name)
        if values.dtype.kind == "f":
            bad = ~np.all(np.isfinite(values.reshape(len(values), -1)), axis=1)
            if bad.any():
                raise PrepareProblem(f"the FP32 model gives non-finite outputs (NaN/inf) for {int(bad.sum())} of "
                                     f"{len(values)} evaluated images: accuracy and agreement cannot be measured")
        per_sample, float_out = [int(d) for d in values.shape[1:]], values.dtype.kind == "f"
        reference_path = str(path)
    plan = accuracy_plan(out_name, per_sample, float_out, source, labels)
    restrict = restricted_classes(job["dataset"], evaluation)
    if restrict is not None and plan["top_k"]:
        if plan["num_classes"] is not None and max(restrict) >= plan["num_classes"]:
            raise PrepareProblem(f"restrict_outputs: class {max(restrict)} is not one of the model's "
                                 f"{plan['num_classes']} outputs")
        plan["restrict"] = restrict
        dataset_info["restrict_outputs"] = restrict
    if default_data and not random and plan["num_classes"] != evaluation.num_classes:
        raise PrepareProblem(_no_dataset_advice(label, model_chw, plan["num_classes"], evaluation, split))
    labels_found, counts = np.unique(np.asarray(calib_split.labels), return_counts=True)
    return {"fp32": artifact_dict(fp32), "dataset_info": dataset_info, "calibration_info": calib_info,
            "reference": reference_path, "accuracy": plan, "input_name": input_name,
            "default_data": default_data,
            # peak resident memory (MiB) of the export child (None: no export) and of this process
            "peak_rss_mb": {**peaks, "preparation": round(peak_rss_mb(), 1)},
            # images per label of the calibration split: how many a default calib_samples can take
            "calib_label_counts": {str(int(c)): int(n) for c, n in zip(labels_found, counts, strict=True)}}


def accuracy_plan(out_name: str, per_sample: list[Any], float_out: bool, source: Any,
                  labels: np.ndarray) -> dict[str, Any]:
    """Whether top-1/top-5 apply to this model on these labels, and if not, one line saying why.

    Top-k applies when the weights are not random, the first output is (N, classes) logits-like
    (floating point, at most one axis that is not 1) and every evaluated label is a valid class
    index; a data set with fewer classes than the model (a subset) is fine. ``num_classes``
    overrides the class count read from the output, but cannot exceed the output's width.
    """
    known = all(isinstance(d, int) for d in per_sample)
    width = int(np.prod(per_sample)) if known else None
    declared = source.num_classes
    if declared is not None and width is not None and declared > width:
        raise PrepareProblem(f"num_classes = {declared} but the model's first output '{out_name}' has only "
                             f"{width} values per sample")
    num_classes = declared if declared is not None else width
    plan: dict[str, Any] = {"num_classes": num_classes, "top_k": False, "note": ""}
    non_unit = [d for d in per_sample if d != 1]
    shape = f"(N, {', '.join(str(d) for d in per_sample)})" if per_sample else "(N,)"
    lo = int(labels.min()) if labels.size else 0
    hi = int(labels.max()) if labels.size else 0
    if source.is_random:
        plan["note"] = "random-init weights: top-1 is not meaningful (see agreement_top1 with FP32)"
    elif not float_out:
        plan["note"] = (f"the first output '{out_name}' is not floating point, so not logits: "
                        f"top-1 not computed (agreement with FP32 is)")
    elif len(non_unit) > 1:
        plan["note"] = (f"the first output '{out_name}' has shape {shape}, not (N, classes) logits: "
                        f"top-1 not computed (agreement with FP32 is)")
    elif num_classes is None:
        plan["note"] = (f"the class count of output '{out_name}' {shape} is unknown without onnxruntime to run "
                        f"it: set num_classes for this model")
    elif lo < 0 or hi >= num_classes:
        plan["note"] = (f"labels {lo}..{hi} fall outside the model's {num_classes} classes: top-1 not computed "
                        f"(check dataset, classes/labels or num_classes)")
    else:
        plan["top_k"] = True
    return plan


def _no_dataset_advice(label: str, model_dims: list[Any], classes: int | None, evaluation: Any, split: Any) -> str:
    what = f"{classes} classes, input {_fmt_shape(model_dims)}" if classes is not None else \
        f"input {_fmt_shape(model_dims)}"
    return (f"model '{label}' ({what}) does not fit the default data {evaluation.spec} "
            f"({evaluation.num_classes} classes, {_fmt_shape(_raw_chw(split))} images) and names no dataset: "
            f"set dataset = \"folder:DIR\" (or idx:DIR, npz:FILE) in its [[models]] table")


def describe_failure(exc: BaseException, stage: str) -> str:
    """One line for a failure: our own problems as they are, anything else with the step it broke."""
    if isinstance(exc, PrepareProblem) or type(exc).__name__ == "DataError":
        return one_line(exc) if type(exc).__name__ == "DataError" else str(exc).strip().splitlines()[0]
    return f"{STAGES.get(stage, stage)} failed: {one_line(exc)}"


def main(argv: list[str] | None = None) -> int:
    # every failure is this model's, in one line naming the step it broke
    return worker_main(prepare, argv, describe=lambda exc: describe_failure(exc, _current["stage"]))


if __name__ == "__main__":
    sys.exit(main())
