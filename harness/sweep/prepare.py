"""Prepare a sweep's models: resolve, export, check against their data, FP32 reference, variant artifacts.

Everything here happens once per model before any cell runs; a problem fails that model's cells
(with the reason, reported once), never the sweep. Export, the data and shape checks and the FP32
reference run the user's code and a runtime, so they run in a contained subprocess
(:mod:`quantbench.harness.sweep.prepare_worker`) under ``run.timeout_s``: a segfault or a hang there
fails that model only.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantbench.harness.config.schema import ConfigError, ModelConfig, SweepConfig, VariantConfig, first_line, toml_repr

DataSpec = Any  # "fashion-mnist", "folder:DIR", … or {"spec": ..., "classes": [...], "labels": FILE}


@dataclass
class PreparedModel:
    """A model resolved, exported and checked against its data, with its variants' artifacts."""

    config: ModelConfig
    source: Any  # exporters.registry.ModelSource
    label: str
    dataset: DataSpec  # what it is evaluated on
    preprocess: dict[str, Any]
    eval_samples: int
    calib_data: DataSpec = None  # what it is calibrated on (its own calib_dataset, else ``dataset``)
    dataset_named: bool = True  # False: no dataset in its [[models]] table, the registry's default is used
    timeout_s: float | None = None  # for the preparation subprocess (run.timeout_s)
    # num_classes, top_k (bool: top-1/top-5 apply), note (why not); see prepare_worker.accuracy_plan
    accuracy: dict[str, Any] = field(default_factory=lambda: {"num_classes": None, "top_k": False, "note": ""})
    fp32: Any = None  # BuiltArtifact
    error: str = ""
    artifacts: dict[str, Any] = field(default_factory=dict)  # variant name -> BuiltArtifact
    artifact_errors: dict[str, str] = field(default_factory=dict)
    identical: dict[str, str] = field(default_factory=dict)
    reference: str | None = None
    dataset_info: dict[str, Any] = field(default_factory=dict)  # describe() of both sources, for rows
    calib_counts: dict[str, int] = field(default_factory=dict)  # calibration images per label (str)

    @property
    def labels_meaningful(self) -> bool:
        """Whether top-1/top-5 are computed for this model's cells."""
        return bool(self.accuracy.get("top_k"))


def cache_dir(cfg: SweepConfig) -> Path:
    """Where artifacts and reference outputs are cached."""
    if cfg.run.cache_dir:
        return Path(cfg.run.cache_dir).expanduser().absolute()
    return Path(os.environ.get("QUANTBENCH_CACHE", Path.home() / ".cache" / "quantbench")).expanduser().absolute()


def data_spec(spec: DataSpec, m: ModelConfig) -> DataSpec:
    """The data source spec for a model: a string, or a dict when its ``classes``/``labels`` travel with it."""
    return m.data_spec(spec)


def resolve_models(cfg: SweepConfig) -> list[PreparedModel]:
    """Resolve every model name (unknown names are a config error, raised before anything runs)."""
    from quantbench.calibration_data import Preprocess, absolute_spec
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
        _check_preprocess(source.preprocess, label, m.preprocess is not None)
        # The registry's default (e.g. folder:$CIFAR10_DIR) too: a relative value means the caller's folder.
        dataset = absolute_spec(data_spec(source.dataset, m), Path.cwd())
        prepared.append(PreparedModel(
            config=m, source=source, label=label, dataset=dataset, preprocess=dict(source.preprocess),
            eval_samples=m.eval_samples if m.eval_samples is not None else cfg.run.eval_samples,
            calib_data=data_spec(m.calib_dataset, m) if m.calib_dataset else dataset,
            dataset_named=m.dataset is not None, timeout_s=cfg.run.timeout_s,
            # known now: rows of a model whose preparation fails record it too (prepare_model adds the rest)
            dataset_info={"preprocess": Preprocess.from_dict(source.preprocess).to_dict()}))
    return prepared


def _check_preprocess(table: dict[str, Any], label: str, merged: bool) -> None:
    """The model's whole preprocessing (a partial [[models]] table merged over its defaults) must hold together."""
    from quantbench.calibration_data import DataError, Preprocess

    try:
        Preprocess.from_dict(table)
    except DataError as exc:
        how = (f" (your preprocess table merged over the model's defaults gives {toml_repr(table, 160)})"
               if merged else "")
        raise ConfigError(f"model '{label}': {first_line(exc)}{how}") from None


