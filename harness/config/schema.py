"""Sweep configuration: a TOML file (or the embedded default) validated into dataclasses.

Every table is checked for unknown keys, with the closest valid key suggested, so a typo never
silently falls back to a default.
"""
from __future__ import annotations

import difflib
import itertools
import json
import math
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from quantbench.harness.measure.cell import MeasureSettings

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


class ConfigError(ValueError):
    """A configuration problem, described in one line."""


# ---- value checks ------------------------------------------------------------------------------
def toml_repr(value: Any, limit: int = 60) -> str:
    """How ``value`` reads in TOML (``"false"`` vs ``false``), shortened, for error messages."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, float) and not math.isfinite(value):
        text = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(toml_repr(v, limit) for v in value) + "]"
    elif isinstance(value, dict):
        text = "{ " + ", ".join(f"{k} = {toml_repr(v, limit)}" for k, v in value.items()) + " }"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def conforms(value: Any, hint: Any) -> bool:
    """Whether a TOML value fits a dataclass field's type hint (lists stand for tuples; floats are finite)."""
    if hint is Any:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return _is_number(value) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(conforms(v, a) for v, a in zip(value, args))
        return all(conforms(v, args[0] if args else Any) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return isinstance(value, hint) if isinstance(hint, type) else True


_SINGULAR = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
_PLURAL = {bool: "true/false values", int: "integers", float: "finite numbers", str: "strings"}


def describe(hint: Any) -> str:
    """``list[int]`` -> "a list of integers", for messages."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) if parts else "nothing"
    if hint in _SINGULAR:
        return _SINGULAR[hint]
    if origin in (list, tuple) or hint in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} {_PLURAL.get(args[0], 'values')}"
        return f"a list of {_PLURAL.get(args[0], 'values')}" if args else "a list"
    if origin is dict or hint is dict:
        return "a table"
    return getattr(hint, "__name__", str(hint))


def _bad(where: str, key: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{where}{key} must be {expected}, not {toml_repr(value)}")


def check_fields(obj: Any, where: str, minimum: dict[str, float] | None = None,
                 positive: set[str] = frozenset(), keys: set[str] | None = None) -> None:
    """Check each dataclass field of ``obj`` against its type hint and a lower bound.

    Numbers must be >= 0 unless ``minimum`` gives another bound (or the key is in ``positive``:
    > 0); ``where`` prefixes the key in messages (``"run."``, ``"model 'x': "``).
    """
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        if keys is not None and f.name not in keys:
            continue
        value = getattr(obj, f.name)
        check_value(value, hints[f.name], f.name, where, (minimum or {}).get(f.name, 0), f.name in positive)


def check_value(value: Any, hint: Any, key: str, where: str, low: float = 0, strict: bool = False) -> None:
    """One value against a type hint and a lower bound (numbers, and every number in a list)."""
    if not conforms(value, hint):
        raise _bad(where, key, describe(hint), value)
    is_list = isinstance(value, (list, tuple))
    for v in (value if is_list else [value]):
        if _is_number(v) and (v < low or (strict and v <= low)):
            whole = "int" in describe(hint).split()[-1] or describe(hint).startswith("an integer")
            kind = ("a list of integers" if whole else "a list of numbers") if is_list else (
                "an integer" if whole else "a number")
            raise _bad(where, key, f"{kind} {'>' if strict else '>='} {low:g}", value)


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (valid: {', '.join(sorted(allowed))})"
            raise ConfigError(f"unknown key '{key}' in {where}{hint}")


def _field_names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


def _no_duplicates(values: list[Any], what: str) -> None:
    seen: set[Any] = set()
    for v in values:
        marker = json.dumps(v, sort_keys=True, default=str)
        if marker in seen:
            raise ConfigError(f"{what} lists {toml_repr(v)} twice")
        seen.add(marker)


def _expand_path(path: str) -> Path:
    return Path(os.path.expandvars(path)).expanduser()


# ---- tables ------------------------------------------------------------------------------------
# Lower bounds of [run] numbers (all others: >= 0); POSITIVE ones must be > 0.
RUN_MINIMUM = {"batch_sizes": 1, "min_iters": 1, "max_iters": 1, "io_batches": 1, "interleave_iters": 1, "eval_samples": 1,
               "cells_per_node": 1, "interleave_max_rounds": 1}
RUN_POSITIVE = {"timeout_s", "max_time_s"}
MAX_BATCH = 65536


@dataclass
class RunConfig(MeasureSettings):
    """``[run]``: what to sweep over, plus how long to measure (the :class:`MeasureSettings` fields)."""

    output: str = "quantbench-results"
    cache_dir: str = ""  # "" -> $QUANTBENCH_CACHE or ~/.cache/quantbench
    runtimes: list[str] = field(default_factory=lambda: ["auto"])
    devices: list[str] = field(default_factory=lambda: ["auto"])
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    threads: int = 0  # 0 -> number of CPU cores; applied to every runtime unless overridden
    timeout_s: float = 900.0
    eval_samples: int = 2000
    report: bool = True
    # The verdict's budget: a variant qualifies unless it loses significantly more top-1 points than this.
    accuracy_budget_pts: float = 1.0
    # Fleet (harness.fleet): "" runs here; "auto" or an address runs the cells on that Ray cluster.
    ray: str = ""
    targets: list[str] = field(default_factory=list)  # Ray resources to run on; [] = every device kind found
    cells_per_node: int = 1  # cells a node runs at once (1: none shares a node's cores with another)

    def validate(self) -> None:
        """Types and ranges of every key, with the key named; raises :class:`ConfigError`."""
        check_fields(self, "run.", RUN_MINIMUM, RUN_POSITIVE)
        if not self.output.strip():
            raise ConfigError("run.output is empty: name an output directory")
        if self.max_iters < self.min_iters:
            raise ConfigError(f"run.max_iters ({self.max_iters}) is below run.min_iters ({self.min_iters})")
        if self.max_time_s < self.min_time_s:
            raise ConfigError(f"run.max_time_s ({self.max_time_s:g}) is below run.min_time_s ({self.min_time_s:g}): "
                              "the minimum time could never be met")
        if not self.batch_sizes:
            raise ConfigError("run.batch_sizes is empty: give at least one batch size, e.g. [1]")
        if any(b < 1 or b > MAX_BATCH for b in self.batch_sizes):
            raise _bad("run.", "batch_sizes", f"a list of integers from 1 to {MAX_BATCH}", self.batch_sizes)
        _no_duplicates(self.batch_sizes, "run.batch_sizes")
        if not self.runtimes:
            raise ConfigError("run.runtimes is empty: name runtimes or use [\"auto\"]")
        if not self.devices:
            raise ConfigError("run.devices is empty: name devices (e.g. [\"cpu\"]) or use [\"auto\"]")
        for key in ("runtimes", "devices"):
            values = getattr(self, key)
            if any(not v.strip() for v in values):
                raise ConfigError(f"run.{key} contains an empty name")
            if "auto" in values and len(values) > 1:
                raise ConfigError(f"run.{key}: 'auto' cannot be combined with names")
            _no_duplicates(values, f"run.{key}")
        self._validate_fleet()
        if self.runtimes != ["auto"]:
            from quantbench.runtimes import get_runtime_class, list_runtimes

            for name in self.runtimes:
                if name not in list_runtimes():
                    try:
                        get_runtime_class(name)
                    except ValueError as exc:  # UnknownRuntime: names the closest
                        raise ConfigError(f"run.runtimes: {first_line(exc)}") from None


    def _validate_fleet(self) -> None:
        if self.ray != self.ray.strip() or any(c.isspace() for c in self.ray):
            raise _bad("run.", "ray", '"auto", a Ray address (host:port, ray://host:port) or "" (no cluster)', self.ray)
        if any(not t.strip() or t != t.strip() for t in self.targets):
            raise _bad("run.", "targets", "a list of Ray resource names (e.g. [\"cpu-avx512-vnni\", \"gpu-H100\"])",
                       self.targets)
        _no_duplicates(self.targets, "run.targets")
        if not self.ray and (self.targets or self.cells_per_node != 1):
            key = "targets" if self.targets else "cells_per_node"
            raise ConfigError(f"run.{key} applies to a Ray cluster only: set run.ray (\"auto\" or an address) "
                              "or pass --ray")


@dataclass
class ModelConfig:
    """``[[models]]``: a registry name, ``torchvision:NAME``, ``module:pkg.mod:fn`` or a path to .onnx."""

    name: str
    weights: str | None = None  # a state_dict path, "random" (explicit random init) or "builtin"
    dataset: str | dict[str, Any] | None = None  # a data source spec, or {spec, classes, labels}
    input_shape: list[int] | None = None  # [channels, height, width]
    num_classes: int | None = None
    preprocess: dict[str, Any] | None = None
    eval_samples: int | None = None
    label: str | None = None  # display name in results
    calib_dataset: str | dict[str, Any] | None = None  # a separate calibration source (default: the dataset's calibration split)
    classes: list[str] | None = None  # class names in output-index order (image folders)
    labels: str | None = None  # file with one class name per line, line number = output index

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
                                  "place (the table's apply to that data source only)")
            return {**spec, **extra}
        return {"spec": spec, **extra}

    def resolve_paths(self, base: str | os.PathLike) -> None:
        """Make every path this table names absolute against ``base`` (a TOML file's folder, or the
        caller's working directory for API/CLI values): an ``.onnx`` model, weights, labels and the
        data sources. Idempotent; values of the wrong type are left for :meth:`validate`."""
        from quantbench.calibration_data import absolute_path, absolute_spec

        if isinstance(self.name, str) and _is_onnx_name(self.name):
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
            raise _bad(where or "model ", "name", "a non-empty string", self.name)
        where = f"model '{self.name}': "
        check_fields(self, where, {"eval_samples": 1, "num_classes": 1})
        if self.input_shape is not None and (len(self.input_shape) != 3 or min(self.input_shape) < 1):
            raise _bad(where, "input_shape", "[channels, height, width] (3 integers >= 1)", self.input_shape)
        for key in ("label", "weights", "labels"):
            if getattr(self, key) is not None and not getattr(self, key).strip():
                raise ConfigError(f"{where}{key} is empty")
        if self.weights is not None and self.weights not in ("random", "builtin"):
            wf = _expand_path(self.weights)
            if not wf.is_file():
                raise ConfigError(f"{where}weights file not found: {self.weights} "
                                  "(a state_dict path, 'random' or 'builtin')")
        if self.labels is not None and not _expand_path(self.labels).is_file():
            raise ConfigError(f"{where}labels file not found: {self.labels}")
        for key in ("dataset", "calib_dataset"):
            _check_data_spec(getattr(self, key), key, where)
            if getattr(self, key) is not None:
                _check_effective_spec(self.data_spec(getattr(self, key)), key, where)
        if self.preprocess is not None:
            _check_preprocess(self.preprocess, where)


DATA_SPEC_KEYS = {"spec", "classes", "labels", "class_subset", "restrict_outputs"}


def _is_onnx_name(name: str) -> bool:
    """A model name that is a path to an ONNX file (as ``exporters.registry`` classifies it)."""
    return not name.startswith(("module:", "torchvision:")) and Path(name).suffix == ".onnx"


def _check_data_spec(spec: Any, key: str, where: str) -> None:
    what = f"{where}{key}"
    if spec is None:
        return
    if isinstance(spec, str):
        if not spec.strip():
            raise ConfigError(f"{what} is empty")
        return
    _check_keys(spec, DATA_SPEC_KEYS, f"the {key} table of {where.rstrip(': ')}")
    if not isinstance(spec.get("spec"), str) or not spec["spec"].strip():
        raise ConfigError(f"{what} needs 'spec', a data source such as \"folder:DIR\"")
    if "classes" in spec and not conforms(spec["classes"], list[str]):
        raise _bad(f"{what}.", "classes", "a list of strings", spec["classes"])
    if "labels" in spec and not isinstance(spec["labels"], str):
        raise _bad(f"{what}.", "labels", "a string (a file path)", spec["labels"])
    if "class_subset" in spec and not (conforms(spec["class_subset"], list[int]) and spec["class_subset"]
                                       and all(c >= 0 for c in spec["class_subset"])):
        raise _bad(f"{what}.", "class_subset", "a non-empty list of class indices >= 0", spec["class_subset"])
    if "restrict_outputs" in spec and not isinstance(spec["restrict_outputs"], bool):
        raise _bad(f"{what}.", "restrict_outputs", "true or false", spec["restrict_outputs"])


def _check_effective_spec(spec: Any, key: str, where: str) -> None:
    """The data source a model will open, checked by the data layer's own rules (form, labels file)."""
    from quantbench.calibration_data import DataError, check_spec

    try:
        check_spec(spec)
    except DataError as exc:
        raise ConfigError(f"{where}{key}: {first_line(exc)}") from None


def _check_preprocess(table: dict[str, Any], where: str) -> None:
    """Key by key, with :meth:`Preprocess.check_table` (the one validator; keys left out keep the model's
    defaults, so checks across keys finish when the table is merged, in harness.prepare)."""
    from quantbench.calibration_data import Preprocess

    _check_keys(table, _field_names(Preprocess), f"the preprocess table of {where.rstrip(': ')}")
    try:
        Preprocess.check_table(table)
    except (ValueError, TypeError) as exc:  # DataError is a ValueError
        raise ConfigError(f"{where}{first_line(exc)}") from None


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's text (or its type name)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def quant_keys() -> set[str]:
    """The quantization keys a ``[[variants]]`` table may hold (the fields of ``QuantSettings``)."""
    from quantbench.exporters.quantize import QuantSettings

    return _field_names(QuantSettings)


# Lower bounds of quantization numbers (others: >= 0); num_bins = 0 would silently mean "the default".
QUANT_MINIMUM = {"num_bins": 1, "calib_samples": 1, "calib_batch": 1, "calib_memory_mb": 1}


@dataclass
class VariantConfig:
    """``[[variants]]``: fp32, fp16, or int8 with quantization settings (keys of QuantSettings), or a
    prebuilt artifact of the same model (``onnx = "qat.onnx"``, e.g. a QAT export; builder "prebuilt")."""

    name: str
    precision: str = "fp32"
    builder: str = "onnx"  # "onnx" | "trt-calibrate" | "prebuilt"
    calibrator: str | None = None  # for trt-calibrate: "entropy" | "minmax"
    quant: dict[str, Any] = field(default_factory=dict)
    onnx: str | None = None  # builder = "prebuilt": the variant's ONNX file (same input/output as the model)
    # Set on the variants a swept table expands to: the table's name and {swept key: this variant's value}.
    base_name: str | None = None
    sweep: dict[str, Any] = field(default_factory=dict)

    def identity(self) -> dict[str, Any]:
        """What identifies the variant's cells (the sweep fields repeat the name and settings)."""
        return {k: v for k, v in self.__dict__.items()
                if k not in ("base_name", "sweep") and not (k == "onnx" and v is None)}

    def validate(self) -> None:
        """Names, precision, builder and every quantization key (through ``QuantSettings.from_dict``)."""
        if not isinstance(self.name, str) or not self.name.strip() or any(ord(c) < 32 for c in self.name):
            raise _bad("variant ", "name", "a non-empty one-line string", self.name)
        where = f"variant '{self.name}': "
        check_fields(self, where, keys={"precision", "builder", "calibrator", "quant", "onnx"})
        if self.precision not in ("fp32", "fp16", "int8"):
            raise ConfigError(f"{where}precision must be fp32, fp16 or int8, not '{self.precision}'")
        if self.builder not in ("onnx", "trt-calibrate", "prebuilt"):
            raise ConfigError(f"{where}builder must be 'onnx', 'trt-calibrate' or 'prebuilt', not '{self.builder}'")
        if self.builder == "prebuilt" or self.onnx is not None:
            self._validate_prebuilt(where)
            return
        if self.builder == "trt-calibrate" and self.calibrator not in ("entropy", "minmax"):
            raise ConfigError(f"{where}trt-calibrate needs calibrator = 'entropy' or 'minmax'")
        if self.builder != "trt-calibrate" and self.calibrator is not None:
            raise ConfigError(f"{where}calibrator applies only to builder = 'trt-calibrate'")
        if self.quant and self.precision != "int8":
            raise ConfigError(f"{where}quantization keys given for a {self.precision} variant")
        if self.precision == "int8":
            self.quant_settings()

    def resolve_paths(self, base: str | os.PathLike) -> None:
        """A prebuilt variant's ``onnx`` file made absolute against ``base`` (see ModelConfig.resolve_paths)."""
        from quantbench.calibration_data import absolute_path

        if isinstance(self.onnx, str):
            self.onnx = absolute_path(self.onnx, base)

    def _validate_prebuilt(self, where: str) -> None:
        if self.onnx is None or self.builder != "prebuilt":
            raise ConfigError(f"{where}builder = 'prebuilt' goes with onnx = \"FILE\" (the variant's ONNX file)")
        if not self.onnx.strip():
            raise ConfigError(f"{where}onnx is empty")
        if self.precision not in ("int8", "fp16"):
            raise ConfigError(f"{where}a prebuilt onnx variant needs precision = 'int8' or 'fp16' (what the file "
                              f"holds), not '{self.precision}'")
        if self.quant or self.calibrator is not None:
            key = next(iter(self.quant), "calibrator")
            raise ConfigError(f"{where}{key} does not apply to a prebuilt onnx file (it is used as it is)")
        if not _expand_path(self.onnx).is_file():
            raise ConfigError(f"{where}onnx file not found: {self.onnx}")

    def quant_settings(self) -> Any:
        """The variant's :class:`QuantSettings` (int8 only); wrong keys, types or ranges raise ConfigError."""
        from quantbench.exporters.quantize import QuantSettings

        where = f"variant '{self.name}': "
        _check_keys(self.quant, _field_names(QuantSettings), f"variant '{self.name}'")
        hints = typing.get_type_hints(QuantSettings)
        for key, value in self.quant.items():
            check_value(value, hints[key], key, where, QUANT_MINIMUM.get(key, 0))
        try:
            return QuantSettings.from_dict(self.quant)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where}{first_line(exc)}") from None


def check_runtime_options(options: Any) -> None:
    """``[runtime_options.<runtime>]``: known runtimes and option names; values are scalars or lists
    (swept) of scalars, of the type the runtime declares (``option_types()``) where it declares one."""
    from quantbench.runtimes import get_runtime_class, list_runtimes

    if not isinstance(options, dict) or any(not isinstance(v, dict) for v in options.values()):
        raise ConfigError("[runtime_options] must hold one table per runtime, e.g. [runtime_options.ort-cpu]")
    for name, table in options.items():
        where = f"[runtime_options.{name}]"
        if name not in list_runtimes():
            close = difflib.get_close_matches(name, list_runtimes(), n=1)
            raise ConfigError(f"{where}: unknown runtime" + (f"; did you mean '{close[0]}'?" if close
                                                              else f" (known: {', '.join(list_runtimes())})"))
        try:
            cls = get_runtime_class(name)
        except ImportError:  # a broken adapter is reported when the sweep resolves runtimes
            cls = None
        if cls is not None:
            allowed = set(cls.option_names())
            for key in table:
                if key not in allowed:
                    close = difflib.get_close_matches(key, sorted(allowed), n=1)
                    hint = f"; did you mean '{close[0]}'?" if close else f" (valid: {', '.join(sorted(allowed))})"
                    raise ConfigError(f"unknown option '{key}' in {where}{hint}")
        declared = dict(cls.option_types()) if cls is not None else {}
        for key, value in table.items():
            values = value if isinstance(value, list) else [value]
            if isinstance(value, list):
                if not value:
                    raise ConfigError(f"{where} {key} is an empty list (a list is swept: give at least one value)")
                _no_duplicates(value, f"{where} {key}")
            for v in values:
                if not isinstance(v, (bool, int, float, str)):
                    raise ConfigError(f"{where} {key} must be a string, number, true/false or a list of those "
                                      f"(swept), not {toml_repr(value)}")
                if isinstance(v, float) and not math.isfinite(v):
                    raise _bad(f"{where} ", key, "a finite number", value)
                typ = int if key == "threads" else declared.get(key)
                if typ is not None:
                    check_value(v, typ if not isinstance(typ, tuple) else typing.Union[typ], key, f"{where} ")


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
                                  "give one a distinct label")
        for v in self.variants:
            v.validate()
        names = [v.name for v in self.variants]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ConfigError(f"duplicate variant name(s): {', '.join(sorted(dupes))}")
        check_runtime_options(self.runtime_options)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"run": asdict(self.run)}
        out["models"] = [{k: v for k, v in asdict(m).items() if v is not None} for m in self.models]
        variants = []
        for v in self.variants:
            # A swept variant is written as its table with one value per swept key: it parses back to
            # the same name and sweep.
            d = {"name": v.base_name or v.name, "precision": v.precision}
            if v.builder != "onnx":
                d["builder"] = v.builder
            if v.calibrator:
                d["calibrator"] = v.calibrator
            if v.onnx is not None:
                d["onnx"] = v.onnx
            d.update(v.quant)
            d.update({k: [x] for k, x in v.sweep.items()})
            variants.append(d)
        out["variants"] = variants
        out["runtime_options"] = self.runtime_options
        return out


