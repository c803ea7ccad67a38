"""TOML in and out: the reader behind ``load_config`` and the one value serializer, which writes
``--dump-config`` and shows values in error messages (``"false"`` vs ``false``)."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from .errors import ConfigError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(name: str) -> str:
    """A table key as TOML writes it: bare when it can be, else quoted."""
    return name if _BARE_KEY.fullmatch(name) else toml_value(name)


def toml_value(value: Any, lenient: bool = False) -> str:
    """``value`` as TOML text. ``lenient``: a value TOML cannot hold (None, an object) is shown with
    ``repr`` instead of raising TypeError (for messages)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # JSON's string escapes are TOML's; TOML also refuses a raw DEL, which JSON leaves as it is
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v, lenient) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_key(str(k))} = {toml_value(v, lenient)}" for k, v in value.items()) + " }"
    if lenient:
        return repr(value)
    raise TypeError(f"TOML cannot hold {type(value).__name__} {value!r}")


def toml_repr(value: Any, limit: int = 60) -> str:
    """How ``value`` reads in TOML, shortened to ``limit`` characters, for error messages."""
    text = toml_value(value, lenient=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict; a missing file or a syntax error is a one-line :class:`ConfigError`."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None


def read_toml_text(text: str) -> dict[str, Any]:
    """TOML text (the embedded default sweep) as a dict."""
    return tomllib.loads(text)


def dump_toml(cfg: Any) -> str:
    """A :class:`~.schema.SweepConfig` as TOML text (what ``--dump-config`` prints): every ``[run]`` key
    with its effective value and every path resolved; it loads back to the same config."""
    d = cfg.to_dict()
    lines: list[str] = [f"# resolved from {cfg.source}", "[run]"]

    def table(values: dict[str, Any]) -> list[str]:
        return [f"{toml_key(k)} = {toml_value(v)}" for k, v in values.items()]

    lines += table(d["run"])
    for name, opts in d["runtime_options"].items():
        lines += [f"\n[runtime_options.{toml_key(name)}]", *table(opts)]
    for m in d["models"]:
        lines += ["\n[[models]]", *table(m)]
    for v, variant in zip(d["variants"], cfg.variants, strict=True):
        lines.append("")
        if variant.sweep:
            lines.append(f"# {variant.name} (swept: {', '.join(variant.sweep)})")
        lines += ["[[variants]]", *table(v)]
    return "\n".join(lines) + "\n"
