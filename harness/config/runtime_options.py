"""``[runtime_options.<runtime>]``: the one check of runtime options, and the expansion of their lists
(a list is swept: one runtime choice per combination)."""
from __future__ import annotations

import math
import typing
from typing import Any

from .errors import ConfigError
from .sweeps import combinations
from .toml_io import toml_repr
from .validate import bad, check_keys, check_value, no_duplicates


def check_runtime_options(options: Any) -> None:
    """Known runtimes and option names; values are scalars or lists (swept) of scalars, of the type the
    runtime declares (``option_types()``) where it declares one."""
    from quantbench.runtimes import get_runtime_class, list_runtimes

    if not isinstance(options, dict) or any(not isinstance(v, dict) for v in options.values()):
        raise ConfigError("[runtime_options] must hold one table per runtime, e.g. [runtime_options.ort-cpu]")
    for name, table in options.items():
        where = f"[runtime_options.{name}]"
        if name not in list_runtimes():
            import difflib

            close = difflib.get_close_matches(name, list_runtimes(), n=1)
            raise ConfigError(f"{where}: unknown runtime" + (f"; did you mean '{close[0]}'?" if close
                                                              else f" (known: {', '.join(list_runtimes())})"))
        try:
            cls = get_runtime_class(name)
        except ImportError:  # a broken adapter is reported when the sweep resolves runtimes
            cls = None
        if cls is not None:
            check_keys(table, set(cls.option_names()), where, what="option")
        declared = dict(cls.option_types()) if cls is not None else {}
        for key, value in table.items():
            keys = f"runtime_options.{name}.{key}"
            if isinstance(value, list):
                if not value:
                    raise ConfigError(f"{where} {key} is an empty list (a list is swept: give at least one value)",
                                      keys=keys)
                no_duplicates(value, f"{where} {key}", keys)
            for v in value if isinstance(value, list) else [value]:
                if not isinstance(v, (bool, int, float, str)):
                    raise ConfigError(f"{where} {key} must be a string, number, true/false or a list of those "
                                      f"(swept), not {toml_repr(value)}", keys=keys)
                if isinstance(v, float) and not math.isfinite(v):
                    raise bad(f"{where} ", key, "a finite number", value, keys)
                typ = int if key == "threads" else declared.get(key)
                if typ is not None:
                    hint = typing.Union[typ] if isinstance(typ, tuple) else typ
                    check_value(v, hint, key, f"{where} ", keys=keys)


def option_sets(options: dict[str, Any], defaults: dict[str, Any]) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
    """One runtime's options (checked by :func:`check_runtime_options`) over ``defaults``, with every list
    expanded: one dict per combination of the listed values, in the order given, and the swept keys."""
    base = {**defaults, **options}
    swept = tuple(k for k, v in base.items() if isinstance(v, list))
    return [{**base, **combo} for combo in combinations(base, swept)], swept
