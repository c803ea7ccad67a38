"""quantbench: benchmark CNN precisions (FP32/FP16/INT8) across runtimes.

The Python API (see the README's "Python API" section)::

    import quantbench
    df = quantbench.benchmark("fashion_cnn", runtimes=["ort-cpu"], eval_samples=500)   # pandas.DataFrame
    df = quantbench.run("sweep.toml")                        # a sweep file, a dict or a SweepConfig
    df = quantbench.read_results("quantbench-results")       # results.jsonl files or output folders

``benchmark``, ``run``, ``read_results``, ``preset_variants``, ``load_config``, ``parse_config``,
``SweepConfig``, ``ConfigError`` and ``RunError`` are imported on first use, so ``import quantbench``
stays light. Messages go to the ``logging`` logger ``"quantbench"`` (plain text).

The repository keeps the client's folders (``harness/``, ``exporters/``, ``runtimes/``,
``calibration_data/``, ``reports/``); they install as ``quantbench.harness``, ``quantbench.exporters``,
… so that only one import name is taken.
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path as _Path
from typing import Any

__version__ = "0.1.0"

# Running from a source checkout (no install): the subpackages are the sibling folders.
_here = _Path(__file__).resolve().parent
if not (_here / "harness").is_dir() and (_here.parent / "harness" / "__init__.py").is_file():
    __path__.append(str(_here.parent))  # type: ignore[name-defined]

# A library does not configure logging; the application (or the CLI) adds handlers.
logging.getLogger("quantbench").addHandler(logging.NullHandler())

_API = {
    "benchmark": "quantbench.harness.api", "run": "quantbench.harness.api",
    "read_results": "quantbench.harness.api", "preset_variants": "quantbench.harness.api",
    "load_config": "quantbench.harness.config", "parse_config": "quantbench.harness.config",
    "SweepConfig": "quantbench.harness.config", "ConfigError": "quantbench.harness.config",
    "RunError": "quantbench.harness.sweep.runner",
}
__all__ = [*_API, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'quantbench' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
