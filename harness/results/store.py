"""The results file of an output folder: what a rerun finds there, reused rows re-affirmed, CSV/Parquet export.

A row is one :class:`quantbench.common.row.Row`: its fields, types, units and the schema version that
added each are declared there, and ``docs/row-schema.md`` is generated from it. Rows are written by
:func:`quantbench.common.row_file.append_row` and read by :func:`quantbench.common.row_file.read_rows`
(rows of schema versions 1 and 2 are still read, the fields added since set to null: "not measured");
which rows are current and which FP32 row each is compared with is decided in
:mod:`quantbench.common.row_keys`. The names below are re-exported from there for the harness.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from quantbench.common.row import (  # noqa: F401 - re-exported for the harness
    ADDED_FIELDS,
    MIN_SAMPLES,
    PHASES,
    READABLE_VERSIONS,
    RESULTS_NAME,
    SCHEMA_VERSION,
    STATS,
    V2_FIELDS,
    V3_FIELDS,
    V3_TIMING_FIELDS,
    Row,
)
from quantbench.common.row_file import (  # noqa: F401 - re-exported for the harness
    LoadReport,
    ResultsError,
    append_row,
    clean_floats,
    iter_lines,
    read_current,
    read_rows,
    sanitize_row,
)
from quantbench.common.row_keys import (  # noqa: F401 - re-exported for the harness
    current_rows,
    generation_key,
    pairing_key,
    slot,
    superseded_note,
)


def stored_rows(path: Path, log: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """The latest row of each cell already in ``path`` (empty when there is no file), by cell_id.

    Raises ResultsError (one line) when the file holds lines that are not results at all (a report
    written over it, a text file): a run would otherwise measure everything again beside them.
    Skipped lines (a row cut short by a kill, an unknown schema) are passed to ``log`` as warnings.
    """
    if not path.exists():
        return {}
    loaded = read_rows(path)
    if loaded.foreign:
        (no, start), more = loaded.foreign[0], len(loaded.foreign) - 1
        raise ResultsError(f"{path} is not a quantbench results file: line {no} is not a result row ({start})"
                           + (f", nor are {more} other line(s)" if more else "")
                           + "; move it away or choose another output folder (nothing was run)")
    if log is not None:
        for warning in loaded.warnings:
            if not warning.endswith(": no result rows"):
                log(f"warning: {warning}")
    return {row["cell_id"]: row for row in loaded.rows if isinstance(row.get("cell_id"), str)}


def measured_cell_ids(path: Path, include_failed: bool = True) -> set[str]:
    """Cell ids already in ``path`` (with ``include_failed=False`` only those whose latest row is ok)."""
    return {cid for cid, row in stored_rows(path).items() if include_failed or row.get("status") == "ok"}


def reaffirm_rows(path: Path, reused: list[dict[str, Any]], run_id: str) -> int:
    """Append a copy of each reused stored row that is no longer current in ``path`` (its slot was measured
    again under other inputs since, e.g. a config changed and then changed back), so that the file's
    latest rows are this run's configuration. The copy keeps every measured field and gets ``reused_at``
    and ``reused_in_run``. Returns how many were appended."""
    if not reused or not path.exists():
        return 0
    rows = read_rows(path).rows
    _, older = current_rows(rows)
    stale = {id(r) for r in older}
    by_id = {r.get("cell_id"): r for r in rows}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    n = 0
    for row in reused:
        stored = by_id.get(row.get("cell_id"))
        if stored is not None and id(stored) in stale:
            append_row(path, {**stored, "reused_at": now, "reused_in_run": run_id})
            n += 1
    return n


def to_dataframe(rows: Iterable[dict[str, Any]]):  # -> pandas.DataFrame
    """Rows as a pandas DataFrame (pandas imported lazily)."""
    import pandas as pd

    return pd.DataFrame(list(rows))


def export_table(rows: list[dict[str, Any]], out: Path) -> list[str]:
    """Write rows to CSV or Parquet by file extension; list/dict columns are JSON-encoded. Returns warnings.

    Rows are checked as ``quantbench report`` checks them: a known field of the wrong type (a hand-edited
    ``"top1": "high"``) is written as null, and a column whose values still mix types (Parquet needs
    one per column) is written as text; each is named in a warning, no row is dropped.
    """
    import copy

    if out.suffix not in (".parquet", ".csv"):
        raise ResultsError(f"cannot export to '{out.suffix}': use .csv or .parquet")
    rows = copy.deepcopy(list(rows))
    warnings: list[str] = []
    bad: set[str] = set()
    for row in rows:
        bad |= sanitize_row(row)
    if bad:
        warnings.append(f"field(s) of the wrong type written as null: {', '.join(sorted(bad))}")
    df = to_dataframe(rows)
    mixed = []
    for col in df.columns:
        if df[col].map(lambda v: isinstance(v, (list, dict))).any():
            df[col] = df[col].map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v)
        kinds = {bool if isinstance(v, bool) else (float if isinstance(v, int) else type(v))
                 for v in df[col] if v is not None and not (isinstance(v, float) and math.isnan(v))}
        if len(kinds) > 1 and out.suffix == ".parquet":
            mixed.append(str(col))
            df[col] = df[col].map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    if mixed:
        warnings.append(f"column(s) with values of mixed types written as text: {', '.join(mixed)}")
    if out.suffix == ".parquet":
        df.to_parquet(out, index=False)
    else:
        df.to_csv(out, index=False)
    return warnings
