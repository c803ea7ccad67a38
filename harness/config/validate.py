"""The one generic validator: a value against its field's type hint and declared bounds, and a table's
keys against the declared ones (the closest valid key suggested, so a typo never falls back to a default).

Numbers must be >= 0 unless the field declares another bound (``quantbench.common.fields.key``).
"""
from __future__ import annotations

import difflib
import json
import math
import types
import typing
from dataclasses import Field, fields
from typing import Any

from quantbench.common.fields import lower_bound

from .errors import ConfigError
from .toml_io import toml_repr


def is_number(value: Any) -> bool:
    """An int or float, not a bool."""
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
        return is_number(value) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(conforms(v, a) for v, a in zip(value, args, strict=True))
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


def bad(where: str, key: str, expected: str, value: Any, keys: tuple[str, ...] | str = ()) -> ConfigError:
    """``{where}{key} must be {expected}, not {value as TOML}``, about ``keys``."""
    return ConfigError(f"{where}{key} must be {expected}, not {toml_repr(value)}", keys=keys)


def _number_kind(hint: Any, is_list: bool) -> str:
    text = describe(hint)
    whole = "int" in text.split()[-1] or text.startswith("an integer")
    if is_list:
        return "a list of integers" if whole else "a list of numbers"
    return "an integer" if whole else "a number"


def check_value(value: Any, hint: Any, key: str, where: str, low: float = 0, strict: bool = False,
                high: float | None = None, keys: tuple[str, ...] | str = ()) -> None:
    """One value against a type hint and bounds (numbers, and every number in a list)."""
    if not conforms(value, hint):
        raise bad(where, key, describe(hint), value, keys)
    is_list = isinstance(value, (list, tuple))
    numbers = [v for v in (value if is_list else [value]) if is_number(v)]
    if any(v < low or (strict and v <= low) for v in numbers):
        raise bad(where, key, f"{_number_kind(hint, is_list)} {'>' if strict else '>='} {low:g}", value, keys)
    if high is not None and any(v > high for v in numbers):
        raise bad(where, key, f"{_number_kind(hint, is_list)} from {low:g} to {high:g}", value, keys)


def check_field(f: Field, value: Any, hint: Any, where: str, section: str) -> None:
    """``value`` against field ``f``'s type hint and its declared bounds."""
    low, strict = lower_bound(f)
    check_value(value, hint, f.name, where, low, strict, f.metadata.get("le"), keys=f"{section}.{f.name}")


def check_fields(obj: Any, where: str, section: str, names: set[str] | None = None) -> None:
    """Check each declared field of dataclass ``obj`` (or those in ``names``); ``where`` prefixes the key in
    messages (``"run."``, ``"model 'x': "``), ``section`` names it in the error's keys (``"run"``)."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        if f.init and (names is None or f.name in names):
            check_field(f, getattr(obj, f.name), hints[f.name], where, section)


def check_table(table: dict[str, Any], cls: type, name: str, where: str, section: str) -> None:
    """The keys a table sets, against ``cls``'s declared fields (names, types, bounds); ``name``: the
    table in "unknown key" messages (``[run]``, ``variant 'q'``)."""
    declared = {f.name: f for f in fields(cls) if f.init}
    check_keys(table, set(declared), name)
    hints = typing.get_type_hints(cls)
    for k, value in table.items():
        check_field(declared[k], value, hints[k], where, section)


def check_keys(table: dict[str, Any], allowed: set[str], where: str, what: str = "key") -> None:
    """Every key of ``table`` is in ``allowed``; else one line suggesting the closest."""
    for k in table:
        if k not in allowed:
            close = difflib.get_close_matches(str(k), sorted(allowed), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (valid: {', '.join(sorted(allowed))})"
            raise ConfigError(f"unknown {what} '{k}' in {where}{hint}")


def field_names(cls: type) -> set[str]:
    """The keys a table of ``cls`` may set."""
    return {f.name for f in fields(cls) if f.init}


def no_duplicates(values: list[Any], what: str, keys: tuple[str, ...] | str = ()) -> None:
    """No value twice in a list (``run.batch_sizes lists 8 twice``)."""
    seen: set[str] = set()
    for v in values:
        marker = json.dumps(v, sort_keys=True, default=str)
        if marker in seen:
            raise ConfigError(f"{what} lists {toml_repr(v)} twice", keys=keys)
        seen.add(marker)
