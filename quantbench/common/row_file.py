"""The one reader and the one writer of ``results.jsonl`` (and of the other JSON Lines files quantbench appends).

:func:`append_row` appends one row, fsynced, repairing a line a kill left cut. :func:`read_rows` reads a
results file for everyone (the CLI's resume and tables, the Python API, the reports): a line that is not
JSON or not an object, or a row of an unknown schema, is skipped with a warning, never fatal; with
``check_types`` (the reports, the CSV/Parquet export) a field whose value is not of its :class:`Row` type
is reset to null and named. :func:`iter_json_lines` is the line reader under both, also used for
``sensitivity.jsonl`` and the workers' progress files.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .row import ADDED_FIELDS, FIELDS, READABLE_VERSIONS, RESULTS_NAME, Row, value_kind
from .row_format import is_number
from .row_keys import current_rows, superseded_note


class ResultsError(ValueError):
    """A results file that cannot be read (missing, empty, unknown schema)."""


@dataclass
class LoadReport:
    """What :func:`read_rows` found besides rows: problems worth telling the user."""

    rows: list[Row] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Lines that are neither a row nor a row cut short by a kill (HTML, text): the file is not only results.
    foreign: list[tuple[int, str]] = field(default_factory=list)  # (line number, its start)
    mistyped: set[str] = field(default_factory=set)  # with check_types: fields reset to null


# ---- writing ---------------------------------------------------------------------------------------

def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one row and fsync, repairing a line left truncated by an earlier kill."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(clean_floats(row), default=_json_default, allow_nan=False) + "\n"
    with open(path, "a+b") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() > 0:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                fh.write(b"\n")
        fh.write(line.encode())
        fh.flush()
        os.fsync(fh.fileno())


def clean_floats(obj: Any) -> Any:
    """Replace NaN/inf (not valid JSON) by None, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: clean_floats(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_floats(v) for v in obj]
    return obj


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


# ---- reading ---------------------------------------------------------------------------------------

