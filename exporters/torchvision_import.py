"""torchvision's model builders without running ``torchvision/__init__``.

``import torchvision`` imports its detection ops, and they import ``torch._dynamo`` (and sympy): 160 MiB
of RSS and about 2 s in a process that only builds a classification CNN to export it (ResNet-50's export
worker peaked at 1.2 GiB, 670 MiB of it imports). Here the builder's own file is imported under
placeholder parent packages, and every torchvision module that this loaded is forgotten again, so a later
``import torchvision`` in the same process still gets the real, whole package. A torchvision laid out
otherwise, or one already imported, is used the ordinary way. The network is the same code either way.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

# builder -> its file in torchvision/models (the registry's torchvision names)
FILES = {"resnet18": "resnet", "resnet50": "resnet", "mobilenet_v2": "mobilenetv2",
         "mobilenet_v3_small": "mobilenetv3", "mobilenet_v3_large": "mobilenetv3", "vgg16": "vgg",
         "squeezenet1_0": "squeezenet", "shufflenet_v2_x1_0": "shufflenetv2", "efficientnet_b0": "efficientnet",
         "googlenet": "googlenet", "densenet121": "densenet", "alexnet": "alexnet"}


def model_builder(name: str) -> Callable[..., Any]:
    """``torchvision.models.<name>``, imported alone when torchvision is not imported yet."""
    if "torchvision" not in sys.modules and name in FILES:
        try:
            return _isolated(FILES[name], name)
        except Exception:  # noqa: BLE001 - another torchvision layout: the whole package below
            pass
    import torchvision

    return getattr(torchvision.models, name)


def _isolated(file: str, name: str) -> Callable[..., Any]:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("torchvision is not installed")
    root = Path(list(spec.submodule_search_locations)[0])
    before = set(sys.modules)
    try:
        for package, path in (("torchvision", root), ("torchvision.models", root / "models"),
                              ("torchvision.ops", root / "ops")):
            placeholder = types.ModuleType(package)
            placeholder.__path__ = [str(path)]
            placeholder.__spec__ = importlib.machinery.ModuleSpec(package, None, is_package=True)
            placeholder.__spec__.submodule_search_locations = [str(path)]
            sys.modules[package] = placeholder
        return getattr(importlib.import_module(f"torchvision.models.{file}"), name)
    finally:
        for key in set(sys.modules) - before:
            if key == "torchvision" or key.startswith("torchvision."):
                del sys.modules[key]
