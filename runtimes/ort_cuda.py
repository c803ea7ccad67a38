"""ONNX Runtime on the CUDA (and TensorRT) execution providers, with IO binding.

Per iteration: the batch is copied to the device as an ``OrtValue`` (host→device), the session
runs with its output bound to the device (compute, synchronised), then the output is copied back
(device→host). ``onnxruntime-gpu`` cannot share an environment with ``onnxruntime``: installing
both leaves whichever was installed last, and the CPU build has no CUDA provider.
"""
from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .base import Artifact, Availability, Clock, Runtime, RuntimeFailure, missing_package
from .cuda_mem import driver_present, parse_cuda_device

CONV_ALGO_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def _dist_installed(name: str) -> bool:
    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


def nvidia_driver_found() -> bool:
    """libcuda.so.1 loads, or nvidia-smi is on PATH."""
    return driver_present() or shutil.which("nvidia-smi") is not None


def provider_availability(provider: str, extra: str, tox_env: str) -> Availability:
    """Why ``provider`` is not usable from the installed onnxruntime, precisely."""
    missing = missing_package("onnxruntime", extra, tox_env)
    if missing:
        return missing
    import onnxruntime as ort

    gpu_found = nvidia_driver_found()
    if provider in ort.get_available_providers():
        if not gpu_found:
            return Availability(False, "onnxruntime-gpu is installed but no NVIDIA driver/GPU found",
                                "run on a machine with an NVIDIA GPU and driver")
        return Availability(True)
    no_gpu = "" if gpu_found else "; no NVIDIA driver/GPU found on this machine either"
    cpu, gpu = _dist_installed("onnxruntime"), _dist_installed("onnxruntime-gpu")
    fix = f"pip uninstall -y onnxruntime && pip install .[{extra}] / tox -e {tox_env}"
    if cpu and gpu:
        return Availability(False, f"both onnxruntime and onnxruntime-gpu are installed and the CPU build shadows "
                                   f"the GPU one (no {provider}){no_gpu}",
                            f"pip uninstall -y onnxruntime onnxruntime-gpu && pip install .[{extra}] / tox -e {tox_env}")
    if cpu:
        return Availability(False, f"the installed onnxruntime is the CPU build (no {provider}){no_gpu}", fix)
    if not gpu:
        dists = ", ".join(md.packages_distributions().get("onnxruntime", [])) or "unknown"
        return Availability(False, f"onnxruntime comes from '{dists}', which has no {provider}{no_gpu}", fix)
    if provider == "TensorrtExecutionProvider":
        return Availability(False, f"onnxruntime-gpu lists no TensorrtExecutionProvider{no_gpu}",
                            "use an onnxruntime-gpu build with the TensorRT EP and pip install .[tensorrt]")
    return Availability(False, f"onnxruntime-gpu lists no {provider}{no_gpu}",
                        "reinstall onnxruntime-gpu for this CUDA version")


def summarize_ort_profile(events: Iterable[dict[str, Any]], primary: str) -> dict[str, Any]:
    """Which execution provider ran each node, from an ORT profiling trace (``end_profiling()`` JSON).

    Returns ``{"nodes_by_provider": {provider: n}, "fallback_ops": {op_type: n}, "note": str}``; a
    fallback op is a node that ran on another provider than ``primary``.
    """
    by_provider: Counter[str] = Counter()
    fallback: Counter[str] = Counter()
    seen: set[str] = set()
    for ev in events:
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        if ev["name"] in seen:  # one run is profiled, but count each node once anyway
            continue
        seen.add(ev["name"])
        args = ev.get("args") or {}
        provider = str(args.get("provider", "unknown"))
        by_provider[provider] += 1
        if provider != primary:
            fallback[str(args.get("op_name", "?"))] += 1
    short = {p: p.replace("ExecutionProvider", "") for p in by_provider}
    total = sum(by_provider.values())
    note = "nodes by provider: " + ", ".join(f"{short[p]} {n}" for p, n in by_provider.most_common())
    if fallback:
        note += " (fell back: " + ", ".join(f"{op} {n}" for op, n in fallback.most_common()) + ")"
    elif total:
        note += f" (all on {primary.replace('ExecutionProvider', '')})"
    return {"nodes_by_provider": dict(by_provider), "fallback_ops": dict(fallback), "note": note}


