"""``[[variants]]`` tables → :class:`~.schema.VariantConfig` s: a list value of a quantization key sweeps it
(one variant per combination, named ``int8[calibration=entropy]``), and ``--variants`` picks them by name.
Each variant's settings are then parsed once, typed, by :meth:`VariantConfig.validate`."""
from __future__ import annotations

import difflib
from dataclasses import fields
from typing import Any

from .errors import ConfigError
from .schema import VariantConfig, quant_keys
from .sweeps import combinations
from .validate import bad, check_keys, no_duplicates

# Quantization keys whose value is itself a list: they are swept only when given a list of lists.
LIST_VALUED_KEYS = ("op_types", "exclude_nodes", "calib_classes")
# The keys of a [[variants]] table besides the quantization keys: VariantConfig's declared ones.
BASE_KEYS = tuple(f.name for f in fields(VariantConfig) if "help" in f.metadata)


def sweep_label(value: Any) -> str:
    """A swept value as it reads in a variant name: ``true``, ``64``, ``entropy``, ``Conv+Gemm``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "+".join(sweep_label(v) for v in value) if value else "none"
    return str(value)


def swept_name(name: str, sweep: dict[str, Any]) -> str:
    """``int8[calibration=entropy,calib_samples=64]``: the table's name and its swept values, in the
    table's key order (the form runtime options take, harness.sweep.plan.RuntimeChoice.label)."""
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
                                      f"e.g. {key} = [[\"Conv\"], [\"Conv\", \"Gemm\"]]", keys=f"variants.{key}")
                continue  # a plain list of names: the value itself
        elif not value:
            raise ConfigError(f"{where}: {key} is an empty list (a list is swept: give at least one value)",
                              keys=f"variants.{key}")
        no_duplicates(value, f"{where}: {key}", f"variants.{key}")
        swept.append(key)
    return swept


# Name prefixes that promise a precision other than FP32 (the default sweep's names and the docs' examples).
_PRECISION_PREFIXES = ("int8", "int4", "fp16", "bf16", "trt")


def default_presets() -> dict[str, dict[str, Any]]:
    """The embedded default sweep's ``[[variants]]`` tables, by name, as written in ``default.toml``."""
    from importlib import resources

    from .toml_io import read_toml_text

    text = resources.files("quantbench.harness").joinpath("default.toml").read_text()
    return {t["name"]: t for t in read_toml_text(text).get("variants", [])}


def _bare_table(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """A table that gives only a name: the default sweep's preset of that name (as the API's variant names are),
    an error where the name promises a precision the table would not get (it would run in FP32), else as is."""
    name = raw["name"]
    if set(raw) != {"name"} or not isinstance(name, str):
        return raw
    presets = default_presets()
    if name in presets:
        return dict(presets[name])
    if name.strip().lower().startswith(_PRECISION_PREFIXES):
        raise ConfigError(f"{where}: variant '{name}' gives no precision and no quantization key, so it would run in "
                          f"FP32: add precision = \"int8\" (or \"fp16\") and its keys, or use a preset name "
                          f"({', '.join(presets)})", keys="variants.precision")
    return raw


def parse_variant(raw: Any, i: int) -> list[VariantConfig]:
    """One [[variants]] table as :class:`VariantConfig` s; a list value of a quantization key expands it into
    one variant per combination of the listed values (in the order they are given). Values are checked
    by :meth:`VariantConfig.validate`. A table with only the name of a preset of the default sweep is that
    preset (``name = "int8-entropy"``)."""
    where = f"variants[{i}]"
    if not isinstance(raw, dict) or "name" not in raw:
        raise ConfigError(f"{where} must be a table with a 'name'")
    raw = _bare_table(raw, where)
    qkeys = quant_keys()
    check_keys(raw, set(BASE_KEYS) | qkeys, where)
    for key in BASE_KEYS[1:]:
        if isinstance(raw.get(key), list):
            raise ConfigError(f"{where}: {key} cannot be swept (only quantization keys can); "
                              "write one [[variants]] table per value", keys=f"variants.{key}")
    quant = {k: v for k, v in raw.items() if k in qkeys}
    swept = _swept_keys(raw, qkeys, f"variant '{raw['name']}'" if isinstance(raw["name"], str) else where)
    if swept and (not isinstance(raw["name"], str) or not raw["name"].strip()):
        raise bad("variant ", "name", "a non-empty one-line string", raw["name"], "variants.name")
    out = []
    for sweep in combinations(raw, swept):
        q = {**quant, **sweep}
        out.append(VariantConfig(
            name=swept_name(raw["name"], sweep) if swept else raw["name"],
            precision=raw.get("precision", "int8" if q else "fp32"),
            builder=raw.get("builder", "prebuilt" if "onnx" in raw else "onnx"),
            calibrator=raw.get("calibrator"), quant=q, onnx=raw.get("onnx"),
            base_name=raw["name"] if swept else None, sweep=sweep))
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


def select_variants(variants: list[Any], wanted: list[str]) -> list[Any]:
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
