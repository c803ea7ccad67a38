"""Parameter table of a model, Keras-style: trainable and non-trainable parameter counts.

From the PyTorch model when there is one: trainable = elements of parameters with ``requires_grad``;
non-trainable = frozen parameters plus floating-point buffers that the state_dict keeps (BatchNorm running
mean and variance; integer counters such as ``num_batches_tracked`` are not parameters). From an ONNX file's
initializers otherwise: the running mean and variance inputs of BatchNormalization nodes are non-trainable,
every other floating-point initializer is trainable (Q/DQ scales, zero points and integer shape constants
are not parameters).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def torch_param_counts(module: Any) -> dict[str, Any]:
    """``{"trainable_params", "non_trainable_params", "params_from": "torch"}`` of a ``torch.nn.Module``."""
    names = {name for name, _ in module.named_parameters()}
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    buffers = sum(t.numel() for name, t in module.state_dict().items()
                  if name not in names and t.is_floating_point())
    return {"trainable_params": int(trainable), "non_trainable_params": int(frozen + buffers), "params_from": "torch"}


def onnx_param_counts(path: Path) -> dict[str, Any]:
    """The same counts from an ONNX file's initializers (see the module docstring)."""
    import onnx

    model = onnx.load(str(path))
    g = model.graph
    qparams = {name for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") for name in n.input[1:]}
    stats = {name for n in g.node if n.op_type == "BatchNormalization" for name in n.input[3:5]}
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)
    trainable = non_trainable = 0
    for init in g.initializer:
        if init.name in qparams or (init.data_type not in floats and not _is_quantized_weight(init, g)):
            continue
        n = int(np.prod(init.dims)) if init.dims else 1
        if init.name in stats:
            non_trainable += n
        else:
            trainable += n
    return {"trainable_params": trainable, "non_trainable_params": non_trainable, "params_from": "onnx-initializers"}


def _is_quantized_weight(init: Any, graph: Any) -> bool:
    """An integer initializer that a DequantizeLinear turns into a weight (a QDQ file's INT8 weights)."""
    return any(n.op_type == "DequantizeLinear" and n.input[0] == init.name for n in graph.node)


def model_param_counts(source: Any, fp32_path: Path) -> dict[str, Any]:
    """Counts from the PyTorch model behind ``source`` when torch can build it, else from ``fp32_path``."""
    import importlib.util

    if getattr(source, "kind", "onnx") != "onnx" and importlib.util.find_spec("torch") is not None:
        from .torch_models import build_module

        return torch_param_counts(build_module(source))
    return onnx_param_counts(fp32_path)