def _parse_model(raw: Any, i: int) -> ModelConfig:
    where = f"models[{i}]"
    if isinstance(raw, str):
        return ModelConfig(name=raw)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table or a model name, not {toml_repr(raw)}")
    _check_keys(raw, _field_names(ModelConfig), where)
    if "name" not in raw:
        raise ConfigError(f"{where} needs a 'name'")
    return ModelConfig(**raw)


# Quantization keys whose value is itself a list: they are swept only when given a list of lists.
LIST_VALUED_KEYS = ("op_types", "exclude_nodes", "calib_classes")


def sweep_label(value: Any) -> str:
    """A swept value as it reads in a variant name: ``true``, ``64``, ``entropy``, ``Conv+Gemm``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "+".join(sweep_label(v) for v in value) if value else "none"
    return str(value)


def swept_name(name: str, sweep: dict[str, Any]) -> str:
    """``int8[calibration=entropy,calib_samples=64]``: the table's name and its swept values, in the
    table's key order (the form runtime options take, harness.sweep.RuntimeChoice.label)."""
    return f"{name}[{','.join(f'{k}={sweep_label(v)}' for k, v in sweep.items())}]"


def _swept_keys(raw: dict[str, Any], qkeys: set[str], where: str) -> list[str]:
    """Keys of a [[variants]] table whose value is a list of alternatives (checked: non-empty, no repeats)."""
    swept = []
    for key, value in raw.items():
        if key not in qkeys or not isinstance(value, list):
            continue
        if key in LIST_VALUED_KEYS:
            if not value or not all(isinstance(v, list) for v in value):
                if any(isinstance(v, list) for v in value):
                    raise ConfigError(f"{where}: {key} mixes lists and names; to sweep it give a list of lists, "
                                      f"e.g. {key} = [[\"Conv\"], [\"Conv\", \"Gemm\"]]")
                continue  # a plain list of names: the value itself
        elif not value:
            raise ConfigError(f"{where}: {key} is an empty list (a list is swept: give at least one value)")
        _no_duplicates(value, f"{where}: {key}")
        swept.append(key)
    return swept


