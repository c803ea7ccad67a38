"""ONNX Runtime on the CUDA (and TensorRT) execution providers, with IO binding.

Per iteration: the batch is copied to the device as an ``OrtValue`` (host→device), the session
runs with its output bound to the device (compute, synchronised), then the output is copied back
(device→host). ``onnxruntime-gpu`` cannot share an environment with ``onnxruntime``: installing
both leaves whichever was installed last, and the CPU build has no CUDA provider.
"""
from __future__ import annotations

import importlib.metadata as md
from typing import Any

import numpy as np

from .base import Artifact, Availability, Clock, Runtime, RuntimeFailure, missing_package
from .cuda_mem import driver_present
from .ort_cpu import summarize_optimized_graph


def _dist_installed(name: str) -> bool:
    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


def provider_availability(provider: str, extra: str, tox_env: str) -> Availability:
    """Why ``provider`` is not usable from the installed onnxruntime, precisely."""
    missing = missing_package("onnxruntime", extra, tox_env)
    if missing:
        return missing
    import onnxruntime as ort

    if provider in ort.get_available_providers():
        if not driver_present():
            return Availability(False, "onnxruntime-gpu is installed but no NVIDIA driver/GPU was found",
                                "run on a machine with an NVIDIA GPU and driver")
        return Availability(True)
    if not driver_present():
        no_gpu = "; no NVIDIA driver/GPU found on this machine either"
    else:
        no_gpu = ""
    cpu, gpu = _dist_installed("onnxruntime"), _dist_installed("onnxruntime-gpu")
    if cpu and gpu:
        return Availability(False, "both onnxruntime and onnxruntime-gpu are installed and the CPU build shadows the GPU one",
                            f"pip uninstall -y onnxruntime onnxruntime-gpu && pip install .[{extra}] / tox -e {tox_env}")
    if cpu and not gpu:
        return Availability(False, f"the installed onnxruntime is the CPU build (no {provider}){no_gpu}",
                            f"pip uninstall -y onnxruntime && pip install .[{extra}] / tox -e {tox_env}")
    if provider == "TensorrtExecutionProvider":
        return Availability(False, "onnxruntime-gpu lists no TensorrtExecutionProvider (TensorRT libraries not found)",
                            "pip install .[tensorrt] next to .[ort-gpu]")
    return Availability(False, f"onnxruntime-gpu lists no {provider} (CUDA/cuDNN libraries not found or mismatched)",
                        "install the CUDA and cuDNN versions this onnxruntime-gpu was built for")


