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
    ref = ort.InferenceSession(str(ASSETS / "fashion_cnn.onnx"),
                               providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_torch_refuses_what_it_does_not_run():
    rt = create_runtime("torch", "cpu")
    assert "int8" in rt.supports(Artifact("torch", "int8"))
    assert "CUDA" in rt.supports(Artifact("torch", "fp16"))
    with pytest.raises(RuntimeFailure):
        rt.activate(Artifact("onnx", "fp32"))


@pytest.fixture
def fake_torch_cuda(monkeypatch):
    """torch.cuda on a CPU-only build, recording one timeline: which device each stream belongs to, when
    events are recorded, when the host waits. Device copies are CPU copies (Tensor.to(cuda) is identity)."""
    import torch

    import quantbench.exporters.torch_models as torch_models

    timeline: list[tuple] = []

    class _Stream:
        def __init__(self, dev):
            self.dev = str(dev)

        def synchronize(self):
            timeline.append(("sync", self.dev))

    class _Event:
        def __init__(self, enable_timing=False):
            self.enable_timing = enable_timing

        def record(self, stream):
            timeline.append(("record", id(self), stream.dev))

        def synchronize(self):
            timeline.append(("event-sync",))

        def elapsed_time(self, end):
            return 0.25

    class _Module:
        def eval(self):
            return self

        def to(self, dev):
            timeline.append(("module-to", str(dev)))
            return self

        def half(self):
            return self

        def __call__(self, x):
            timeline.append(("forward",))
            return x * 2

    real_to, real_empty = torch.Tensor.to, torch.empty
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda dev: timeline.append(("set_device", str(dev))))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda dev=None: _Stream(dev))
    monkeypatch.setattr(torch.cuda, "Event", _Event)
    monkeypatch.setattr(torch, "empty", lambda *a, pin_memory=False, **k: (
        timeline.append(("pinned-alloc",)) if pin_memory else None, real_empty(*a, **k))[1])
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: self if a and "cuda" in str(a[0])
                        else real_to(self, *a, **k))
    monkeypatch.setattr(torch_models, "build_module", lambda source: _Module())
    return timeline


def test_cuda_n_works_on_its_own_device_and_events_end_before_the_wait(fake_torch_cuda):
    """Issue 10 item 9: on cuda:1 every stream the adapter waits on or records on is cuda:1's. Issue 18's rule for
    all GPU adapters: the end event is recorded before the host waits, and pinned buffers are made once per shape,
    outside the timed copies."""
    timeline = fake_torch_cuda
    rt = create_runtime("torch", "cuda:1")
    rt.activate(Artifact("torch", "fp32", source={"kind": "fake"}), batch=2)
    assert ("set_device", "cuda:1") in timeline and ("module-to", "cuda:1") in timeline
    clock = rt.clock()
    x = np.arange(2 * 3, dtype=np.float32).reshape(2, 3)
    for _ in range(3):
        timeline.clear()
        staged, h2d = clock.time(rt.stage, x)
        out, compute = clock.time(rt.infer, staged)
        host, d2h = clock.time(rt.fetch, out)
        np.testing.assert_array_equal(host, x * 2)
        assert host.dtype == np.float32 and h2d == compute == d2h == 250_000
        assert {e[-1] for e in timeline if e[0] in ("sync", "record")} == {"cuda:1"}
        for i, entry in enumerate(timeline):
            if entry[0] == "sync":  # every host wait comes right after an end event
                assert timeline[i - 1][0] == "record", timeline
    assert ("pinned-alloc",) not in timeline  # the buffers of the first iteration are reused
    assert rt.clock() is clock and clock.kind == "cuda-events"
    used = rt.settings_used()
    assert used["h2d_host_memory"] == used["d2h_host_memory"] == "pinned"
    rt.deactivate()