class OrtCudaRuntime(Runtime):
    """ONNX Runtime, CUDAExecutionProvider.

    Options: ``threads`` (CPU fallback nodes), ``cudnn_conv_algo_search`` (EXHAUSTIVE | HEURISTIC |
    DEFAULT), ``cuda_graph`` (capture once, replay with fixed I/O buffers), ``clock`` ("auto": CUDA
    events on the session's stream when cuda-python/pycuda is present; "host": perf_counter).
    """

    name = "ort-cuda"
    extra = "ort-gpu"
    tox_env = "ort-cuda"
    provider = "CUDAExecutionProvider"
    save_optimized_graph = True  # the int8 audit reads it; compiling EPs (TensorRT) cannot save one

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

        v = {"onnxruntime": ort.__version__, "ort_device": ort.get_device()}
        if hasattr(ort, "get_build_info"):
            v["ort_build"] = ort.get_build_info()
        return v

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return ("threads", "cudnn_conv_algo_search", "cuda_graph", "clock")

    # ---- session -------------------------------------------------------------------------------
    def _provider_options(self) -> list[tuple[str, dict[str, Any]]]:
        algo = str(self.options.get("cudnn_conv_algo_search", "EXHAUSTIVE")).upper()
        if algo not in CONV_ALGO_SEARCH:
            raise RuntimeFailure(f"{self.name}: cudnn_conv_algo_search must be EXHAUSTIVE, HEURISTIC or DEFAULT, not '{algo}'")
        opts: dict[str, Any] = {"device_id": str(self.device_index), "cudnn_conv_algo_search": algo}
        if self.options.get("cuda_graph"):
            opts["enable_cuda_graph"] = "1"
        if self._stream is not None:
            opts["user_compute_stream"] = str(self._cuda.stream_handle(self._stream))
        return [(self.provider, opts)]

    def _session_options(self, profile_dir: str | None = None) -> Any:
        so = self.ort.SessionOptions()
        so.log_severity_level = 3
        if self.options.get("threads"):
            so.intra_op_num_threads = int(self.options["threads"])
        if profile_dir:
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(profile_dir, "audit")
        elif self.save_optimized_graph:
            so.optimized_model_filepath = os.path.join(self._tmpdir.name, "optimized.onnx")
        return so

    def _open_events_stream(self) -> None:
        """Create the stream the session computes on, so CUDA events can be recorded on it."""
        self._cuda = self._stream = None
        mode = str(self.options.get("clock", "auto")).lower()
        if mode not in ("auto", "host", "cuda-events"):
            raise RuntimeFailure(f"{self.name}: clock must be 'auto', 'host' or 'cuda-events', not '{mode}'")
        if mode == "host":
            return
        from .cuda_mem import cuda_availability, load_backend

        avail = cuda_availability(self.extra, self.tox_env)
        if not avail.ok:
            if mode == "cuda-events":
                raise RuntimeFailure(f"{self.name}: clock 'cuda-events' needs cuda-python: {avail}")
            return  # run_with_iobinding is synchronous, so the host clock still measures the device work
        self._cuda = load_backend()
        self._cuda.set_device(self.device_index)
        self._stream = self._cuda.stream_create()

    def _preload_cuda_libraries(self) -> None:
        """Let onnxruntime-gpu find CUDA/cuDNN from NVIDIA's pip packages (ORT >= 1.21)."""
        if hasattr(self.ort, "preload_dlls") and importlib.util.find_spec("nvidia") is not None \
                and "torch" not in sys.modules:
            try:
                self.ort.preload_dlls()
            except Exception:  # noqa: BLE001 - best effort; session creation reports what is missing
                pass

    def _activate_impl(self, artifact: Artifact) -> None:
        import onnxruntime as ort

        self.ort = ort
        self.device_index = parse_cuda_device(self.device, self.name)
        self._tmpdir = tempfile.TemporaryDirectory(prefix="qb-ortgpu-")
        self._clock: Clock | None = None
        self._last_shape: tuple[int, ...] | None = None
        self._graph_in = self._graph_out = None
        self.session = self.binding = None
        try:
            self._open_events_stream()
            self._preload_cuda_libraries()
            providers = self._provider_options() + [("CPUExecutionProvider", {})]
            try:
                self.session = ort.InferenceSession(str(artifact.path), self._session_options(), providers=providers)
            except Exception as exc:  # noqa: BLE001 - ORT raises several types; keep one line
                raise RuntimeFailure(f"{self.name} could not load {artifact.path}: {str(exc).splitlines()[0]}") from None
            if self.provider not in self.session.get_providers():
                raise RuntimeFailure(
                    f"{self.name}: {self.provider} failed to initialise, the session fell back to "
                    f"{self.session.get_providers()} (CUDA/cuDNN libraries missing or mismatched for onnxruntime "
                    f"{ort.__version__}; see the cell log)")
        except BaseException:
            self._deactivate_impl()
            raise
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input_name, self.output_name = inp.name, out.name
        self.input_dtype = np.dtype(_ORT_TYPES.get(inp.type, np.float32))
        self.output_dtype = np.dtype(_ORT_TYPES.get(out.type, np.float32))
        self._output_dims = list(out.shape)
        self.binding = self.session.io_binding()

    # ---- run -------------------------------------------------------------------------------------
    def _stage_impl(self, inputs: np.ndarray) -> Any:
        x = np.ascontiguousarray(inputs, dtype=self.input_dtype)
        ov = self.ort.OrtValue
        if self.options.get("cuda_graph"):
            # A captured CUDA graph replays fixed addresses: copy into the same device buffers every time.
            if self._graph_in is None:
                self._graph_in = ov.ortvalue_from_numpy(x, "cuda", self.device_index)
                self._graph_out = ov.ortvalue_from_shape_and_type(self._graph_output_shape(x.shape[0]),
                                                                  self.output_dtype.type, "cuda", self.device_index)
                self.binding.bind_ortvalue_input(self.input_name, self._graph_in)
                self.binding.bind_ortvalue_output(self.output_name, self._graph_out)
            elif tuple(self._graph_in.shape()) != x.shape:
                raise RuntimeFailure(f"{self.name}: cuda_graph captured batch shape {tuple(self._graph_in.shape())}, "
                                     f"got {x.shape} (one shape per activation)")
            else:
                self._graph_in.update_inplace(x)
            value = self._graph_in
        else:
            value = ov.ortvalue_from_numpy(x, "cuda", self.device_index)
            self.binding.bind_ortvalue_input(self.input_name, value)
            self.binding.bind_output(self.output_name, "cuda", self.device_index)
        self._last_shape = x.shape
        return value

    def _graph_output_shape(self, batch: int) -> list[int]:
        dims = [d if isinstance(d, int) and d > 0 else None for d in self._output_dims]
        if dims and dims[0] is None:
            dims[0] = batch
        if any(d is None for d in dims):
            raise RuntimeFailure(f"{self.name}: cuda_graph needs a static output shape apart from the batch, "
                                 f"'{self.output_name}' is {self._output_dims}")
        return dims  # type: ignore[return-value]

    def _infer_impl(self, staged: Any) -> Any:
        try:
            self.session.run_with_iobinding(self.binding)
        except Exception as exc:  # noqa: BLE001
            raise RuntimeFailure(f"{self.name} inference failed: {str(exc).splitlines()[0]}") from None
        self.binding.synchronize_outputs()
        return self._graph_out if self._graph_out is not None else self.binding.get_outputs()[0]

    def _fetch_impl(self, outputs: Any) -> np.ndarray:
        return np.asarray(outputs.numpy(), dtype=np.float32)

    def clock(self) -> Clock:
        if self._clock is None:
            if self._stream is not None:
                from .cuda_mem import CudaEventClock

                self._clock = CudaEventClock(self._cuda, self._stream)
            else:
                self._clock = Clock()
        return self._clock

    # ---- reports ---------------------------------------------------------------------------------
    def settings_used(self) -> dict[str, Any]:
        opts = self.session.get_provider_options() if self.session is not None else {}
        keep = ("device_id", "cudnn_conv_algo_search", "enable_cuda_graph", "trt_fp16_enable", "trt_int8_enable",
                "trt_engine_cache_enable", "trt_engine_cache_path")
        return {"threads": self.options.get("threads"), "providers": self.session.get_providers(),
                "provider_options": {k: v for k, v in opts.get(self.provider, {}).items() if k in keep},
                "cuda_graph": bool(self.options.get("cuda_graph")),
                "clock": "cuda-events" if self._stream is not None else "host-perf_counter_ns"}

    def execution_report(self) -> dict[str, Any]:
        report: dict[str, Any] = {}
        path = Path(self._tmpdir.name) / "optimized.onnx"
        if self.save_optimized_graph and path.exists():
            from .ort_cpu import summarize_optimized_graph

            report = summarize_optimized_graph(path)
        placement = self._placement()
        notes = [n for n in (report.get("audit_note"), placement) if n]
        report["audit_note"] = "; ".join(notes) if notes else "no optimized graph or profile available"
        return report

    def _placement(self) -> str:
        """Run the model once more in a profiled session to see which provider ran each node."""
        if self._last_shape is None or self.artifact is None:
            return ""
        with tempfile.TemporaryDirectory(prefix="qb-ortprof-") as tmp:
            try:
                so = self._session_options(profile_dir=tmp)
                providers = [(p, {k: v for k, v in o.items() if k != "enable_cuda_graph"})
                             for p, o in self._provider_options()] + [("CPUExecutionProvider", {})]
                sess = self.ort.InferenceSession(str(self.artifact.path), so, providers=providers)
                sess.run(None, {self.input_name: np.zeros(self._last_shape, self.input_dtype)})
                events = json.loads(Path(sess.end_profiling()).read_text())
            except Exception as exc:  # noqa: BLE001 - the audit is best effort
                return f"node placement unavailable ({str(exc).splitlines()[0]})"
        return summarize_ort_profile(events, self.provider)["note"]

    def _deactivate_impl(self) -> None:
        self._graph_in = self._graph_out = None
        self.binding = None
        self.session = None
        clock = getattr(self, "_clock", None)
        if clock is not None and hasattr(clock, "close"):
            clock.close()
        self._clock = None
        if getattr(self, "_stream", None) is not None:
            self._cuda.stream_destroy(self._stream)
            self._stream = None
        if getattr(self, "_tmpdir", None) is not None:
            self._tmpdir.cleanup()


