"""PyTorch eager mode: the source-framework baseline the seed studies timed."""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import Artifact, Availability, Clock, Runtime, RuntimeFailure, missing_package


class CudaEventClock(Clock):
    """Times a call with a pair of CUDA events on ``device``'s current stream (not device 0's)."""

    kind = "cuda-events"

    def __init__(self, torch_module: Any, device: Any = None) -> None:
        self.torch, self.device = torch_module, device

    def time(self, fn, *args):  # type: ignore[override]
        torch = self.torch
        stream = torch.cuda.current_stream(self.device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        out = fn(*args)
        end.record(stream)
        end.synchronize()
        return out, int(start.elapsed_time(end) * 1e6)


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
        except Exception:  # a broken driver must not break discovery
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
        torch.set_grad_enabled(False)

    def _stage_impl(self, inputs: np.ndarray) -> Any:
        t = self.torch.from_numpy(np.ascontiguousarray(inputs))
        if self.dev.type == "cuda":
            t = t.pin_memory().to(self.dev, non_blocking=True)
        return t.to(self.dtype)

    def _infer_impl(self, staged: Any) -> Any:
        with self.torch.inference_mode():
            out = self.module(staged)
        if self.dev.type == "cuda":
            self.torch.cuda.current_stream(self.dev).synchronize()
        return out

    def _fetch_impl(self, outputs: Any) -> np.ndarray:
        return outputs.float().cpu().numpy()

    def clock(self) -> Clock:
        if self.dev.type == "cuda":
            return CudaEventClock(self.torch, self.dev)
        return Clock()

    def settings_used(self) -> dict[str, Any]:
        used: dict[str, Any] = {"threads": self.torch.get_num_threads(), "device": self.device}
        if self.dev.type == "cuda":
            backends = self.torch.backends
            # "fp32" convolutions may run in TF32 (cuDNN's default), matmuls not (torch's default).
            used["tf32"] = {"conv": bool(backends.cudnn.allow_tf32), "matmul": bool(backends.cuda.matmul.allow_tf32)}
            used["h2d_host_memory"] = "pinned"  # pin_memory() then a non-blocking copy
        return used

    def execution_report(self) -> dict[str, Any]:
        prec = "fp16" if self.dtype == self.torch.float16 else "fp32"
        return {"exec_precision": prec, "int8_op_share": 0.0}

    def _deactivate_impl(self) -> None:
        self.module = None