def _parse_variant(raw: Any, i: int) -> list[VariantConfig]:
    """One [[variants]] table; a list value of a quantization key expands it into one variant per
    combination of the listed values (in the order they are given)."""
    where = f"variants[{i}]"
    if not isinstance(raw, dict) or "name" not in raw:
        raise ConfigError(f"{where} must be a table with a 'name'")
    base = {"name", "precision", "builder", "calibrator", "onnx"}
    qkeys = quant_keys()
    _check_keys(raw, base | qkeys, where)
    for key in ("precision", "builder", "calibrator", "onnx"):
        if isinstance(raw.get(key), list):
            raise ConfigError(f"{where}: {key} cannot be swept (only quantization keys can); "
                              "write one [[variants]] table per value")
    quant = {k: v for k, v in raw.items() if k in qkeys}
    swept = _swept_keys(raw, qkeys, f"variant '{raw['name']}'" if isinstance(raw["name"], str) else where)
    if swept and (not isinstance(raw["name"], str) or not raw["name"].strip()):
        raise _bad("variant ", "name", "a non-empty one-line string", raw["name"])
    combos = itertools.product(*[raw[k] for k in swept]) if swept else [()]
    out = []
    for combo in combos:
        sweep = dict(zip(swept, combo))
        q = {**quant, **sweep}
        out.append(VariantConfig(
            name=swept_name(raw["name"], sweep) if swept else raw["name"],
            precision=raw.get("precision", "int8" if q else "fp32"),
            builder=raw.get("builder", "prebuilt" if "onnx" in raw else "onnx"),
            calibrator=raw.get("calibrator"), quant=q, onnx=raw.get("onnx"), base_name=raw["name"] if swept else None, sweep=sweep))
    return out


