"""Build the PyTorch module a :class:`~exporters.registry.ModelSource` describes (needs torch)."""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .registry import BUILTINS, ModelSource

RANDOM_INIT_SEED = 0


def build_module(source: Mapping[str, Any] | ModelSource):
    """An eval-mode ``torch.nn.Module`` with the source's weights (or explicit random init)."""
    import torch

    src = source if isinstance(source, ModelSource) else ModelSource.from_dict(dict(source))
    # Random init is seeded, so the ONNX export and the torch baseline get the same weights.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        module = _construct(src)
    wf = src.weights_file()
    if wf is not None:
        state = load_state_dict(wf)
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            first = [ln.strip() for ln in str(exc).splitlines() if ln.strip()][1:2] or [str(exc).splitlines()[0]]
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


def _construct(src: ModelSource):
    import torch

    c, h, _ = src.input_shape
    if src.kind == "builtin":
        from . import small_cnns

        module = getattr(small_cnns, BUILTINS[src.target])(in_channels=c, num_classes=src.num_classes, image_size=h)
    elif src.kind == "torchvision":
        import torchvision

        module = getattr(torchvision.models, src.target)(weights=None, num_classes=src.num_classes,
                                                         **({"aux_logits": False, "init_weights": True}
                                                            if src.target == "googlenet" else {}))
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
