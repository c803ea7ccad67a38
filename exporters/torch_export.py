"""PyTorch → ONNX export (opset 17, dynamic batch, checked and shape-inferred)."""
from __future__ import annotations

import contextlib
import gc
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Mapping

from quantbench.common.memory import release_freed_memory
from quantbench.common.onnx_save import save_model

from .registry import ModelSource

OPSET = 17


def export_onnx(source: Mapping[str, Any] | ModelSource, out_path: Path, opset: int = OPSET) -> Path:
    """Export ``source`` to ``out_path`` with input ``input``, output ``logits`` and a dynamic batch axis.

    Uses the TorchScript exporter (``dynamo=False``): at opset 17 it writes one self-contained file
    for the torchvision CNNs, where the dynamo exporter moves to opset 18 with external data.
    """
    import onnx
    import torch

    from .adaptive_pool import exportable_adaptive_pools
    from .torch_models import build_module

    src = source if isinstance(source, ModelSource) else ModelSource.from_dict(dict(source))
    module = build_module(src)
    dummy = torch.zeros((1, *src.input_shape), dtype=torch.float32)
    exportable_adaptive_pools(module, dummy)  # VGG/AlexNet-style pools at small inputs
    release_freed_memory()  # a loaded state_dict's pages, before the exporter's copies of the weights
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings(), torch.no_grad(), released_folded_weights(module):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (dummy,), str(tmp), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                          do_constant_folding=True, dynamo=False)
    del module, dummy  # the weights' torch copy: gone before the ONNX copies are made
    gc.collect()
    release_freed_memory()
    # Checked and shape-inferred file to file (in C++): the in-memory versions serialised the model twice more.
    onnx.checker.check_model(str(tmp))
    inferred = tmp.with_suffix(".shapes.onnx")
    onnx.shape_inference.infer_shapes_path(str(tmp), str(inferred))
    tmp.unlink()
    save_model(onnx.load(str(inferred)), out_path)
    inferred.unlink()
    return out_path


@contextlib.contextmanager
def released_folded_weights(module: Any) -> Iterator[None]:
    """While the TorchScript exporter runs on ``module``: free each of its weights that the exported graph no
    longer uses, right after the graph is built.

    Constant folding (BatchNorm into the convolution before it) gives the graph new weights; the module's
    own convolution and BatchNorm tensors then only wait for the export to end while the exporter writes
    the model three times more (ModelProto, its bytes in C++ and in Python): ResNet-50's export peaked
    100 MB higher. The module is left with empty tensors. The exported bytes are the same. An exporter without
    the hook used here exports as is.
    """
    try:
        from torch.onnx._internal.torchscript_exporter import utils as ts_utils
    except ImportError:
        yield
        return
    original = getattr(ts_utils, "_model_to_graph", None)
    if original is None:
        yield
        return

    def model_to_graph(*args: Any, **kwargs: Any) -> Any:
        graph, params_dict, torch_out = original(*args, **kwargs)
        if (args[0] if args else kwargs.get("model")) is not module:  # another model's export: not ours to empty
            return graph, params_dict, torch_out
        # The module lets go of its tensors (new empty ones in its place, the tensors themselves untouched): what
        # the graph holds (its parameters, tensors baked into it as constants) stays alive through those
        # references, the rest is freed.
        import torch

        for sub in module.modules():
            for name, p in list(sub._parameters.items()):
                if p is not None:
                    sub._parameters[name] = torch.nn.Parameter(p.new_empty(0), requires_grad=p.requires_grad)
            for name, b in list(sub._buffers.items()):
                if b is not None:
                    sub._buffers[name] = b.new_empty(0)
        release_freed_memory()
        return graph, params_dict, torch_out

    ts_utils._model_to_graph = model_to_graph
    try:
        yield
    finally:
        ts_utils._model_to_graph = original