def split_names(text: str) -> list[str]:
    """Comma-separated names, where commas inside ``[...]`` belong to a swept variant's name."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth <= 0:
            parts.append(cur)
            cur, depth = "", 0
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def select_variants(variants: list[VariantConfig], wanted: list[str]) -> list[VariantConfig]:
    """The variants named in ``wanted`` (``--variants``): a variant's name, or a swept table's name for all
    of its expansions; in config order, each once. Unknown names raise :class:`ConfigError`."""
    names = {v.name for v in variants} | {v.base_name for v in variants if v.base_name}
    missing = [w for w in wanted if w not in names]
    if missing or not wanted:
        shown = list(dict.fromkeys(v.base_name or v.name for v in variants))
        close = difflib.get_close_matches(missing[0], sorted(names), n=1) if missing else []
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"--variants: unknown variant(s) {', '.join(missing) or '(none given)'}{hint}; "
                          f"this config has {', '.join(shown)}")
    chosen = set(wanted)
    return [v for v in variants if v.name in chosen or (v.base_name is not None and v.base_name in chosen)]


def parse_config(data: dict[str, Any], source: str = "<dict>", base: str | os.PathLike | None = None) -> SweepConfig:
    """Validate a parsed TOML document into a :class:`SweepConfig` (every value checked).

    Relative paths it reads (data, labels, weights, ONNX files) are resolved against ``base``: the
    TOML file's folder for :func:`load_config`, the current working directory when None.
    """
    if not isinstance(data, dict):
        raise ConfigError("a config must be a table (a TOML document or a dict)")
    _check_keys(data, {"run", "models", "variants", "runtime_options"}, "config")
    run_raw = data.get("run", {})
    if not isinstance(run_raw, dict):
        raise ConfigError("[run] must be a table")
    _check_keys(run_raw, _field_names(RunConfig), "[run]")
    run_raw = dict(run_raw)
    for key in ("runtimes", "devices", "batch_sizes", "targets"):  # a single value stands for a one-item list
        if isinstance(run_raw.get(key), (str, int)) and not isinstance(run_raw.get(key), bool):
            run_raw[key] = [run_raw[key]]
    run = RunConfig(**run_raw)
    for key, raw_list in (("models", data.get("models", [])), ("variants", data.get("variants", []))):
        if not isinstance(raw_list, list):
            raise ConfigError(f"'{key}' must be an array of tables ([[{key}]])")
    models = [_parse_model(m, i) for i, m in enumerate(data.get("models", []))]
    variants = [v for i, raw in enumerate(data.get("variants", [])) for v in _parse_variant(raw, i)]
    cfg = SweepConfig(run=run, models=models, variants=variants,
                      runtime_options=data.get("runtime_options", {}), source=source)
    cfg.resolve_paths(Path.cwd() if base is None else base)
    cfg.validate()
    return cfg


def load_config(path: str | os.PathLike | None) -> SweepConfig:
    """Load ``path``, or the embedded default sweep when ``path`` is None."""
    if path is None:
        text = resources.files("quantbench.harness").joinpath("default.toml").read_text()
        return parse_config(tomllib.loads(text), "<embedded default>")
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    return parse_config(data, str(p), base=p.resolve().parent)


def dump_toml(cfg: SweepConfig) -> str:
    """The fully resolved config as TOML text (what ``--dump-config`` prints)."""
    lines: list[str] = [f"# resolved from {cfg.source}"]

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(type(v))

    d = cfg.to_dict()
    lines.append("[run]")
    lines += [f"{k} = {value(v)}" for k, v in d["run"].items()]
    for name, opts in d["runtime_options"].items():
        lines.append(f"\n[runtime_options.{name}]")
        lines += [f"{k} = {value(v)}" for k, v in opts.items()]
    for m in d["models"]:
        lines.append("\n[[models]]")
        lines += [f"{k} = {value(v)}" for k, v in m.items()]
    for v, variant in zip(d["variants"], cfg.variants):
        lines.append("")
        if variant.sweep:
            lines.append(f"# {variant.name} (swept: {', '.join(variant.sweep)})")
        lines.append("[[variants]]")
        lines += [f"{k} = {value(x)}" for k, x in v.items()]
    return "\n".join(lines) + "\n"
