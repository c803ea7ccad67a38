"""quantbench: benchmark CNN precisions (FP32/FP16/INT8) across runtimes.

The repository keeps the client's folders (``harness/``, ``exporters/``, ``runtimes/``,
``calibration_data/``, ``reports/``); they install as ``quantbench.harness``, ``quantbench.exporters``,
… so that only one import name is taken. The public Python API is re-exported here.
"""
from __future__ import annotations

from pathlib import Path as _Path

__version__ = "0.1.0"

# Running from a source checkout (no install): the subpackages are the sibling folders.
_here = _Path(__file__).resolve().parent
if not (_here / "harness").is_dir() and (_here.parent / "harness" / "__init__.py").is_file():
    __path__.append(str(_here.parent))  # type: ignore[name-defined]  # noqa: F821
