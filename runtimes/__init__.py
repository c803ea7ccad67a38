"""Runtime adapters behind one interface (:mod:`runtimes.base`).

Adapters are registered by name and imported only when asked for, so listing runtimes never
imports a heavy package. A new adapter needs one line in ``_REGISTRY`` and nothing in the harness.
"""
from __future__ import annotations

import difflib
import importlib

from .base import Artifact, Availability, Clock, Runtime, RuntimeFailure, RuntimeUnavailable

_REGISTRY: dict[str, str] = {
    "ort-cpu": "quantbench.runtimes.ort_cpu:OrtCpuRuntime",
    "ort-cuda": "quantbench.runtimes.ort_cuda:OrtCudaRuntime",
    "ort-trt": "quantbench.runtimes.ort_cuda:OrtTensorRTRuntime",
    "openvino": "quantbench.runtimes.openvino_rt:OpenVinoRuntime",
    "tensorrt": "quantbench.runtimes.tensorrt_rt:TensorRTRuntime",
    "torch": "quantbench.runtimes.torch_rt:TorchRuntime",
}


def list_runtimes() -> list[str]:
    """Names of every runtime adapter this package knows (available here or not)."""
    return list(_REGISTRY)


class UnknownRuntime(ValueError):
    """A runtime name that no adapter has."""


def get_runtime_class(name: str) -> type[Runtime]:
    """Return the adapter class for ``name``; raise :class:`UnknownRuntime` naming the closest."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UnknownRuntime(f"unknown runtime '{name}'{hint} (known: {', '.join(_REGISTRY)})")
    module, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def create_runtime(name: str, device: str = "cpu", options: dict | None = None) -> Runtime:
    """Instantiate the adapter ``name`` for ``device``; raise RuntimeUnavailable with a hint."""
    cls = get_runtime_class(name)
    avail = cls.availability()
    if not avail.ok:
        raise RuntimeUnavailable(f"{name}: {avail}")
    return cls(device=device, options=options)


__all__ = [
    "Artifact", "Availability", "Clock", "Runtime", "RuntimeFailure", "RuntimeUnavailable",
    "UnknownRuntime", "create_runtime", "get_runtime_class", "list_runtimes",
]
