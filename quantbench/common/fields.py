"""Settings declared once: a dataclass field carries its default, lower bound and help (the type is its
annotation), as optimum-benchmark declares ``field(default=…, metadata={"help": …})``.

The config validator, the command-line flags' help, ``--dump-config`` and the README's key table all
read these declarations (``quantbench.harness.config``); this module only writes and reads them, so
that the exporters' settings (``QuantSettings``) can be declared the same way from below the harness.
"""
from __future__ import annotations

import dataclasses
from dataclasses import MISSING
from typing import Any, Callable

# A number with no declared lower bound must still be >= 0 (counts, seconds, fractions).
DEFAULT_GE = 0


def setting(default: Any = MISSING, *, help: str, ge: float | None = None, gt: float | None = None,
            le: float | None = None, flag: str | None = None, default_factory: Callable[[], Any] | Any = MISSING,
            default_text: str | None = None, range_text: str | None = None) -> Any:
    """A dataclass field declared with its facts.

    ``help``: one sentence for ``--help`` and the README. ``ge`` / ``gt``: the lower bound of a number
    (of every number of a list); ``le``: an upper bound; none given means ``>= 0``. ``flag``: the
    ``quantbench run`` option that overrides it. ``default_text``: how the default reads in docs when
    its value alone says too little (``0`` threads = the physical cores). ``range_text``: the values a
    rule of the class itself allows (``8, 4 or 3``), in words for the docs, where ``ge``/``gt`` say too little.
    """
    meta: dict[str, Any] = {"help": help}
    for name, value in (("ge", ge), ("gt", gt), ("le", le), ("flag", flag), ("default_text", default_text),
                        ("range_text", range_text)):
        if value is not None:
            meta[name] = value
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def lower_bound(f: dataclasses.Field) -> tuple[float, bool]:
    """A field's lower bound and whether it is strict (``gt``)."""
    if "gt" in f.metadata:
        return f.metadata["gt"], True
    return f.metadata.get("ge", DEFAULT_GE), False


def declared_fields(cls: type) -> dict[str, dataclasses.Field]:
    """A settings dataclass's fields by name (init fields only: what a table may set)."""
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def default_of(f: dataclasses.Field) -> Any:
    """A field's default value (the factory called), or MISSING for a required one."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return MISSING