def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of the non-blank lines; a UTF-8 byte-order mark (an editor's) is dropped."""
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        for no, line in enumerate(fh, 1):
            if line.strip():
                yield no, line


NOT_JSON = object()  # what iter_json_lines yields for a line that is not JSON


def iter_json_lines(path: Path) -> Iterator[tuple[int, Any, str]]:
    """(line number, decoded value or :data:`NOT_JSON`, line) of each non-blank line."""
    for no, line in iter_lines(path):
        try:
            value = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            value = NOT_JSON
        yield no, value, line


def _kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def read_rows(path: Path | str, latest_per_cell: bool = True, *, check_types: bool = False,
              fill_added: bool = True) -> LoadReport:
    """Read a results file. Truncated or corrupt lines are skipped with a warning, never fatal.

    With ``latest_per_cell`` only the last row of each ``cell_id`` is kept (a retried cell), in the
    order the latest rows were written. ``fill_added``: fields added since a row's schema version are
    set to null (:data:`ADDED_FIELDS`). ``check_types``: a row whose ``status`` is not text is skipped,
    and a field whose value is not of its :class:`Row` type is reset to null (empty for lists and
    objects) and listed in ``mistyped``. Raises :class:`ResultsError` when the file does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise ResultsError(f"results file not found: {path}")
    report = LoadReport()
    latest: dict[Any, tuple[int, Row]] = {}
    order: list[Row] = []
    for no, row, line in iter_json_lines(path):
        why = _unreadable(row, check_types)
        if why:
            # A row cut short by a kill still starts like one; anything else (HTML, text, an array) is foreign.
            if not line.lstrip().startswith("{") if row is NOT_JSON else not isinstance(row, dict):
                report.foreign.append((no, _excerpt(line)))
            report.warnings.append(f"{path}:{no}: {why}; row skipped")
            continue
        if check_types:
            report.mistyped |= sanitize_row(row)
        if fill_added:
            for added_in, keys in ADDED_FIELDS.items():
                if row["schema_version"] < added_in:
                    for key in keys:
                        row.setdefault(key, None)
        order.append(row)
        cell = row.get("cell_id")
        latest[cell if isinstance(cell, str) else ("line", no)] = (no, row)
    # Latest rows in the order they were written (a cell measured again moves to where its new row is).
    report.rows = [row for _, row in sorted(latest.values(), key=lambda x: x[0])] if latest_per_cell else order
    if not report.rows and not report.warnings:
        report.warnings.append(f"{path}: no result rows")
    return report


def _unreadable(row: Any, check_types: bool) -> str:
    """Why a decoded line is not a readable row ("" when it is)."""
    if row is NOT_JSON:
        return "truncated or corrupt line (not JSON)"
    if not isinstance(row, dict):
        return f"not a result row ({_kind(row)}, not a JSON object)"
    version = row.get("schema_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        readable = ", ".join(map(str, READABLE_VERSIONS))
        return f"schema version {version!r} is not supported (this quantbench reads {readable})"
    if check_types and not isinstance(row.get("status"), str):
        return f"status {row.get('status')!r} is not a string"
    return ""


def _excerpt(line: str, n: int = 40) -> str:
    text = line.strip()
    return repr(text[:n] + ("…" if len(text) > n else ""))


def read_current(path: Path | str, all_generations: bool = False) -> LoadReport:
    """:func:`read_rows` of a results file or an output folder, less the superseded rows (unless
    ``all_generations``); a note in ``warnings`` says how many were left out."""
    path = Path(path)
    loaded = read_rows(path / RESULTS_NAME if path.is_dir() else path)
    if not all_generations:
        loaded.rows, older = current_rows(loaded.rows)
        note = superseded_note(len(older))
        if note:
            loaded.warnings.append(note)
    return loaded


# ---- type checks -----------------------------------------------------------------------------------
# What each Row field's value must be (its declared type, null aside); schema_version and status are
# checked before a row is read at all.
_KINDS = {name: kind for name, f in FIELDS.items() if name not in ("schema_version", "status")
          and (kind := value_kind(f.type)) is not None}
# Names no quantbench wrote but that its readers accept for the timing settings (TIMING_SETTINGS_KEYS).
_KINDS.update({"min_iters": "number", "timing_settings": "dict"})
_EMPTY = {"dict": {}, "number_list": [], "text_list": []}
_ENV_TEXT = {"host", "cpu_model", "os", "python", "git_rev"}
_ENV_NUMBER = {"cores_physical", "cores_logical", "memory_gb"}
_SETTINGS_LISTS = {"op_types", "exclude_nodes", "calib_classes"}


def _ok(kind: str, value: Any) -> bool:
    if kind == "number_list":
        return isinstance(value, list) and all(is_number(v) for v in value)
    if kind == "text_list":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "number":
        return is_number(value)
    if kind == "text":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    return isinstance(value, dict)


def sanitize_row(row: dict[str, Any]) -> set[str]:
    """Reset fields whose value is not of their :class:`Row` type to null (or empty); returns their names.

    Unknown fields are kept as they are, except ``*_ms`` (a number) and ``*_raw_ms`` (a list of numbers).
    """
    bad: set[str] = set()
    for key, value in list(row.items()):
        if value is None or key.startswith("_"):
            continue
        kind = _KINDS.get(key) or ("number_list" if key.endswith("_raw_ms") else "number" if key.endswith("_ms")
                                   else None)
        if kind is not None and not _ok(kind, value):
            row[key] = _EMPTY.get(kind)
            bad.add(key)
    bad |= _sanitize_env(row.get("env") or {})
    bad |= _sanitize_settings(row.get("variant_settings") or {})
    return bad


def _sanitize_env(env: dict[str, Any]) -> set[str]:
    bad = set()
    for key, value in list(env.items()):
        ok = True
        if key in _ENV_TEXT:
            ok = value is None or isinstance(value, str)
        elif key in _ENV_NUMBER:
            ok = value is None or is_number(value)
        elif key == "gpu":
            ok = value is None or (isinstance(value, list) and all(isinstance(g, dict) for g in value))
        elif key == "versions":
            ok = value is None or isinstance(value, dict)
        elif key in ("cpu_flags", "cpu_flags_subset"):
            ok = value is None or isinstance(value, list)
        if not ok:
            env[key] = None
            bad.add(f"env.{key}")
    return bad


def _sanitize_settings(settings: dict[str, Any]) -> set[str]:
    bad = set()
    for key in _SETTINGS_LISTS:
        value = settings.get(key)
        if value is not None and not isinstance(value, list):
            settings[key] = None
            bad.add(f"variant_settings.{key}")
    return bad