def model_key(pm: PreparedModel) -> dict[str, Any]:
    """What identifies a model's cells (before anything is built)."""
    key: dict[str, Any] = {"source": pm.source.to_dict(), "label": pm.label, "eval_samples": pm.eval_samples}
    if pm.calib_data != pm.dataset:
        key["calib_data"] = pm.calib_data
    if not isinstance(pm.dataset, str):
        key["data"] = pm.dataset
    return key


def variant_spec(v: VariantConfig, pm: PreparedModel | None = None) -> Any:
    """What the exporters build for ``v``; with ``pm`` (prepared), a default calib_samples fits its data
    (:func:`fit_calibration`)."""
    from quantbench.exporters.artifacts import VariantSpec

    quant = v.quant_settings() if v.precision == "int8" and v.builder == "onnx" else None  # parsed once, typed
    if quant is not None and pm is not None:
        quant = fit_calibration(quant, v, pm)[0]
    return VariantSpec(name=v.name, precision=v.precision, quant=quant, builder=v.builder, calibrator=v.calibrator)


def fit_calibration(qs: Any, v: VariantConfig, pm: PreparedModel) -> tuple[Any, str]:
    """``qs`` with a *default* ``calib_samples`` (not in the variant's table) cut to the calibration
    images there are, and the note that says so ("" when nothing changed). A ``calib_samples`` the
    user gave is kept: more than the data has fails that variant, naming both numbers."""
    if qs is None or qs.mode == "dynamic" or "calib_samples" in v.quant or not pm.calib_counts:
        return qs, ""
    wanted = set(qs.calib_classes) if qs.calib_classes else None
    pool = sum(n for label, n in pm.calib_counts.items() if wanted is None or int(label) in wanted)
    if pool == 0 or qs.calib_samples <= pool:
        return qs, ""
    note = (f"calib_samples not set: the default {qs.calib_samples} is more than the {pool} calibration images "
            f"there are{' in calib_classes' if wanted else ''}; all {pool} used")
    return dataclasses.replace(qs, calib_samples=pool), note


def prepare_model(pm: PreparedModel, cache: Path, log: Callable[[str], None]) -> None:
    """Export, data/shape checks and FP32 reference of one model, in a contained subprocess.

    Fills ``pm.fp32``, ``pm.dataset_info``, ``pm.reference`` and ``pm.accuracy``; raises ValueError
    (one line) when the model cannot be prepared.
    """
    from quantbench.calibration_data import Preprocess
    from quantbench.common.progress import labelled
    from quantbench.common.worker_protocol import run_worker
    from quantbench.exporters.artifacts import BuiltArtifact
    from quantbench.harness.sweep.prepare_worker import STAGES

    job = {"source": pm.source.to_dict(), "label": pm.label, "store": str(cache / "artifacts"),
           "reference_dir": str(cache / "reference"), "dataset": pm.dataset, "dataset_named": pm.dataset_named,
           "calib_dataset": pm.calib_data if pm.calib_data != pm.dataset else None,
           "preprocess": pm.preprocess, "eval_samples": pm.eval_samples}
    (cache / "artifacts").mkdir(parents=True, exist_ok=True)
    workdir = cache / "prepare" / f"{os.getpid()}-{os.urandom(4).hex()}"
    with labelled(pm.label):  # the worker's progress events name the model
        outcome = run_worker("quantbench.harness.sweep.prepare_worker", job, timeout_s=pm.timeout_s,
                             log_path=workdir / "prepare.log", job_path=workdir / "job.json",
                             out_path=workdir / "out.json")
    if outcome.error:  # the worker's own line says what and where
        raise ValueError(outcome.error)
    if not outcome.ok:
        stage = outcome.stage()
        raise ValueError(outcome.failure(f"preparation ({STAGES.get(stage, stage) if stage else 'start-up'})"))
    shutil.rmtree(workdir, ignore_errors=True)
    result: dict[str, Any] = outcome.result
    fp32 = dict(result["fp32"])
    for key in ("path", "reference_path"):
        if fp32.get(key):
            fp32[key] = Path(fp32[key])
    pm.fp32 = BuiltArtifact(**fp32)
    pm.reference = result["reference"]
    pm.accuracy = dict(result["accuracy"])
    # What the data looked like to the model: every row records the resolved preprocessing.
    resolved = Preprocess.from_dict(pm.preprocess).to_dict()
    pm.dataset_info = {**result["dataset_info"], "preprocess": resolved, "calibration": result["calibration_info"]}
    pm.calib_counts = dict(result.get("calib_label_counts") or {})
    _log_data_rules(pm, log)
    if result.get("default_data"):
        log(f"model {pm.label}: no dataset named; evaluating on the default {pm.dataset_info.get('spec')} "
            f"(it fits the model's input and classes)")


