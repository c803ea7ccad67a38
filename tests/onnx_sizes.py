"""ONNX files of an exact size on disk, for tests of the size units (kB = 1000 bytes, MB = 1e6 bytes)."""
from __future__ import annotations

from pathlib import Path


def onnx_of_size(path: Path, n: int) -> Path:
    """A valid ONNX model (y = Identity(x)) padded with a doc string to exactly ``n`` bytes on disk."""
    import onnx
    from onnx import TensorProto, helper

    from quantbench.common.onnx_save import with_lowest_ir_version

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = with_lowest_ir_version(helper.make_model(graph))
    pad = 0
    for _ in range(10):  # the doc string's length prefix can grow by a byte: converge
        model.doc_string = "p" * pad
        data = model.SerializeToString()
        if len(data) == n:
            break
        pad += n - len(data)
    path.write_bytes(data)
    onnx.checker.check_model(str(path))
    return path
