"""PyTorch eager mode: the source-framework baseline the seed studies timed."""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import Artifact, Availability, Clock, Runtime, RuntimeFailure, missing_package


class CudaEventClock(Clock):
    """Times a call with a pair of CUDA events on ``device``'s current stream (not device 0's).

    As :class:`runtimes.cuda_mem.CudaEventClock`: the adapter marks :meth:`begin` right before it enqueues
    (after host work such as filling a pinned buffer) and :meth:`end` right after, before it waits for the
    stream; an end event recorded after that wait would time the wait and Python's overhead too.
    """

    kind = "cuda-events"

    def __init__(self, torch_module: Any, device: Any = None) -> None:
        self.torch, self.device = torch_module, device
        self._armed = self._ended = False
        self._stream = self._start = self._end = None

    def begin(self) -> None:
        if self._armed and not self._ended:
            self._start.record(self._stream)

    def end(self) -> None:
        if self._armed and not self._ended:
            self._end.record(self._stream)
            self._ended = True

    def time(self, fn, *args):  # type: ignore[override]
        torch = self.torch
        self._stream = torch.cuda.current_stream(self.device)
        self._start, self._end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        self._armed, self._ended = True, False
        self._start.record(self._stream)  # re-recorded by begin() when the adapter marks it
        try:
            out = fn(*args)
        finally:
            self._armed = False
        if not self._ended:
            self._end.record(self._stream)
        self._end.synchronize()
        return out, int(self._start.elapsed_time(self._end) * 1e6)


class TorchRuntime(Runtime):
    """``torch`` eager inference of the source model (fp32; fp16 via ``.half()`` on CUDA).

    Options: threads. Artifact format ``torch``: the recipe the exporter built the ONNX from.
    """

    name = "torch"
    formats = ("torch",)
    extra = "torch"
    tox_env = "export"

    @classmethod
    def availability(cls) -> Availability:
        return missing_package("torch", cls.extra, cls.tox_env) or Availability(True)

    @classmethod
    def devices(cls) -> list[str]:
        import torch

        devs = ["cpu"]
        try:
            if torch.cuda.is_available():
                devs += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        except Exception:  # noqa: BLE001 - a broken driver must not break discovery
            pass
        return devs

    @classmethod
    def requirements(cls) -> str:
        """The NVIDIA driver the installed torch CUDA build needs ("" for a CPU-only build)."""
        import importlib.util

        from .cuda_mem import driver_requirement

        if importlib.util.find_spec("torch") is None:
            return ""
        import torch

        cuda = str(torch.version.cuda or "")
        return driver_requirement(int(cuda.split(".")[0]), {}) if cuda else ""

    @classmethod
    def versions(cls) -> dict[str, str]:
        import torch

        v = {"torch": torch.__version__}
        if torch.version.cuda:
            v["torch_cuda"] = str(torch.version.cuda)
        return v

    def supports(self, artifact: Artifact) -> str | None:
        reason = super().supports(artifact)
        if reason:
            return reason
        if artifact.precision == "int8":
            return "torch baseline runs fp32/fp16 only (int8 comes from the ONNX exporters)"
        if artifact.precision == "fp16" and not self.device.startswith("cuda"):
            return "torch fp16 (.half()) is only benchmarked on CUDA; CPU half convolutions are not a deployment path"
        return None

    def _activate_impl(self, artifact: Artifact) -> None:
        import torch

        from quantbench.exporters.torch_models import build_module

        threads = self.options.get("threads")
        if threads:
            torch.set_num_threads(int(threads))
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeFailure("torch: CUDA requested but torch.cuda.is_available() is False")
        self.torch = torch
        self.dev = torch.device(self.device)
        if self.dev.type == "cuda":
            # Events, streams and synchronize() act on the current device: make it this one, not cuda:0.
            torch.cuda.set_device(self.dev)
        module = build_module(artifact.source).eval().to(self.dev)
        self.dtype = torch.float16 if artifact.precision == "fp16" else torch.float32
        if self.dtype == torch.float16:
            module = module.half()
        self.module = module
        self._clock: CudaEventClock | None = None
        self._host_in = self._host_out = None  # pinned staging buffers (CUDA), one per shape
        torch.set_grad_enabled(False)

    def _stage_impl(self, inputs: np.ndarray) -> Any:
        torch = self.torch
        t = torch.from_numpy(np.ascontiguousarray(inputs))
        if self.dev.type != "cuda":
            return t.to(self.dtype)
        # Host work (dtype conversion into a pinned buffer kept per shape) before the timed copy: pinning
        # a fresh buffer each call (pin_memory()) allocates page-locked memory inside the h2d span.
        if self._host_in is None or tuple(self._host_in.shape) != tuple(t.shape):
            self._host_in = torch.empty(tuple(t.shape), dtype=self.dtype, pin_memory=True)
        self._host_in.copy_(t)
        self._mark("begin")
        staged = self._host_in.to(self.dev, non_blocking=True)
        self._mark("end")
        return staged

    def _infer_impl(self, staged: Any) -> Any:
        self._mark("begin")
        with self.torch.inference_mode():
            out = self.module(staged)
        if self.dev.type == "cuda":
            self._mark("end")  # before the wait: the events time the GPU, not the host waking up
            self.torch.cuda.current_stream(self.dev).synchronize()
        return out

    def _fetch_impl(self, outputs: Any) -> np.ndarray:
        if self.dev.type != "cuda":
            return outputs.float().cpu().numpy()
        # A copy into pageable memory (outputs.cpu()) returns only once done; pinned memory times the DMA.
        if self._host_out is None or tuple(self._host_out.shape) != tuple(outputs.shape) \
                or self._host_out.dtype != outputs.dtype:
            self._host_out = self.torch.empty(tuple(outputs.shape), dtype=outputs.dtype, pin_memory=True)
        self._mark("begin")
        self._host_out.copy_(outputs, non_blocking=True)
        self._mark("end")
        self.torch.cuda.current_stream(self.dev).synchronize()
        return self._host_out.float().numpy().copy()  # the pinned buffer is reused

    def _mark(self, which: str) -> None:
        if self._clock is not None:
            getattr(self._clock, which)()

    def clock(self) -> Clock:
        if self.dev.type == "cuda":
            if self._clock is None:
                self._clock = CudaEventClock(self.torch, self.dev)
            return self._clock
        return Clock()

    def settings_used(self) -> dict[str, Any]:
        used: dict[str, Any] = {"threads": self.torch.get_num_threads(), "device": self.device}
        if self.dev.type == "cuda":
            backends = self.torch.backends
            # "fp32" convolutions may run in TF32 (cuDNN's default), matmuls not (torch's default).
            used["tf32"] = {"conv": bool(backends.cudnn.allow_tf32), "matmul": bool(backends.cuda.matmul.allow_tf32)}
            used["h2d_host_memory"] = used["d2h_host_memory"] = "pinned"  # buffers kept per shape, non-blocking copies
        return used

    def execution_report(self) -> dict[str, Any]:
        prec = "fp16" if self.dtype == self.torch.float16 else "fp32"
        return {"exec_precision": prec, "int8_op_share": 0.0}

    def _deactivate_impl(self) -> None:
        self.module = self._host_in = self._host_out = self._clock = None
