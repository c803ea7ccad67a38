"""Read and validate ONNX files without onnxruntime or torch."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def load_checked(path: Path):
    """Load an ONNX model, raising a one-line ValueError when it is missing or not a valid model."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and others
        raise ValueError(f"{path} is not a valid ONNX model ({type(exc).__name__})") from None
    if not model.graph.node or not model.graph.input:
        raise ValueError(f"{path} is not a valid ONNX model (empty graph or no inputs)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - the checker raises ValidationError and others
        from quantbench.common.worker_protocol import one_line

        raise ValueError(f"{path} fails the ONNX checker: {one_line(exc)}") from None
    return model


def onnx_input_info(path: Path) -> tuple[str, list[int | str], str]:
    """(input name, shape without the batch axis, element type) of the model's first real input."""
    import onnx

    model = load_checked(path)
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if not inputs:
        raise ValueError(f"{path} has no graph inputs")
    inp = inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in inp.type.tensor_type.shape.dim]
    elem = onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type).name
    return inp.name, dims[1:], elem


def onnx_output_info(path: Path) -> list[tuple[str, list[int | str], str]]:
    """(name, shape without the batch axis, element type) of every graph output, in order."""
    import onnx

    model = load_checked(path)
    out = []
    for o in model.graph.output:
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in o.type.tensor_type.shape.dim]
        elem = onnx.helper.tensor_dtype_to_np_dtype(o.type.tensor_type.elem_type).name
        out.append((o.name, dims[1:], elem))
    return out


def count_params(path: Path) -> int:
    """Number of weight elements: initializers, not counting Q/DQ scales and zero points."""
    import onnx

    model = onnx.load(str(path))
    qparams = {name for node in model.graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")
               for name in node.input[1:]}
    return sum(int(np.prod(i.dims)) if i.dims else 1 for i in model.graph.initializer if i.name not in qparams)


def onnx_files(path: Path) -> list[Path]:
    """The model file followed by every external-data file its tensors reference (sorted, each once)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    graphs, locations = [model.graph], set()
    while graphs:
        g = graphs.pop()
        tensors = list(g.initializer) + [a.t for n in g.node for a in n.attribute if a.HasField("t")]
        tensors += [t for n in g.node for a in n.attribute for t in a.tensors]
        graphs += [a.g for n in g.node for a in n.attribute if a.HasField("g")]
        graphs += [sg for n in g.node for a in n.attribute for sg in a.graphs]
        locations |= {ExternalDataInfo(t).location for t in tensors if uses_external_data(t)}
    return [path] + [path.parent / loc for loc in sorted(locations)]
