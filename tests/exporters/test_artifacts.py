"""Artifact size and hash cover an ONNX model's external-data files."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantbench.common.onnx_save import with_lowest_ir_version
from quantbench.exporters.artifacts import artifact_sha256, artifact_size, sha256_file
from quantbench.exporters.onnx_info import onnx_files


def _model(weights: np.ndarray):
    w = numpy_helper.from_array(weights, "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], initializer=[w])
    return with_lowest_ir_version(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _save_external(model, path):
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=0)


def test_size_and_hash_include_external_data(tmp_path):
    a, b = tmp_path / "a" , tmp_path / "b"
    a.mkdir(), b.mkdir()
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    _save_external(_model(w), a / "m.onnx")
    w2 = w.copy()
    w2[0, 0] += 1
    _save_external(_model(w2), b / "m.onnx")
    data = a / "m.onnx.data"
    assert onnx_files(a / "m.onnx") == [a / "m.onnx", data]
    assert artifact_size(a / "m.onnx") == (a / "m.onnx").stat().st_size + data.stat().st_size
    assert data.stat().st_size >= w.nbytes
    # Same graph file bytes, different weights: the hash must tell them apart.
    assert sha256_file(a / "m.onnx") == sha256_file(b / "m.onnx")
    assert artifact_sha256(a / "m.onnx") != artifact_sha256(b / "m.onnx")


def test_single_file_model_hash_is_the_file_hash(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save_model(_model(np.ones((64, 64), np.float32)), str(path))
    assert onnx_files(path) == [path]
    assert artifact_sha256(path) == sha256_file(path)
    assert artifact_size(path) == path.stat().st_size


def test_missing_external_data_is_an_error(tmp_path):
    path = tmp_path / "m.onnx"
    _save_external(_model(np.ones((64, 64), np.float32)), path)
    (tmp_path / "m.onnx.data").unlink()
    with pytest.raises(ValueError, match="external-data file m.onnx.data is missing"):
        artifact_sha256(path)
