"""The one rule of a swept key, shared by ``[[variants]]`` and ``[runtime_options.X]``: a list of values
runs once per value, and several swept keys run every combination, in the order the values are given."""
from __future__ import annotations

import itertools
from typing import Any


def combinations(table: dict[str, Any], swept: tuple[str, ...] | list[str]) -> list[dict[str, Any]]:
    """``{key: value}`` for each combination of the listed values of ``swept`` in ``table`` (first key
    slowest); ``[{}]`` when nothing is swept."""
    return [dict(zip(swept, combo, strict=True)) for combo in itertools.product(*[table[k] for k in swept])]
