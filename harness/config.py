"""Sweep configuration: a TOML file (or the embedded default) validated into dataclasses.

Every table is checked for unknown keys, with the closest valid key suggested, so a typo never
silently falls back to a default.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from .measure import MeasureSettings

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


class ConfigError(ValueError):
    """A configuration problem, described in one line."""


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (valid: {', '.join(sorted(allowed))})"
            raise ConfigError(f"unknown key '{key}' in {where}{hint}")


def _field_names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


def _expect(value: Any, typ: type | tuple[type, ...], key: str, where: str) -> Any:
    if isinstance(value, bool) and typ in (int, float, (int, float)):
        raise ConfigError(f"{where}.{key} must be a number, not {value!r}")
    if not isinstance(value, typ):
        name = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
        raise ConfigError(f"{where}.{key} must be {name}, not {value!r}")
    return value


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

    def validate(self) -> None:
        for key in ("min_iters", "warmup_iters", "max_iters", "io_batches", "eval_samples"):
            if getattr(self, key) < 0:
                raise ConfigError(f"run.{key} must be >= 0")
        if self.min_iters < 1:
            raise ConfigError("run.min_iters must be >= 1")
        if not self.batch_sizes or any((not isinstance(b, int)) or b < 1 for b in self.batch_sizes):
            raise ConfigError(f"run.batch_sizes must be positive integers, not {self.batch_sizes!r}")
        if self.timeout_s <= 0:
            raise ConfigError("run.timeout_s must be > 0")
        if not self.runtimes:
            raise ConfigError("run.runtimes is empty: name runtimes or use [\"auto\"]")


@dataclass
class ModelConfig:
    """``[[models]]``: a registry name, ``torchvision:NAME``, ``module:pkg.mod:fn`` or a path to .onnx."""

    name: str
    weights: str | None = None
    dataset: str | None = None
    input_shape: list[int] | None = None
    num_classes: int | None = None
    preprocess: dict[str, Any] | None = None
    eval_samples: int | None = None
    label: str | None = None  # display name in results
    calib_dataset: str | None = None  # a separate calibration source (default: the dataset's calibration split)
    classes: list[str] | None = None  # class names in output-index order (image folders)
    labels: str | None = None  # file with one class name per line, line number = output index


QUANT_KEYS = {
    "calibration", "per_channel", "activation_type", "weight_type", "symmetric_activation",
    "symmetric_weight", "reduce_range", "op_types", "exclude_nodes", "calib_samples", "calib_seed",
    "calib_classes", "calib_batch", "num_bins", "percentile", "calib_memory_mb",
}


@dataclass
class VariantConfig:
    """``[[variants]]``: fp32, fp16, or int8 with quantization settings (keys of QuantSettings)."""

    name: str
    precision: str = "fp32"
    builder: str = "onnx"  # "onnx" | "trt-calibrate"
    calibrator: str | None = None  # for trt-calibrate: "entropy" | "minmax"
    quant: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.precision not in ("fp32", "fp16", "int8"):
            raise ConfigError(f"variant '{self.name}': precision must be fp32, fp16 or int8, not '{self.precision}'")
        if self.builder not in ("onnx", "trt-calibrate"):
            raise ConfigError(f"variant '{self.name}': builder must be 'onnx' or 'trt-calibrate', not '{self.builder}'")
        if self.builder == "trt-calibrate" and self.calibrator not in ("entropy", "minmax"):
            raise ConfigError(f"variant '{self.name}': trt-calibrate needs calibrator = 'entropy' or 'minmax'")
        if self.quant and self.precision != "int8":
            raise ConfigError(f"variant '{self.name}': quantization keys given for a {self.precision} variant")


@dataclass
class SweepConfig:
    """The whole sweep: run settings, models, variants and per-runtime options."""

    run: RunConfig
    models: list[ModelConfig]
    variants: list[VariantConfig]
    runtime_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = "<embedded default>"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"run": asdict(self.run)}
        out["models"] = [{k: v for k, v in asdict(m).items() if v is not None} for m in self.models]
        variants = []
        for v in self.variants:
            d = {"name": v.name, "precision": v.precision}
            if v.builder != "onnx":
                d["builder"] = v.builder
            if v.calibrator:
                d["calibrator"] = v.calibrator
            d.update(v.quant)
            variants.append(d)
        out["variants"] = variants
        out["runtime_options"] = self.runtime_options
        return out


def _parse_model(raw: Any, i: int) -> ModelConfig:
    where = f"models[{i}]"
    if isinstance(raw, str):
        return ModelConfig(name=raw)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table or a model name")
    _check_keys(raw, _field_names(ModelConfig), where)
    if "name" not in raw:
        raise ConfigError(f"{where} needs a 'name'")
    return ModelConfig(**raw)


def _parse_variant(raw: Any, i: int) -> VariantConfig:
    where = f"variants[{i}]"
    if not isinstance(raw, dict) or "name" not in raw:
        raise ConfigError(f"{where} must be a table with a 'name'")
    base = {"name", "precision", "builder", "calibrator"}
    _check_keys(raw, base | QUANT_KEYS, where)
    quant = {k: v for k, v in raw.items() if k in QUANT_KEYS}
    variant = VariantConfig(
        name=str(raw["name"]), precision=str(raw.get("precision", "int8" if quant else "fp32")),
        builder=str(raw.get("builder", "onnx")), calibrator=raw.get("calibrator"), quant=quant)
    variant.validate()
    return variant


def parse_config(data: dict[str, Any], source: str = "<dict>") -> SweepConfig:
    """Validate a parsed TOML document into a :class:`SweepConfig`."""
    _check_keys(data, {"run", "models", "variants", "runtime_options"}, "config")
    run_raw = data.get("run", {})
    if not isinstance(run_raw, dict):
        raise ConfigError("[run] must be a table")
    _check_keys(run_raw, _field_names(RunConfig), "[run]")
    defaults = RunConfig()
    for key, value in run_raw.items():
        default = getattr(defaults, key)
        if isinstance(default, list):
            if isinstance(value, (str, int)):
                value = [value]
            _expect(value, list, key, "run")
        elif isinstance(default, bool):
            _expect(value, bool, key, "run")
        elif isinstance(default, (int, float)):
            _expect(value, (int, float), key, "run")
        elif isinstance(default, str):
            _expect(value, str, key, "run")
        run_raw[key] = value
    run = RunConfig(**run_raw)
    run.validate()
    models = [_parse_model(m, i) for i, m in enumerate(data.get("models", []))]
    variants = [_parse_variant(v, i) for i, v in enumerate(data.get("variants", []))]
    if not models:
        raise ConfigError("config has no [[models]]")
    if not variants:
        raise ConfigError("config has no [[variants]]")
    names = [v.name for v in variants]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ConfigError(f"duplicate variant name(s): {', '.join(sorted(dupes))}")
    opts = data.get("runtime_options", {})
    if not isinstance(opts, dict) or any(not isinstance(v, dict) for v in opts.values()):
        raise ConfigError("[runtime_options] must hold one table per runtime, e.g. [runtime_options.ort-cpu]")
    return SweepConfig(run=run, models=models, variants=variants, runtime_options=opts, source=source)


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
    return parse_config(data, str(p))


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
    for v in d["variants"]:
        lines.append("\n[[variants]]")
        lines += [f"{k} = {value(x)}" for k, x in v.items()]
    return "\n".join(lines) + "\n"