class OrtCudaRuntime(Runtime):
    """ONNX Runtime, CUDAExecutionProvider. Options: threads, cudnn_conv_algo_search, cuda_graph."""

    name = "ort-cuda"
    extra = "ort-gpu"
    tox_env = "ort-cuda"
    provider = "CUDAExecutionProvider"

    @classmethod
    def availability(cls) -> Availability:
        return provider_availability(cls.provider, cls.extra, cls.tox_env)

    @classmethod
    def devices(cls) -> list[str]:
        from .cuda_mem import load_backend

        try:
            return [f"cuda:{i}" for i in range(load_backend().device_count())]
        except Exception:  # noqa: BLE001 - without cuda-python, assume the first GPU
            return ["cuda:0"]

    @classmethod
    def versions(cls) -> dict[str, str]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__, "ort_build": ort.get_device()}

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return ("threads", "cudnn_conv_algo_search", "cuda_graph")

    def _provider_options(self) -> list[tuple[str, dict[str, Any]]]:
        algo = str(self.options.get("cudnn_conv_algo_search", "EXHAUSTIVE")).upper()
        if algo not in ("EXHAUSTIVE", "HEURISTIC", "DEFAULT"):
            raise RuntimeFailure(f"ort-cuda: cudnn_conv_algo_search must be EXHAUSTIVE, HEURISTIC or DEFAULT, not '{algo}'")
        opts = {"device_id": self.device_index, "cudnn_conv_algo_search": algo}
        if self.options.get("cuda_graph"):
            opts["enable_cuda_graph"] = "1"
        return [(self.provider, opts)]

    def _activate_impl(self, artifact: Artifact) -> None:
        import os
        import tempfile

        import onnxruntime as ort

        if not self.device.startswith("cuda"):
            raise RuntimeFailure(f"{self.name} runs on cuda devices, not '{self.device}'")
        self.device_index = int(self.device.split(":")[1]) if ":" in self.device else 0
        so = ort.SessionOptions()
        if self.options.get("threads"):
            so.intra_op_num_threads = int(self.options["threads"])
        self._tmpdir = tempfile.TemporaryDirectory(prefix="qb-ortgpu-")
        so.optimized_model_filepath = os.path.join(self._tmpdir.name, "optimized.onnx")
        providers = self._provider_options() + [("CPUExecutionProvider", {})]
        try:
            self.session = ort.InferenceSession(str(artifact.path), so, providers=providers)
        except Exception as exc:  # noqa: BLE001
            raise RuntimeFailure(f"{self.name} could not load {artifact.path}: {str(exc).splitlines()[0]}") from None
        if self.provider not in self.session.get_providers():
            raise RuntimeFailure(f"{self.name}: session fell back to {self.session.get_providers()} (provider failed to initialise)")
        self.ort = ort
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.binding = self.session.io_binding()
        self._graph_input = None

    def _stage_impl(self, inputs: np.ndarray) -> Any:
        x = np.ascontiguousarray(inputs, dtype=np.float32)
        if self.options.get("cuda_graph"):
            # CUDA graphs replay fixed addresses: copy into the same device buffer every time.
            if self._graph_input is None or tuple(self._graph_input.shape()) != x.shape:
                self._graph_input = self.ort.OrtValue.ortvalue_from_numpy(x, "cuda", self.device_index)
                self.binding.bind_ortvalue_input(self.input_name, self._graph_input)
                self.binding.bind_output(self.output_name, "cuda", self.device_index)
            else:
                self._graph_input.update_inplace(x)
            value = self._graph_input
        else:
            value = self.ort.OrtValue.ortvalue_from_numpy(x, "cuda", self.device_index)
            self.binding.bind_ortvalue_input(self.input_name, value)
            self.binding.bind_output(self.output_name, "cuda", self.device_index)
        self.binding.synchronize_inputs()
        return value

    def _infer_impl(self, staged: Any) -> Any:
        try:
            self.session.run_with_iobinding(self.binding)
        except Exception as exc:  # noqa: BLE001
            raise RuntimeFailure(f"{self.name} inference failed: {str(exc).splitlines()[0]}") from None
        self.binding.synchronize_outputs()
        return self.binding.get_outputs()[0]

    def _fetch_impl(self, outputs: Any) -> np.ndarray:
        return np.asarray(outputs.numpy(), dtype=np.float32)

    def clock(self) -> Clock:
        # Every step synchronises before returning, so host timing measures the device work.
        return Clock()

    def settings_used(self) -> dict[str, Any]:
        return {"threads": self.options.get("threads"), "providers": self.session.get_providers(),
                "provider_options": {k: v for k, v in self.session.get_provider_options().get(self.provider, {}).items()
                                     if k in ("device_id", "cudnn_conv_algo_search", "enable_cuda_graph", "trt_fp16_enable",
                                              "trt_int8_enable")}}

    def execution_report(self) -> dict[str, Any]:
        from pathlib import Path

        path = Path(self._tmpdir.name) / "optimized.onnx"
        return summarize_optimized_graph(path) if path.exists() else {"audit_note": "no optimized graph written"}

    def _deactivate_impl(self) -> None:
        self.session = None
        self.binding = None
        self._tmpdir.cleanup()


class OrtTensorRTRuntime(OrtCudaRuntime):
    """ONNX Runtime with the TensorRT execution provider first (CUDA, then CPU, as fallbacks).

    Options: threads, trt_fp16, trt_int8, trt_engine_cache_dir.
    """

    name = "ort-trt"
    provider = "TensorrtExecutionProvider"

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return ("threads", "trt_fp16", "trt_int8", "trt_engine_cache_dir")

    def _provider_options(self) -> list[tuple[str, dict[str, Any]]]:
        import os

        cache = self.options.get("trt_engine_cache_dir") or os.path.expanduser("~/.cache/quantbench/ort-trt")
        trt_opts = {"device_id": self.device_index, "trt_engine_cache_enable": "1", "trt_engine_cache_path": cache,
                    "trt_fp16_enable": "1" if self.options.get("trt_fp16") else "0",
                    "trt_int8_enable": "1" if self.options.get("trt_int8") else "0"}
        return [(self.provider, trt_opts), ("CUDAExecutionProvider", {"device_id": self.device_index})]
