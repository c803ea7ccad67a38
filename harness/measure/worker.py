"""Subprocess entry point: measure one cell and write its result as JSON.

``python -m quantbench.harness.measure.worker SPEC.json OUT.json``. Whatever happens, OUT.json gets either the
measured fields or a one-line error, so the parent can always write a row. A crash the worker
cannot catch (segfault, OOM kill, timeout) is reported by the parent from the exit status.
"""
from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path


def one_line(exc: BaseException) -> str:
    """A single line describing ``exc`` (first line of its message, with the type when unclear)."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    known = {"RuntimeFailure", "RuntimeUnavailable", "DataError", "ValueError", "ConfigError"}
    name = type(exc).__name__
    return msg if (name in known and msg) else f"{name}: {msg}" if msg else name


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec_path, out_path = Path(argv[0]), Path(argv[1])
    from quantbench.common.subproc import watch_parent

    watch_parent()  # die with the sweep even where the parent-death signal is not available
    from quantbench.harness.measure.cell import CellSpec, measure_cell

    spec = CellSpec(**json.loads(spec_path.read_text()))
    try:
        result = {"status": "ok", "error": "", **measure_cell(spec)}
    except Exception as exc:  # noqa: BLE001 - every failure becomes a row, never a lost cell
        result = {"status": "failed", "error": one_line(exc), "traceback": traceback.format_exc(limit=8)}
    from quantbench.harness.results.store import clean_floats

    out_path.write_text(json.dumps(clean_floats(result), default=_default, allow_nan=False))
    return 0


def _default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


if __name__ == "__main__":
    sys.exit(main())
