"""Where TensorRT's shared libraries are, and why they cannot be loaded: no GPU needed.

Two facts the adapters depend on:

- The TensorRT execution provider in every onnxruntime-gpu wheel on PyPI (1.26-1.31) links
  ``libnvinfer.so.10`` and ``libnvonnxparser.so.10``: TensorRT **10**. ``get_available_providers()``
  lists it whether or not those load, and a session then falls back to CUDA/CPU.
- ``tensorrt-cu13-libs`` 11.x on PyPI is a small stub that fetches the real wheel from NVIDIA's index
  (https://pypi.nvidia.com) when pip builds it, and ``tensorrt-cu12(-libs)`` 10.x have no binary wheel on
  PyPI: a GPU host installs TensorRT with ``--extra-index-url https://pypi.nvidia.com``. An install
  without the libraries is named as such, with that hint.
"""
from __future__ import annotations

import ctypes
import importlib.metadata as md
import importlib.util
from pathlib import Path

NVIDIA_INDEX = "https://pypi.nvidia.com"
TENSORRT_EP_SONAMES = ("libnvinfer.so.10", "libnvonnxparser.so.10")
# Distributions that carry (or should carry) libnvinfer, and the packages they install it into.
_LIB_DISTS = ("tensorrt-cu12-libs", "tensorrt-cu13-libs", "tensorrt-libs", "tensorrt-cu12", "tensorrt-cu13", "tensorrt")
_LIB_PACKAGES = ("tensorrt_libs", "tensorrt_cu12_libs", "tensorrt_cu13_libs")


def _installed(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _package_dirs() -> list[Path]:
    dirs = []
    for name in _LIB_PACKAGES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        dirs += [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    return dirs


def library_files(prefix: str = "libnvinfer.so") -> list[Path]:
    """TensorRT library files named ``prefix*`` shipped by the installed TensorRT wheels."""
    found: set[Path] = set()
    for dist in _LIB_DISTS:
        if _installed(dist) is None:
            continue
        for f in md.files(dist) or []:
            if f.name.startswith(prefix):
                found.add(Path(str(f.locate())))
    for d in _package_dirs():
        found |= set(d.glob(f"{prefix}*"))
    return sorted(found)


def load_library(soname: str) -> bool:
    """Load ``soname`` from the loader path or from the TensorRT wheels' folder.

    Once loaded, a later ``dlopen`` of the same soname (the TensorRT EP's) finds it in the process.
    """
    candidates = [soname] + [str(p) for p in library_files(soname) if p.name == soname]
    for name in candidates:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def stub_install() -> str | None:
    """A TensorRT distribution installed without any libnvinfer (PyPI's stub), as one line, or None."""
    dists = [f"{d} {v}" for d in _LIB_DISTS if (v := _installed(d)) is not None]
    if dists and not library_files():
        return (f"{', '.join(dists)} installed without TensorRT's libraries (PyPI ships stubs that fetch the real "
                f"wheel from NVIDIA's index)")
    return None


def nvidia_index_hint(extra: str) -> str:
    """The install line for a TensorRT extra, with NVIDIA's package index."""
    return f"pip install --extra-index-url {NVIDIA_INDEX} .[{extra}]"


def tensorrt_ep_problem() -> str | None:
    """Why the onnxruntime-gpu TensorRT EP cannot load its TensorRT 10 libraries here (one line), or None."""
    missing = [s for s in TENSORRT_EP_SONAMES if not load_library(s)]
    if not missing:
        return None
    others = sorted({p.name for p in library_files()} - set(TENSORRT_EP_SONAMES))
    newer = f"; found {', '.join(others)}, which it does not link" if others else ""
    return f"the TensorRT EP links TensorRT 10 and {', '.join(missing)} cannot be loaded{newer}"
