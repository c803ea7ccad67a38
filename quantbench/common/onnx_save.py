"""Write ONNX files that the oldest runtime able to run their operators can load.

``onnx.helper.make_model`` and ``onnx.save`` stamp the installed onnx's newest IR version (onnx 1.23:
IR 14), and ONNX Runtime refuses any IR above its own limit ("Unsupported model IR version: 14, max
supported IR version: 13" from onnxruntime-gpu 1.26-1.31) although the file uses nothing of IR 14.
Every ONNX file quantbench writes goes through :func:`save_model` (or, for a file another tool wrote,
:func:`lower_ir_version`), so it carries the lowest IR version its opsets allow: IR 8 for opset 17,
IR 10 for opset 21.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

# Domains whose opset -> IR table onnx knows; another domain (com.microsoft) constrains nothing here.
_ONNX_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training")
_LOCAL_FUNCTIONS_IR = 8  # model-local functions (ModelProto.functions) arrived in IR 8
_INITIALIZERS_NOT_INPUTS_IR = 4  # IR 3 required every initializer to be a graph input


def lowest_ir_version(model: Any) -> int:
    """The lowest IR version that ``model``'s opset imports (and features) allow.

    An opset this onnx does not know keeps the model's own IR version (it cannot be lowered safely).
    """
    from onnx.helper import OP_SET_ID_VERSION_MAP

    used = _used_domains(model)
    needed = _INITIALIZERS_NOT_INPUTS_IR
    for opset in model.opset_import:
        domain = opset.domain or "ai.onnx"
        if opset.domain not in _ONNX_DOMAINS or domain not in used:
            continue  # ORT's tools import every domain they know; only the ones nodes use count
        ir = OP_SET_ID_VERSION_MAP.get((domain, opset.version))
        if ir is None:
            return int(model.ir_version)
        needed = max(needed, ir)
    if len(model.functions):
        needed = max(needed, _LOCAL_FUNCTIONS_IR)
    return needed


def _used_domains(model: Any) -> set[str]:
    """Operator domains of every node (subgraphs and local functions included); the default one always."""
    used, graphs = {"ai.onnx"}, [model.graph]
    nodes = [n for f in model.functions for n in f.node]
    while graphs:
        g = graphs.pop()
        nodes += list(g.node)
        graphs += [a.g for n in g.node for a in n.attribute if a.HasField("g")]
        graphs += [sg for n in g.node for a in n.attribute for sg in a.graphs]
    used |= {n.domain or "ai.onnx" for n in nodes}
    return used


def with_lowest_ir_version(model: Any) -> Any:
    """Set ``model.ir_version`` to :func:`lowest_ir_version` (in place) and return the model."""
    model.ir_version = lowest_ir_version(model)
    return model


def save_model(model: Any, path: str | Path, **kwargs: Any) -> Path:
    """``onnx.save`` with the lowest IR version the model's opsets allow (keyword arguments go to onnx.save)."""
    import onnx

    onnx.save(with_lowest_ir_version(model), str(path), **kwargs)
    return Path(path)


def lower_ir_version(path: str | Path) -> int:
    """Rewrite ``path`` (written by another tool, e.g. ORT's quantizer) with its lowest IR version; returns it.

    Only the model header changes: external-data files are neither read nor rewritten.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ir = lowest_ir_version(model)
    if model.ir_version != ir:
        model.ir_version = ir
        onnx.save(model, str(path))
    return ir
