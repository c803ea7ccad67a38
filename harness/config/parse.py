"""A TOML document (or a dict shaped like one) → a validated :class:`~.schema.SweepConfig`."""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .schema import ModelConfig, RunConfig, SweepConfig
from .toml_io import read_toml, read_toml_text, toml_repr
from .validate import check_keys, field_names
from .variants import parse_variant

SECTIONS = ("run", "models", "variants", "runtime_options")
# [run] keys whose single value stands for a one-item list.
ONE_OR_MANY = ("runtimes", "devices", "batch_sizes", "targets")


def _parse_run(raw: Any) -> RunConfig:
    if not isinstance(raw, dict):
        raise ConfigError("[run] must be a table")
    check_keys(raw, field_names(RunConfig), "[run]")
    raw = dict(raw)
    for key in ONE_OR_MANY:
        if isinstance(raw.get(key), (str, int)) and not isinstance(raw.get(key), bool):
            raw[key] = [raw[key]]
    return RunConfig(**raw)


def _parse_model(raw: Any, i: int) -> ModelConfig:
    where = f"models[{i}]"
    if isinstance(raw, str):
        return ModelConfig(name=raw)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table or a model name, not {toml_repr(raw)}")
    check_keys(raw, field_names(ModelConfig), where)
    if "name" not in raw:
        raise ConfigError(f"{where} needs a 'name'")
    return ModelConfig(**raw)


def parse_config(data: dict[str, Any], source: str = "<dict>", base: str | os.PathLike | None = None) -> SweepConfig:
    """Validate a parsed TOML document into a :class:`SweepConfig` (every value checked).

    Relative paths it reads (data, labels, weights, ONNX files) are resolved against ``base``: the
    TOML file's folder for :func:`load_config`, the current working directory when None.
    """
    if not isinstance(data, dict):
        raise ConfigError("a config must be a table (a TOML document or a dict)")
    check_keys(data, set(SECTIONS), "config")
    run = _parse_run(data.get("run", {}))
    for key in ("models", "variants"):
        if not isinstance(data.get(key, []), list):
            raise ConfigError(f"'{key}' must be an array of tables ([[{key}]])")
    models = [_parse_model(m, i) for i, m in enumerate(data.get("models", []))]
    variants = [v for i, raw in enumerate(data.get("variants", [])) for v in parse_variant(raw, i)]
    cfg = SweepConfig(run=run, models=models, variants=variants,
                      runtime_options=data.get("runtime_options", {}), source=source)
    cfg.resolve_paths(Path.cwd() if base is None else base)
    cfg.validate()
    return cfg


def load_config(path: str | os.PathLike | None) -> SweepConfig:
    """Load ``path``, or the embedded default sweep when ``path`` is None."""
    if path is None:
        text = resources.files("quantbench.harness").joinpath("default.toml").read_text()
        return parse_config(read_toml_text(text), "<embedded default>")
    p = Path(path)
    return parse_config(read_toml(p), str(p), base=p.resolve().parent)
