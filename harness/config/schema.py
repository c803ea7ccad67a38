"""The sweep's tables, each key declared once: type (the annotation), default, bound and help
(:func:`quantbench.common.fields.setting`). The validator, the ``quantbench run`` flags, ``--dump-config``
and the README's key table (:mod:`.docs`) read these declarations; the quantization keys of a
``[[variants]]`` table are :class:`quantbench.exporters.quantize.QuantSettings`'s own.

Each table's ``validate`` checks every value with :mod:`.validate` (the one generic validator), then the
rules that span keys (``max_iters >= min_iters``).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from quantbench.common.fields import setting
from quantbench.harness.measure.cell import MeasureSettings

from .data_tables import check_data_spec, check_effective_spec, check_preprocess, expand_path, is_onnx_name
from .errors import ConfigError, first_line
from .runtime_options import check_runtime_options
from .toml_io import toml_repr
from .validate import bad, check_fields, check_table, field_names, no_duplicates

MAX_BATCH = 65536
PRECISIONS = ("fp32", "fp16", "int8")
BUILDERS = ("onnx", "trt-calibrate", "prebuilt")
TRT_CALIBRATORS = ("entropy", "minmax")


@dataclass
class RunConfig(MeasureSettings):
    """``[run]``: what to sweep over, plus how long to measure (the :class:`MeasureSettings` fields)."""

    output: str = setting("quantbench-results", flag="--output", help="output directory: results.jsonl, "
                          "report.html, cell logs")
    cache_dir: str = setting("", help="where exported and quantized models are cached",
                             default_text='"": $QUANTBENCH_CACHE or ~/.cache/quantbench')
    runtimes: list[str] = setting(default_factory=lambda: ["auto"], flag="--runtimes",
                                  help="runtime names, or auto for every runtime available here")
    devices: list[str] = setting(default_factory=lambda: ["auto"], flag="--device",
                                 help="devices, e.g. cpu or cuda:0, or auto for every device each runtime sees")
    batch_sizes: list[int] = setting(default_factory=lambda: [1], ge=1, le=MAX_BATCH, flag="--batch-sizes",
                                     help="batch sizes to measure")
    threads: int = setting(0, flag="--threads", help="threads per runtime, unless its [runtime_options] set them",
                           default_text="0: the physical cores")
    timeout_s: float = setting(900.0, gt=0, help="seconds a cell, or a model's preparation, may take before it is "
                               "stopped")
    eval_samples: int = setting(2000, ge=1, flag="--eval-samples", help="evaluation images per model")
    report: bool = setting(True, help="write OUTPUT/report.html (--no-report: false)")
    accuracy_budget_pts: float = setting(1.0, help="the verdict's budget: a variant qualifies unless it loses "
                                         "significantly more top-1 points than this")
    ray: str = setting("", flag="--ray", help="run the cells on a Ray cluster: auto (the cluster this machine "
                       "belongs to) or its address", default_text='"": here')
    targets: list[str] = setting(default_factory=list, flag="--targets", help="Ray resources to run on, e.g. "
                                 "cpu-avx512-vnni, gpu-H100", default_text="[]: every device kind in the cluster")
    cells_per_node: int = setting(1, ge=1, help="cells a Ray node runs at once (1: none shares a node's cores)")

    def validate(self) -> None:
        """Types and ranges of every key, with the key named; raises :class:`ConfigError`."""
        check_fields(self, "run.", "run")
        if not self.output.strip():
            raise ConfigError("run.output is empty: name an output directory", keys="run.output")
        if self.max_iters < self.min_iters:
            raise ConfigError(f"run.max_iters ({self.max_iters}) is below run.min_iters ({self.min_iters})",
                              keys=("run.max_iters", "run.min_iters"))
        if self.max_time_s < self.min_time_s:
            raise ConfigError(f"run.max_time_s ({self.max_time_s:g}) is below run.min_time_s ({self.min_time_s:g}): "
                              "the minimum time could never be met", keys=("run.max_time_s", "run.min_time_s"))
        if not self.batch_sizes:
            raise ConfigError("run.batch_sizes is empty: give at least one batch size, e.g. [1]",
                              keys="run.batch_sizes")
        no_duplicates(self.batch_sizes, "run.batch_sizes", "run.batch_sizes")
        if not self.runtimes:
            raise ConfigError("run.runtimes is empty: name runtimes or use [\"auto\"]", keys="run.runtimes")
        if not self.devices:
            raise ConfigError("run.devices is empty: name devices (e.g. [\"cpu\"]) or use [\"auto\"]",
                              keys="run.devices")
        for name in ("runtimes", "devices"):
            values, keys = getattr(self, name), f"run.{name}"
            if any(not v.strip() for v in values):
                raise ConfigError(f"run.{name} contains an empty name", keys=keys)
            if "auto" in values and len(values) > 1:
                raise ConfigError(f"run.{name}: 'auto' cannot be combined with names", keys=keys)
            no_duplicates(values, f"run.{name}", keys)
        self._validate_fleet()
        if self.runtimes != ["auto"]:
            from quantbench.runtimes import get_runtime_class, list_runtimes

            for name in self.runtimes:
                if name not in list_runtimes():
                    try:
                        get_runtime_class(name)
                    except ValueError as exc:  # UnknownRuntime: names the closest
                        raise ConfigError(f"run.runtimes: {first_line(exc)}", keys="run.runtimes") from None

    def _validate_fleet(self) -> None:
        if self.ray != self.ray.strip() or any(c.isspace() for c in self.ray):
            raise bad("run.", "ray", '"auto", a Ray address (host:port, ray://host:port) or "" (no cluster)', self.ray,
                      "run.ray")
        if any(not t.strip() or t != t.strip() for t in self.targets):
            raise bad("run.", "targets", "a list of Ray resource names (e.g. [\"cpu-avx512-vnni\", \"gpu-H100\"])",
                      self.targets, "run.targets")
        no_duplicates(self.targets, "run.targets", "run.targets")
        if not self.ray and (self.targets or self.cells_per_node != 1):
            name = "targets" if self.targets else "cells_per_node"
            raise ConfigError(f"run.{name} applies to a Ray cluster only: set run.ray (\"auto\" or an address) "
                              "or pass --ray", keys=f"run.{name}")


@dataclass
class ModelConfig:
    """``[[models]]``: a registry name, ``torchvision:NAME``, ``module:pkg.mod:fn`` or a path to .onnx."""

    name: str = setting(help="a registry name (quantbench models), torchvision:NAME, module:pkg.mod:fn (your code, "
                        "run in subprocesses) or an .onnx path", flag="--models")
    weights: str | None = setting(None, flag="--weights", help="a state_dict path, random (explicit random init) or "
                                  "builtin (the model loads its own)", default_text="unset: the registry's")
    dataset: str | dict[str, Any] | None = setting(None, help="data source: fashion-mnist, folder:DIR, idx:DIR, "
                                                   "npz:FILE, digits, or a table {spec, classes, labels, "
                                                   "class_subset, restrict_outputs}",
                                                   default_text="unset: Fashion-MNIST if the model fits it")
    input_shape: list[int] | None = setting(None, help="[channels, height, width]", default_text="unset: the model's",
                                            range_text="3 integers >= 1")
    num_classes: int | None = setting(None, ge=1, help="output classes", default_text="unset: the output width")
    preprocess: dict[str, Any] | None = setting(None, help="a table merged over the model's preprocessing defaults "
                                                "(resize, resize_shorter, crop, interpolation, channels, mean, std, "
                                                "scale, layout)", default_text="unset: the model's")
    eval_samples: int | None = setting(None, ge=1, help="evaluation images of this model",
                                       default_text="unset: run.eval_samples")
    label: str | None = setting(None, help="the model's name in results", default_text="unset: name")
    calib_dataset: str | dict[str, Any] | None = setting(None, help="a separate calibration data source",
                                                         default_text="unset: the dataset's calibration split")
    classes: list[str] | None = setting(None, help="class names in output-index order (image folders)",
                                        default_text="unset")
    labels: str | None = setting(None, help="file with one class name per line, line number = output index",
                                 default_text="unset")

    def data_spec(self, spec: Any) -> Any:
        """The data source this model reads for ``spec`` (its dataset, its calib_dataset or the registry's
        default): the model-level ``classes``/``labels`` join it (a table gains them as keys).
        Raises :class:`ConfigError` when the model and its data table both give them."""
        extra: dict[str, Any] = {}
        if self.classes is not None:
            extra["classes"] = list(self.classes)
        if self.labels is not None:
            extra["labels"] = self.labels
        if not extra:
            return spec
        if isinstance(spec, dict):
            inner = sorted(k for k in ("classes", "labels") if k in spec)
            if inner:
                raise ConfigError(f"model '{self.name}': {' and '.join(extra)} given in [[models]] and "
                                  f"{' and '.join(inner)} in its data table {toml_repr(spec)}: give them in one "
                                  "place (the table's apply to that data source only)", keys="models.classes")
            return {**spec, **extra}
        return {"spec": spec, **extra}

    def resolve_paths(self, base: str | os.PathLike) -> None:
        """Make every path this table names absolute against ``base`` (a TOML file's folder, or the
        caller's working directory for API/CLI values): an ``.onnx`` model, weights, labels and the
        data sources. Idempotent; values of the wrong type are left for :meth:`validate`."""
        from quantbench.calibration_data import absolute_path, absolute_spec

        if isinstance(self.name, str) and is_onnx_name(self.name):
            self.name = absolute_path(self.name, base)
        if isinstance(self.weights, str) and self.weights not in ("random", "builtin"):
            self.weights = absolute_path(self.weights, base)
        if isinstance(self.labels, str):
            self.labels = absolute_path(self.labels, base)
        self.dataset = absolute_spec(self.dataset, base)
        self.calib_dataset = absolute_spec(self.calib_dataset, base)

    def validate(self, where: str = "") -> None:
        """Types and ranges of every key; paths that must exist do. Raises :class:`ConfigError`."""
        if not isinstance(self.name, str) or not self.name.strip():
            raise bad(where or "model ", "name", "a non-empty string", self.name, "models.name")
        where = f"model '{self.name}': "
        check_fields(self, where, "models")
        if self.input_shape is not None and (len(self.input_shape) != 3 or min(self.input_shape) < 1):
            raise bad(where, "input_shape", "[channels, height, width] (3 integers >= 1)", self.input_shape,
                      "models.input_shape")
        for name in ("label", "weights", "labels"):
            if getattr(self, name) is not None and not getattr(self, name).strip():
                raise ConfigError(f"{where}{name} is empty", keys=f"models.{name}")
        if self.weights is not None and self.weights not in ("random", "builtin"):
            if not expand_path(self.weights).is_file():
                raise ConfigError(f"{where}weights file not found: {self.weights} "
                                  "(a state_dict path, 'random' or 'builtin')", keys="models.weights")
        if self.labels is not None and not expand_path(self.labels).is_file():
            raise ConfigError(f"{where}labels file not found: {self.labels}", keys="models.labels")
        for name in ("dataset", "calib_dataset"):
            check_data_spec(getattr(self, name), name, where)
            if getattr(self, name) is not None:
                check_effective_spec(self.data_spec(getattr(self, name)), name, where)
        if self.preprocess is not None:
            check_preprocess(self.preprocess, where)


def quant_keys() -> set[str]:
    """The quantization keys a ``[[variants]]`` table may hold (the fields of ``QuantSettings``)."""
    from quantbench.exporters.quantize import QuantSettings

    return field_names(QuantSettings)


def parse_quant_settings(quant: dict[str, Any], name: str) -> Any:
    """``quant`` (a variant's quantization keys) as a :class:`QuantSettings`: the keys, types and lower bounds
    its fields declare, then its own rules across keys; every problem a :class:`ConfigError` naming the variant."""
    from quantbench.exporters.quantize import QuantSettings

    where = f"variant '{name}': "
    if not isinstance(quant, dict):
        raise bad(where, "quant", "a table", quant, "variants.quant")
    check_table(quant, QuantSettings, f"variant '{name}'", where, "variants")
    try:
        return QuantSettings.from_dict(quant)
    except (ValueError, TypeError) as exc:  # a rule across keys (QuantSettings.__post_init__)
        raise ConfigError(f"{where}{first_line(exc)}", keys="variants.quant") from None


@dataclass
class VariantConfig:
    """``[[variants]]``: fp32, fp16, or int8 with quantization settings (the keys of
    :class:`~quantbench.exporters.quantize.QuantSettings`), or a prebuilt artifact of the same model
    (``onnx = "qat.onnx"``, e.g. a QAT export; builder "prebuilt").

    ``quant`` holds the quantization keys as the table gave them (they identify the variant's cells);
    ``settings`` is their typed, validated :class:`QuantSettings`, parsed once by :meth:`validate` and
    handed as it is to the exporters and, serialised, to every subprocess.
    """

    name: str = setting(help="the variant's name in results (a swept table's expansions add [key=value,...])")
    precision: str = setting("fp32", help="fp32, fp16 or int8", default_text="int8 when quantization keys are given")
    builder: str = setting("onnx", help="onnx (exported and quantized here), trt-calibrate (TensorRT calibrates) "
                           "or prebuilt (your onnx file)", default_text="prebuilt when onnx is given")
    calibrator: str | None = setting(None, help="builder = trt-calibrate: entropy or minmax", default_text="unset")
    quant: dict[str, Any] = field(default_factory=dict)
    onnx: str | None = setting(None, help="builder = prebuilt: the variant's ONNX file (same input/output as the "
                               "model, e.g. a QAT export)", default_text="unset")
    # Set on the variants a swept table expands to: the table's name and {swept key: this variant's value}.
    base_name: str | None = None
    sweep: dict[str, Any] = field(default_factory=dict)
    settings: Any = field(default=None, compare=False, repr=False)  # QuantSettings | None, set by validate()

    def identity(self) -> dict[str, Any]:
        """What identifies the variant's cells (not the sweep bookkeeping, which repeats the name and
        settings, nor the typed settings, which repeat ``quant``)."""
        ident = {"name": self.name, "precision": self.precision, "builder": self.builder,
                 "calibrator": self.calibrator, "quant": self.quant}
        if self.onnx is not None:
            ident["onnx"] = self.onnx
        return ident

    def validate(self) -> None:
        """Names, precision, builder and every quantization key; sets :attr:`settings` (int8)."""
        if not isinstance(self.name, str) or not self.name.strip() or any(ord(c) < 32 for c in self.name):
            raise bad("variant ", "name", "a non-empty one-line string", self.name, "variants.name")
        where = f"variant '{self.name}': "
        check_fields(self, where, "variants", {"precision", "builder", "calibrator", "quant", "onnx"})
        self.settings = None
        if self.precision not in PRECISIONS:
            raise ConfigError(f"{where}precision must be fp32, fp16 or int8, not '{self.precision}'",
                              keys="variants.precision")
        if self.builder not in BUILDERS:
            raise ConfigError(f"{where}builder must be 'onnx', 'trt-calibrate' or 'prebuilt', not '{self.builder}'",
                              keys="variants.builder")
        if self.builder == "prebuilt" or self.onnx is not None:
            self._validate_prebuilt(where)
            return
        if self.builder == "trt-calibrate" and self.calibrator not in TRT_CALIBRATORS:
            raise ConfigError(f"{where}trt-calibrate needs calibrator = 'entropy' or 'minmax'",
                              keys="variants.calibrator")
        if self.builder != "trt-calibrate" and self.calibrator is not None:
            raise ConfigError(f"{where}calibrator applies only to builder = 'trt-calibrate'",
                              keys="variants.calibrator")
        if self.quant and self.precision != "int8":
            raise ConfigError(f"{where}quantization keys given for a {self.precision} variant",
                              keys="variants.precision")
        if self.precision == "int8":
            self.settings = parse_quant_settings(self.quant, self.name)

    def quant_settings(self) -> Any:
        """The variant's :class:`QuantSettings` (int8 only), parsed once; wrong keys, types or ranges raise
        :class:`ConfigError`."""
        if self.settings is None:
            self.settings = parse_quant_settings(self.quant, self.name)
        return self.settings

    def resolve_paths(self, base: str | os.PathLike) -> None:
        """A prebuilt variant's ``onnx`` file made absolute against ``base`` (see ModelConfig.resolve_paths)."""
        from quantbench.calibration_data import absolute_path

        if isinstance(self.onnx, str):
            self.onnx = absolute_path(self.onnx, base)

    def _validate_prebuilt(self, where: str) -> None:
        if self.onnx is None or self.builder != "prebuilt":
            raise ConfigError(f"{where}builder = 'prebuilt' goes with onnx = \"FILE\" (the variant's ONNX file)",
                              keys=("variants.builder", "variants.onnx"))
        if not self.onnx.strip():
            raise ConfigError(f"{where}onnx is empty", keys="variants.onnx")
        if self.precision not in ("int8", "fp16"):
            raise ConfigError(f"{where}a prebuilt onnx variant needs precision = 'int8' or 'fp16' (what the file "
                              f"holds), not '{self.precision}'", keys="variants.precision")
        if self.quant or self.calibrator is not None:
            name = next(iter(self.quant), "calibrator")
            raise ConfigError(f"{where}{name} does not apply to a prebuilt onnx file (it is used as it is)",
                              keys=f"variants.{name}")
        if not expand_path(self.onnx).is_file():
            raise ConfigError(f"{where}onnx file not found: {self.onnx}", keys="variants.onnx")

    def to_table(self) -> dict[str, Any]:
        """The ``[[variants]]`` table that parses back to this variant: a swept one as its table with one
        value per swept key (the same name and sweep)."""
        d: dict[str, Any] = {"name": self.base_name or self.name, "precision": self.precision}
        if self.builder != "onnx":
            d["builder"] = self.builder
        if self.calibrator:
            d["calibrator"] = self.calibrator
        if self.onnx is not None:
            d["onnx"] = self.onnx
        d.update(self.quant)
        d.update({k: [x] for k, x in self.sweep.items()})
        return d


@dataclass
class SweepConfig:
    """The whole sweep: run settings, models, variants and per-runtime options."""

    run: RunConfig
    models: list[ModelConfig]
    variants: list[VariantConfig]
    runtime_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = "<embedded default>"

    def resolve_paths(self, base: str | os.PathLike) -> None:
        """Every path the sweep reads, made absolute against ``base`` once (so every subprocess, whatever
        its working directory, opens the same files). ``run.output`` and ``run.cache_dir`` (what it
        writes) stay relative to the working directory, like ``--output``."""
        for m in self.models:
            m.resolve_paths(base)
        for v in self.variants:
            v.resolve_paths(base)

    def validate(self) -> None:
        """Check every value (again after overrides); raises :class:`ConfigError` naming the key."""
        self.run.validate()
        if not self.models:
            raise ConfigError("config has no [[models]]")
        if not self.variants:
            raise ConfigError("config has no [[variants]]")
        for i, m in enumerate(self.models):
            m.validate(f"models[{i}].")
        shown = [m.label or m.name for m in self.models]
        for i, name in enumerate(shown):
            if name in shown[:i]:
                raise ConfigError(f"models[{shown.index(name)}] and models[{i}] are both shown as '{name}': "
                                  "give one a distinct label", keys="models.label")
        for v in self.variants:
            v.validate()
        names = [v.name for v in self.variants]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ConfigError(f"duplicate variant name(s): {', '.join(sorted(dupes))}", keys="variants.name")
        check_runtime_options(self.runtime_options)

    def to_dict(self) -> dict[str, Any]:
        """The config as a TOML-shaped dict (every ``[run]`` key; models without unset keys)."""
        return {"run": asdict(self.run),
                "models": [{k: v for k, v in asdict(m).items() if v is not None} for m in self.models],
                "variants": [v.to_table() for v in self.variants],
                "runtime_options": self.runtime_options}