class OrtTensorRTRuntime(OrtCudaRuntime):
    """ONNX Runtime with the TensorRT execution provider first (CUDA, then CPU, as fallbacks).

    Options: ``threads``, ``trt_fp16``, ``trt_int8`` (TensorRT EP precision flags; leave them off to
    build fp16/QDQ files as typed), ``trt_engine_cache_dir`` (default ``~/.cache/quantbench/ort-trt``),
    ``clock``. The optimisation profile covers batch 1..the harness's batch.
    """

    name = "ort-trt"
    provider = "TensorrtExecutionProvider"
    save_optimized_graph = False

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return ("threads", "trt_fp16", "trt_int8", "trt_engine_cache_dir", "clock")

    def _preload_cuda_libraries(self) -> None:
        super()._preload_cuda_libraries()
        try:  # the tensorrt wheel loads libnvinfer, which the TensorRT EP then finds by soname
            import tensorrt  # noqa: F401
        except Exception:  # noqa: BLE001
            pass

    def _provider_options(self) -> list[tuple[str, dict[str, Any]]]:
        cache = self.options.get("trt_engine_cache_dir") or os.path.expanduser("~/.cache/quantbench/ort-trt")
        trt_opts: dict[str, Any] = {
            "device_id": str(self.device_index), "trt_engine_cache_enable": "True", "trt_engine_cache_path": cache,
            "trt_fp16_enable": "True" if self.options.get("trt_fp16") else "False",
            "trt_int8_enable": "True" if self.options.get("trt_int8") else "False"}
        trt_opts.update(self._profile_shapes())
        cuda_opts: dict[str, Any] = {"device_id": str(self.device_index)}
        if self._stream is not None:
            trt_opts["user_compute_stream"] = cuda_opts["user_compute_stream"] = str(self._cuda.stream_handle(self._stream))
        return [(self.provider, trt_opts), ("CUDAExecutionProvider", cuda_opts)]

    def _profile_shapes(self) -> dict[str, str]:
        """TensorRT EP profile options for batch 1..self.batch (none when the input has other dynamic dims)."""
        if not self.batch or self.artifact is None or self.artifact.path is None:
            return {}
        import onnx

        graph = onnx.load(str(self.artifact.path), load_external_data=False).graph
        inits = {i.name for i in graph.initializer}
        inputs = [i for i in graph.input if i.name not in inits]
        if len(inputs) != 1:
            return {}
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in inputs[0].type.tensor_type.shape.dim]
        if not dims or any(d <= 0 for d in dims[1:]):
            return {}
        rest = "x".join(str(d) for d in dims[1:])
        name = inputs[0].name
        return {"trt_profile_min_shapes": f"{name}:1x{rest}", "trt_profile_opt_shapes": f"{name}:{self.batch}x{rest}",
                "trt_profile_max_shapes": f"{name}:{self.batch}x{rest}"}
