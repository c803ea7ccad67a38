"""Prepare a sweep's models: resolve, export, check against their data, FP32 reference, variant artifacts.

Everything here happens once per model before any cell runs; a problem fails that model's cells
(with the reason, reported once), never the sweep.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .config import ConfigError, ModelConfig, SweepConfig, VariantConfig


@dataclass
class PreparedModel:
    """A model resolved, exported and checked against its data, with its variants' artifacts."""

    config: ModelConfig
    source: Any  # exporters.registry.ModelSource
    label: str
    dataset: str
    preprocess: dict[str, Any]
    eval_samples: int
    labels_meaningful: bool
    fp32: Any = None  # BuiltArtifact
    error: str = ""
    artifacts: dict[str, Any] = field(default_factory=dict)  # variant name -> BuiltArtifact
    artifact_errors: dict[str, str] = field(default_factory=dict)
    identical: dict[str, str] = field(default_factory=dict)
    reference: str | None = None
    dataset_info: dict[str, Any] = field(default_factory=dict)


def cache_dir(cfg: SweepConfig) -> Path:
    """Where artifacts and reference outputs are cached."""
    if cfg.run.cache_dir:
        return Path(cfg.run.cache_dir).expanduser()
    return Path(os.environ.get("QUANTBENCH_CACHE", Path.home() / ".cache" / "quantbench"))


def resolve_models(cfg: SweepConfig) -> list[PreparedModel]:
    """Resolve every model name (unknown names are a config error, raised before anything runs)."""
    from quantbench.exporters.registry import resolve_model

    prepared = []
    for m in cfg.models:
        overrides: dict[str, Any] = {}
        for key in ("weights", "dataset", "num_classes", "preprocess"):
            if getattr(m, key) is not None:
                overrides[key] = getattr(m, key)
        if m.input_shape is not None:
            overrides["input_shape"] = tuple(m.input_shape)
        try:
            source = resolve_model(m.name, **overrides)
        except (ValueError, FileNotFoundError) as exc:
            raise ConfigError(str(exc).splitlines()[0]) from None
        label = m.label or source.name
        prepared.append(PreparedModel(
            config=m, source=source, label=label, dataset=source.dataset,
            preprocess=dict(source.preprocess), eval_samples=m.eval_samples or cfg.run.eval_samples,
            labels_meaningful=True))
    return prepared


def model_key(pm: PreparedModel) -> dict[str, Any]:
    return {"source": pm.source.to_dict(), "label": pm.label, "eval_samples": pm.eval_samples}


def variant_spec(v: VariantConfig) -> Any:
    from quantbench.exporters.artifacts import VariantSpec
    from quantbench.exporters.quantize import QuantSettings

    quant = QuantSettings.from_dict(v.quant) if v.precision == "int8" and v.builder == "onnx" else None
    return VariantSpec(name=v.name, precision=v.precision, quant=quant, builder=v.builder, calibrator=v.calibrator)


def _check_shapes(pm: PreparedModel) -> None:
    """The model's input must match the data after preprocessing; say how to fix it if not."""
    from quantbench.calibration_data import Preprocess, open_source
    from quantbench.exporters.artifacts import onnx_input_info

    source = open_source(pm.dataset)
    pm.dataset_info = source.describe()
    pre = Preprocess.from_dict(pm.preprocess)
    data_shape = tuple(pre.output_shape(tuple(source.evaluation.image_shape)))
    name, shape, _ = onnx_input_info(pm.fp32.path)
    fixed = [d for d in shape]
    if len(fixed) != len(data_shape) or any(isinstance(a, int) and a > 0 and a != b for a, b in zip(fixed, data_shape)):
        raise ValueError(
            f"model '{pm.label}' expects input {tuple(shape)} per sample but dataset '{pm.dataset}' gives "
            f"{data_shape} after preprocessing: set preprocess (resize, channels) for this model")
    n_out = getattr(pm.source, "num_classes", None)
    pm.labels_meaningful = (not str(pm.fp32.weights).startswith("random")) and n_out == source.num_classes


def _reference_logits(pm: PreparedModel, cache: Path) -> str | None:
    """FP32 outputs on the evaluation set from ONNX Runtime CPU, the reference every row is compared to."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        return None
    from quantbench.calibration_data import BatchReader, Preprocess, open_source

    key = hashlib.sha256(json.dumps([pm.fp32.sha256, pm.dataset_info, pm.preprocess, pm.eval_samples],
                                    sort_keys=True, default=str).encode()).hexdigest()[:20]
    path = cache / "reference" / f"{key}.npy"
    if path.exists():
        return str(path)
    import onnxruntime as ort

    split = open_source(pm.dataset).evaluation
    idx = split.select(min(pm.eval_samples, len(split)), seed=0)
    sess = ort.InferenceSession(str(pm.fp32.path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    reader = BatchReader(split, Preprocess.from_dict(pm.preprocess), idx, 64, name, pad_last=True)
    outs = [sess.run(None, {name: x})[0].reshape(len(x), -1)[:n] for x, _, n in reader]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, np.concatenate(outs).astype(np.float32))
    tmp.replace(path)
    return str(path)


def prepare_artifacts(pm: PreparedModel, variants: list[VariantConfig], cache: Path,
                      log: Callable[[str], None]) -> None:
    """Export the fp32 model, check it against its data, and build each variant (errors kept per variant)."""
    from quantbench.exporters.artifacts import ArtifactStore, identical_groups

    store = ArtifactStore(cache / "artifacts")
    try:
        pm.fp32 = store.fp32(pm.source)
        _check_shapes(pm)
        pm.reference = _reference_logits(pm, cache)
    except Exception as exc:  # noqa: BLE001 - any failure here fails this model's cells, in one line
        pm.error = _one_line(exc)
        log(f"error: model {pm.label}: {pm.error}")
        return
    for v in variants:
        try:
            if v.builder == "trt-calibrate" or v.precision == "fp32":
                pm.artifacts[v.name] = pm.fp32
                continue
            log(f"building {pm.label}/{v.name} …")
            built = store.build(pm.source, variant_spec(v), pm.dataset, pm.preprocess)
            pm.artifacts[v.name] = built
            if built.quant_time_s is not None:
                log(f"  {v.name}: {built.size_bytes / 1e3:.0f} kB, quantized in {built.quant_time_s:.1f} s, "
                    f"peak {built.quant_peak_mem_mb or 0:.0f} MB")
        except Exception as exc:  # noqa: BLE001
            pm.artifact_errors[v.name] = _one_line(exc)
            log(f"error: {pm.label}/{v.name}: {pm.artifact_errors[v.name]}")
    onnx_built = {n: a for n, a in pm.artifacts.items()
                  if next(v for v in variants if v.name == n).builder == "onnx"}
    pm.identical = identical_groups(list(onnx_built.values()))
    for name, same in pm.identical.items():
        log(f"warning: {pm.label}/{name} is byte-identical to {same}: its rows measure the same model")


def _one_line(exc: BaseException) -> str:
    from .worker import one_line

    return one_line(exc)


