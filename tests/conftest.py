"""Skip tests whose runtime is missing — unless that runtime's own tox environment requires it.

``QUANTBENCH_REQUIRE=openvino,ort_cpu`` (set by tox) turns the skip of those markers into a
failure, so an environment cannot pass having run nothing.
"""
from __future__ import annotations

import importlib.util
import os
import shutil

import pytest


def _ort_cpu() -> str | None:
    from quantbench.runtimes import get_runtime_class

    a = get_runtime_class("ort-cpu").availability()
    return None if a.ok else str(a)


def _runtime(name: str):
    def probe() -> str | None:
        from quantbench.runtimes import get_runtime_class

        a = get_runtime_class(name).availability()
        return None if a.ok else str(a)
    return probe


def _module(mod: str, hint: str):
    def probe() -> str | None:
        return None if importlib.util.find_spec(mod) else f"python package '{mod}' is not installed ({hint})"
    return probe


def _browser() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install .[test])"
    if not shutil.which("chromium") and not os.path.exists("/usr/bin/chromium"):
        return "Debian's chromium is not installed (apt-get install chromium)"
    return None


PROBES = {
    "ort_cpu": _ort_cpu,
    "ort_cuda": _runtime("ort-cuda"),
    "openvino": _runtime("openvino"),
    "tensorrt": _runtime("tensorrt"),
    "torch": _module("torch", "pip install .[torch] / tox -e export"),
    "report": _module("plotly", "pip install .[report] / tox -e report"),
    "browser": _browser,
    "ray": _module("ray", "pip install .[ray] / tox -e ray"),
}


_CACHE: dict[str, str | None] = {}


def pytest_runtest_setup(item):
    required = {m.strip() for m in os.environ.get("QUANTBENCH_REQUIRE", "").split(",") if m.strip()}
    for marker, probe in PROBES.items():
        if item.get_closest_marker(marker) is None:
            continue
        if marker not in _CACHE:
            _CACHE[marker] = probe()
        reason = _CACHE[marker]
        if reason is None:
            continue
        if marker in required:
            pytest.fail(f"this environment requires '{marker}' but it is missing: {reason}", pytrace=False)
        pytest.skip(reason)
