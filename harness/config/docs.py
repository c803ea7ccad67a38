"""What the declarations say, in words: the README's key tables and the ``quantbench run`` flags' help.

``python -m quantbench.harness.config.docs`` prints the tables; ``--write README.md`` replaces the text
between the README's ``<!-- config-keys:start -->`` and ``<!-- config-keys:end -->`` markers with them
(tests/harness/config/test_docs.py fails when the two disagree).
"""
from __future__ import annotations

import sys
import types
import typing
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any

from quantbench.common.fields import default_of, lower_bound

from .toml_io import toml_value

START, END = "<!-- config-keys:start -->", "<!-- config-keys:end -->"


def _base_type(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (list, tuple) or hint in (list, tuple):
        inner = _base_type(args[0]) if args else "value"
        return f"list of {inner}s"
    return {bool: "bool", int: "int", float: "float", str: "string", dict: "table"}.get(
        hint, "table" if origin is dict else getattr(hint, "__name__", str(hint)))


def type_name(hint: Any) -> str:
    """``list[int] | None`` -> "list of ints" (optional keys are recognised by their default)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_base_type(a) for a in args if a is not type(None))
    return _base_type(hint)


def is_number(hint: Any) -> bool:
    """Whether the type holds numbers (scalars or lists of them), so a lower bound applies."""
    names = type_name(hint)
    return any(word in names.split() for word in ("int", "float", "ints", "floats"))


def bound_text(f: Field, hint: Any) -> str:
    """``>= 1``, ``> 0``, ``1 to 65536``, or the declared words of a rule the class checks itself
    (``8, 4 or 3``); "" for a key that holds no numbers."""
    if "range_text" in f.metadata:
        return f.metadata["range_text"]
    if not is_number(hint):
        return ""
    low, strict = lower_bound(f)
    if "le" in f.metadata:
        return f"{low:g} to {f.metadata['le']:g}"
    return f"{'>' if strict else '>='} {low:g}"


def default_text(f: Field) -> str:
    """How a key's default reads: its declared words, else its TOML value ("required" when none)."""
    if "default_text" in f.metadata:
        return f.metadata["default_text"]
    value = default_of(f)
    if value is MISSING:
        return "required"
    if value is None:
        return "unset"
    return toml_value(list(value) if isinstance(value, tuple) else value)


def declared(cls: type) -> list[Field]:
    """The keys a table of ``cls`` declares (fields with help), in declaration order."""
    return [f for f in fields(cls) if f.init and "help" in f.metadata]


def flag_help(cls: type, name: str, section: str = "run") -> str:
    """A ``quantbench`` flag's help from its key's declaration: the help, then the key and its bound
    (``evaluation images per model (run.eval_samples, >= 1)``); a list is given comma-separated."""
    f = next(f for f in fields(cls) if f.name == name)
    hint = typing.get_type_hints(cls)[name]
    notes = [f"{section}.{name}"]
    bound = bound_text(f, hint)
    if bound:
        notes.append(bound)
    if "default_text" in f.metadata:
        notes.append(f.metadata["default_text"])
    listed = "comma-separated " if type_name(hint).startswith("list") else ""
    return f"{listed}{f.metadata['help']} ({'; '.join(notes)})".replace("%", "%%")  # argparse formats help


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def key_table(cls: type) -> str:
    """One Markdown table: key, type, default, bound, what it sets (a ``--flag`` that overrides it)."""
    hints = typing.get_type_hints(cls)
    lines = ["| key | type | default | range | what it sets |", "|---|---|---|---|---|"]
    for f in declared(cls):
        flag = f" (`{f.metadata['flag']}`)" if "flag" in f.metadata else ""
        lines.append(f"| `{f.name}` | {type_name(hints[f.name])} | `{_cell(default_text(f))}` | "
                     f"{bound_text(f, hints[f.name])} | {_cell(f.metadata['help'])}{flag} |")
    return "\n".join(lines)


def key_tables() -> str:
    """Every table's keys, as the README shows them between its markers."""
    from quantbench.exporters.quantize import QuantSettings

    from .schema import ModelConfig, RunConfig, VariantConfig

    return "\n\n".join([
        "`[run]`:", key_table(RunConfig),
        "`[[models]]`:", key_table(ModelConfig),
        "`[[variants]]` (a list value of a quantization key is swept):", key_table(VariantConfig),
        "and its quantization keys (int8):", key_table(QuantSettings),
    ])


def readme_section(text: str) -> str:
    """The text between the README's markers (stripped)."""
    if START not in text or END not in text:
        raise ValueError(f"the README has no {START} … {END} section")
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def write_readme(path: Path) -> bool:
    """Replace the README's key tables with the generated ones; True when it changed."""
    text = path.read_text()
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    new = f"{before}{START}\n{key_tables()}\n{END}{after}"
    if new != text:
        path.write_text(new)
    return new != text


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write"]:
        for arg in sys.argv[2:] or ["README.md"]:
            print(f"{arg}: {'updated' if write_readme(Path(arg)) else 'already current'}")
    else:
        print(key_tables())
