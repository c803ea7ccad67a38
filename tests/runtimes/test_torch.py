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


def test_cuda_n_sets_its_device_and_waits_on_its_own_stream(monkeypatch):
    """Issue 10 item 9: on cuda:1, activate selects device 1, and infer/clock wait on device 1's stream."""
    import torch

    import quantbench.exporters.torch_models as torch_models

    calls: list[tuple] = []

    class _Module:
        def eval(self):
            return self

        def to(self, dev):
            calls.append(("to", str(dev)))
            return self

        def __call__(self, x):
            return x

    class _Stream:
        def __init__(self, dev):
            self.dev = dev

        def synchronize(self):
            calls.append(("sync", str(self.dev)))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda dev: calls.append(("set_device", str(dev))))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda dev=None: _Stream(dev))
    monkeypatch.setattr(torch_models, "build_module", lambda source: _Module())
    rt = create_runtime("torch", "cuda:1")
    rt.activate(Artifact("torch", "fp32", source={"kind": "fake"}), batch=2)
    assert calls[0] == ("set_device", "cuda:1")  # before the model moves and before any event or stream
    calls.clear()
    rt._infer_impl(torch.zeros(2, 3))
    assert calls == [("sync", "cuda:1")]
    assert rt.clock().device == torch.device("cuda:1")
    rt.deactivate()
