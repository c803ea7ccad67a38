"""The PyTorch baseline adapter."""
from __future__ import annotations

import numpy as np
import pytest

from quantbench.exporters.registry import resolve_model
from quantbench.runtimes import Artifact, RuntimeFailure, create_runtime

pytestmark = pytest.mark.torch


def test_torch_baseline_matches_the_shipped_onnx():
    import onnxruntime as ort

    from quantbench.exporters.registry import ASSETS

    source = resolve_model("fashion_cnn")
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    with create_runtime("torch", "cpu", {"threads": 1}) as rt:
        rt.activate(Artifact("torch", "fp32", source=source.to_dict()), batch=3)
        y = rt.fetch(rt.infer(rt.stage(x)))
        assert rt.execution_report()["exec_precision"] == "fp32"
    ref = ort.InferenceSession(str(ASSETS / "fashion_cnn.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_torch_refuses_what_it_does_not_run():
    rt = create_runtime("torch", "cpu")
    assert "int8" in rt.supports(Artifact("torch", "int8"))
    assert "CUDA" in rt.supports(Artifact("torch", "fp16"))
    with pytest.raises(RuntimeFailure):
        rt.activate(Artifact("onnx", "fp32"))
