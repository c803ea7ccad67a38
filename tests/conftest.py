"""Skip tests whose runtime or data is missing — unless the environment requires it.

``QUANTBENCH_REQUIRE=openvino,ort_cpu`` (set by tox) turns the skip of those markers into a
failure, so an environment cannot pass having run nothing. ``shared_data`` marks tests that need
the data sets in ``../shared/data`` next to the checkout (the CIFAR-10 JPEGs); ``.ci/run`` requires
it when that folder exists.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

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


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CIFAR10_TARBALL = SHARED_DATA / "cifar10-jpeg.tar.gz"


def _shared_data() -> str | None:
    if CIFAR10_TARBALL.is_file():
        return None
    return f"needs the CIFAR-10 JPEGs at {CIFAR10_TARBALL} (../shared/data next to the checkout): not found"


PROBES = {
    "ort_cpu": _ort_cpu,
    "ort_cuda": _runtime("ort-cuda"),
    "openvino": _runtime("openvino"),
    "tensorrt": _runtime("tensorrt"),
    "ort_trt": _runtime("ort-trt"),
    "torch": _module("torch", "pip install .[torch] / tox -e export"),
    "report": _module("plotly", "pip install .[report] / tox -e report"),
    "browser": _browser,
    "ray": _module("ray", "pip install .[ray] / tox -e ray"),
    "numba": _module("numba", "pip install .[calibration]"),
    "shared_data": _shared_data,
}


def pytest_configure(config):
    config.addinivalue_line("markers", "shared_data: needs the data sets in ../shared/data (CIFAR-10 JPEGs)")


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One artifact cache (QUANTBENCH_CACHE / cache_dir) for the session, so variants are quantized once
    across tests and test folders."""
    return tmp_path_factory.mktemp("qb-cache")


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
        pytest.skip(f"{reason} (QUANTBENCH_REQUIRE={marker} makes this a failure)")
