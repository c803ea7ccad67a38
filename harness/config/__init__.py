"""The sweep configuration, one job per module:

- :mod:`.schema` — the tables (``[run]``, ``[[models]]``, ``[[variants]]``), each key declared once with
  its type, default, bound and help; the quantization keys are ``QuantSettings``' own declarations
- :mod:`.validate` — the one generic validator (types, bounds, unknown keys with the closest suggested)
- :mod:`.variants` — ``[[variants]]`` tables → variants (list values swept), settings parsed once, typed
- :mod:`.runtime_options` — the one check of ``[runtime_options.X]`` and the expansion of its lists
- :mod:`.sweeps` — the one rule of a swept key (a list runs once per value), for variants and runtime options
- :mod:`.parse` — a document → a validated :class:`SweepConfig`; :mod:`.toml_io` — TOML in and out
- :mod:`.docs` — the README's key table and the flags' help, generated from the declarations
"""
from __future__ import annotations

from .errors import ConfigError, first_line
from .parse import load_config, parse_config
from .schema import ModelConfig, RunConfig, SweepConfig, VariantConfig
from .toml_io import dump_toml, toml_repr
from .variants import select_variants, split_names

__all__ = ["ConfigError", "ModelConfig", "RunConfig", "SweepConfig", "VariantConfig", "dump_toml", "first_line",
           "load_config", "parse_config", "select_variants", "split_names", "toml_repr"]