def _log_data_rules(pm: PreparedModel, log: Callable[[str], None]) -> None:
    """Once per model: how class folders became class indices, and how 16-bit pixels were scaled."""
    said: set[str] = set()
    for what, info in (("", pm.dataset_info), ("calibration data: ", pm.dataset_info.get("calibration") or {})):
        for key, text in (("class_index_rule", "class index from {}"), ("pixel_scaling", "{}")):
            if info.get(key) and info[key] not in said:
                said.add(info[key])
                log(f"model {pm.label}: {what}{text.format(info[key])}")


def prepare_artifacts(pm: PreparedModel, variants: list[VariantConfig], cache: Path,
                      log: Callable[[str], None]) -> None:
    """Prepare the model (subprocess), then build each variant (errors kept per variant, reported once)."""
    from quantbench.common.progress import labelled
    from quantbench.exporters.artifacts import ArtifactStore, identical_groups

    try:
        prepare_model(pm, cache, log)
    except Exception as exc:  # noqa: BLE001 - any failure here fails this model's cells, in one line
        pm.error = _one_line(exc)
        log(f"error: model {pm.label}: {pm.error}")
        return
    note = pm.accuracy.get("note")
    if note and not pm.source.is_random:  # random weights get their own note from the CLI
        log(f"warning: model {pm.label}: {note}")
    store = ArtifactStore(cache / "artifacts")
    for v in variants:
        try:
            if v.builder == "trt-calibrate" or v.precision == "fp32":
                pm.artifacts[v.name] = pm.fp32
                continue
            # a search, not a build setting (harness/studies/mixed_precision.py)
            if v.quant.get("accuracy_budget") is not None:
                raise ValueError("accuracy_budget is searched by `quantbench sensitivity CONFIG --variant "
                                 f"{v.name}`; it prints the exclude_nodes that meet the budget, for a variant here")
            if v.builder == "prebuilt":  # the user's file (e.g. a QAT export), checked against the model
                pm.artifacts[v.name] = store.prebuilt(v.onnx, v.name, v.precision, pm.fp32)
                continue
            log(f"building {pm.label}/{v.name} …")
            spec = variant_spec(v, pm)
            with labelled(f"{pm.label}/{v.name}"):
                built = store.build(pm.source, spec, pm.calib_data, pm.preprocess, fp32=pm.fp32, timeout_s=pm.timeout_s)
            fit_note = fit_calibration(variant_spec(v).quant, v, pm)[1]
            if fit_note:  # said once here and kept in the rows (artifact_notes)
                log(f"warning: {pm.label}/{v.name}: {fit_note}")
                built = dataclasses.replace(built, notes=[*built.notes, fit_note])
            pm.artifacts[v.name] = built
            if built.quant_time_s is not None:
                cal = built.calibration or {}
                floor = (f" (calibration {cal['time_s']:.1f} s = {cal['time_ratio']:.2f} × its FP32 floor)"
                         if cal.get("time_ratio") and cal.get("time_s") is not None else "")
                log(f"  {v.name}: {built.size_bytes / 1e3:.0f} kB, quantized in {built.quant_time_s:.1f} s{floor}, "
                    f"peak {built.quant_peak_mem_mb or 0:.0f} MB")
        except Exception as exc:  # noqa: BLE001 - a failed build fails this variant's cells, in one line
            pm.artifact_errors[v.name] = _one_line(exc)
            log(f"error: {pm.label}/{v.name}: {pm.artifact_errors[v.name]}")
    onnx_built = {n: a for n, a in pm.artifacts.items()
                  if next(v for v in variants if v.name == n).builder in ("onnx", "prebuilt")}
    pm.identical = identical_groups(list(onnx_built.values()))
    for name, same in pm.identical.items():
        log(f"warning: {pm.label}/{name} is byte-identical to {same}: its rows measure the same model")


def _one_line(exc: BaseException) -> str:
    from quantbench.common.worker_protocol import one_line

    return one_line(exc)
