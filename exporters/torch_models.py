"""Build the PyTorch module a :class:`~exporters.registry.ModelSource` describes (needs torch)."""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from quantbench.common.worker_protocol import one_line

from .registry import BUILTINS, ModelSource

RANDOM_INIT_SEED = 0


def build_module(source: Mapping[str, Any] | ModelSource):
    """An eval-mode ``torch.nn.Module`` with the source's weights (or explicit random init)."""
    import torch

    src = source if isinstance(source, ModelSource) else ModelSource.from_dict(dict(source))
    # Random init is seeded, so the ONNX export and the torch baseline get the same weights.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        module = construct_module(src)
    wf = src.weights_file()
    if wf is not None:
        state = load_state_dict(wf)
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            first = [ln.strip() for ln in str(exc).splitlines() if ln.strip()][1:2] or [one_line(exc)]
            raise ValueError(f"weights {wf.name} do not fit {src.name}: {first[0]}") from None
    return module.eval()


def load_state_dict(path: Path) -> Mapping[str, Any]:
    """A state_dict from ``path`` (tensors only: ``weights_only``), or a one-line ValueError saying why not."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises pickle, zip and runtime errors for foreign files
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"weights file {path} is not a PyTorch state_dict readable with weights_only=True "
                         f"({why[:160]})") from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]  # the usual training-checkpoint wrapper
    if not isinstance(state, Mapping) or not state or not all(isinstance(k, str) for k in state):
        raise ValueError(f"weights file {path} holds a {type(state).__name__}, not a state_dict "
                         f"(a mapping of parameter names to tensors, as torch.save(model.state_dict(), path) writes)")
    return state


def fit_classifier_to_input(module: Any, input_shape: tuple[int, int, int]) -> bool:
    """VGG/AlexNet at small inputs: drop the adaptive average pool that would enlarge the feature map and let
    the first dense layer take the map as it is (``C*h*w`` features), as Keras builds VGG16 for 32×32 inputs.

    Applies only when the map is smaller than the pool's output (e.g. VGG16's 1×1 map at 32×32 against
    its 7×7 pool, which would copy each feature 49 times into a 25088-wide classifier); at 224×224 the
    network is torchvision's own, so ImageNet state_dicts still load. Returns True when it changed ``module``.
    """
    import torch
    from torch import nn

    pool, classifier = getattr(module, "avgpool", None), getattr(module, "classifier", None)
    features = getattr(module, "features", None)
    if not (isinstance(pool, nn.AdaptiveAvgPool2d) and isinstance(classifier, nn.Sequential)
            and isinstance(features, nn.Module)):
        return False
    oh, ow = (pool.output_size, pool.output_size) if isinstance(pool.output_size, int) else pool.output_size
    if oh is None or ow is None or (input_shape[1] >= 32 * oh and input_shape[2] >= 32 * ow):
        return False  # VGG/AlexNet downsample by at most 32: the map is at least the pool's size
    try:
        with torch.no_grad():
            c, h, w = features(torch.zeros((1, *input_shape))).shape[1:]
    except RuntimeError as exc:  # e.g. AlexNet's pools shrink a 32×32 input to nothing
        raise ValueError(f"{type(module).__name__} cannot take {input_shape[1]}×{input_shape[2]} inputs: "
                         f"{one_line(exc)}") from None
    if h >= oh and w >= ow:
        return False
    k = next((i for i, m in enumerate(classifier) if isinstance(m, nn.Linear)), None)
    if k is None or classifier[k].in_features != c * oh * ow:
        return False
    dense = nn.Linear(c * h * w, classifier[k].out_features)
    nn.init.normal_(dense.weight, 0, 0.01)  # torchvision's VGG init for dense layers
    nn.init.zeros_(dense.bias)
    module.avgpool, classifier[k] = nn.Identity(), dense
    return True


def construct_module(src: ModelSource):
    """The source's ``torch.nn.Module`` as its builder makes it: no seed set, no weights file loaded (build_module
    does both)."""
    import torch

    c, h, _ = src.input_shape
    if src.kind == "builtin":
        from . import small_cnns

        module = getattr(small_cnns, BUILTINS[src.target])(in_channels=c, num_classes=src.num_classes, image_size=h)
    elif src.kind == "torchvision":
        from .torchvision_import import model_builder  # without torchvision's ops (torch._dynamo): 160 MiB less

        module = model_builder(src.target)(weights=None, num_classes=src.num_classes,
                                           **({"aux_logits": False, "init_weights": True}
                                              if src.target == "googlenet" else {}))
        fit_classifier_to_input(module, src.input_shape)
    elif src.kind == "callable":
        mod_name, fn_name = src.target.rsplit(":", 1)
        try:
            fn = getattr(importlib.import_module(mod_name), fn_name)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot import '{src.target}': {exc}") from None
        # The function builds the network with its own weights (weights = "builtin"), or a
        # state_dict given as weights is loaded on top of it.
        module = fn()
        if not isinstance(module, torch.nn.Module):
            raise ValueError(f"'{src.target}' returned {type(module).__name__}, not a torch.nn.Module")
    else:
        raise ValueError(f"model '{src.name}' is an ONNX file: there is no PyTorch module to build")
    return module
