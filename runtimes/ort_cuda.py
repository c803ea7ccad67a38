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
import re
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .base import Artifact, Availability, Clock, Runtime, RuntimeFailure, missing_package
from .cuda_mem import begin, complete, driver_present, driver_requirement, host_timed, parse_cuda_device

CONV_ALGO_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
# The first onnxruntime whose CUDA-graph replay honours disable_synchronize_execution_providers (PR #28686,
# merged after the 1.26.0 wheel). None until a GPU host confirms a release (benchmarks/gpu_check.sh probes it):
# before it, CUDAGraphManager::Replay calls cudaStreamSynchronize after cudaGraphLaunch, so the run returns
# only once the GPU is done and compute must be timed on the host.
ORT_ASYNC_GRAPH_REPLAY: tuple[int, int] | None = None
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
    """Why ``provider`` is not usable here, naming every missing part (build, GPU, TensorRT libraries)."""
    missing = missing_package("onnxruntime", extra, tox_env)
    if missing:
        return missing
    import onnxruntime as ort

    parts: list[tuple[str, str]] = []  # (what is missing, how to get it)
    if provider not in ort.get_available_providers():
        parts.append(_build_problem(provider, extra, tox_env))
    if not nvidia_driver_found():
        parts.append(("no NVIDIA driver/GPU found", "run on a machine with an NVIDIA GPU and driver"))
    if provider == "TensorrtExecutionProvider":
        from .trt_libs import nvidia_index_hint, stub_install, tensorrt_ep_problem

        stub = stub_install()
        if stub:
            parts.append((stub, nvidia_index_hint(extra)))
        problem = tensorrt_ep_problem()
        if problem:
            parts.append((problem, f"{nvidia_index_hint(extra)} / tox -e {tox_env}"))
    if not parts:
        return Availability(True)
    hints = list(dict.fromkeys(h for _, h in parts))
    return Availability(False, "; ".join(r for r, _ in parts), "; ".join(hints))


def _build_problem(provider: str, extra: str, tox_env: str) -> tuple[str, str]:
    """Why the installed onnxruntime lists no ``provider``, and the fix."""
    cpu, gpu = _dist_installed("onnxruntime"), _dist_installed("onnxruntime-gpu")
    fix = f"pip uninstall -y onnxruntime && pip install .[{extra}] / tox -e {tox_env}"
    if cpu and gpu:
        return ("both onnxruntime and onnxruntime-gpu are installed and the CPU build shadows the GPU one "
                f"(no {provider})",
                f"pip uninstall -y onnxruntime onnxruntime-gpu && pip install .[{extra}] / tox -e {tox_env}")
    if cpu:
        return f"the installed onnxruntime is the CPU build (no {provider})", fix
    if not gpu:
        dists = ", ".join(md.packages_distributions().get("onnxruntime", [])) or "unknown"
        return f"onnxruntime comes from '{dists}', which has no {provider}", fix
    if provider == "TensorrtExecutionProvider":
        return ("onnxruntime-gpu lists no TensorrtExecutionProvider",
                f"use an onnxruntime-gpu build with the TensorRT EP and pip install .[{extra}]")
    return f"onnxruntime-gpu lists no {provider}", "reinstall onnxruntime-gpu for this CUDA version"


_IR_LIMIT = re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)")


def load_error(runtime: str, path: Path, exc: BaseException, ort_version: str) -> str:
    """One line for a session that failed to load ``path``; a model too new for this ORT names both IR versions."""
    text = str(exc).strip()
    limit = _IR_LIMIT.search(text)
    if limit:
        return (f"{runtime} cannot load {path.name}: its IR version {limit[1]} is newer than onnxruntime {ort_version} "
                f"reads (IR <= {limit[2]}); re-save it with the lowest IR its opset allows "
                "(quantbench.common.onnx_save.lower_ir_version)")
    return f"{runtime} could not load {path}: {text.splitlines()[0] if text else type(exc).__name__}"


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
    DEFAULT), ``cuda_graph`` (capture once, replay with fixed I/O buffers; every node must run on
    CUDA), ``tf32`` (the CUDA EP's ``use_tf32``; default: ONNX Runtime's), ``clock`` ("auto": CUDA
    events on the session's stream when cuda-python/pycuda is present; "host": perf_counter).

    Input and output live in device buffers allocated once per batch shape and bound once, so
    every iteration copies into the same addresses. With cuda-python the copies and the run are
    enqueued on the session's own stream and timed by CUDA events around the enqueued work; the
    host batch is a pageable numpy array (TensorRT's adapter copies from pinned memory).
    """

    name = "ort-cuda"
    extra = "ort-gpu"
    tox_env = "ort-cuda"
    provider = "CUDAExecutionProvider"
    save_optimized_graph = True  # the int8 audit reads it; compiling EPs (TensorRT) cannot save one
    _libraries = "CUDA/cuDNN libraries"  # what a provider that fails to initialise is most likely missing

    @classmethod
    def availability(cls) -> Availability:
        return provider_availability(cls.provider, cls.extra, cls.tox_env)

    @classmethod
    def requirements(cls) -> str:
        """The NVIDIA driver the installed onnxruntime-gpu build needs (or each build's, when none is installed)."""
        return driver_requirement(onnxruntime_gpu_cuda_major(), {12: ".[ort-gpu] / tox -e ort-cuda",
                                                                13: ".[ort-gpu-cu13] / tox -e ort-cuda-cu13"})

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
        return ("threads", "cudnn_conv_algo_search", "cuda_graph", "tf32", "clock")

    # ---- session -------------------------------------------------------------------------------
    def _provider_options(self) -> list[tuple[str, dict[str, Any]]]:
        algo = str(self.options.get("cudnn_conv_algo_search", "EXHAUSTIVE")).upper()
        if algo not in CONV_ALGO_SEARCH:
            raise RuntimeFailure(f"{self.name}: cudnn_conv_algo_search must be EXHAUSTIVE, HEURISTIC or DEFAULT, "
                                 f"not '{algo}'")
        opts: dict[str, Any] = {"device_id": str(self.device_index), "cudnn_conv_algo_search": algo}
        if self.options.get("cuda_graph"):
            opts["enable_cuda_graph"] = "1"
        if self.options.get("tf32") is not None:
            opts["use_tf32"] = "1" if self.options["tf32"] else "0"
        if self._stream is not None:
            opts["user_compute_stream"] = str(self._cuda.stream_handle(self._stream))
        return [(self.provider, opts)]

    def _providers(self) -> list[tuple[str, dict[str, Any]]]:
        """The providers in order; CPU is the fallback except under CUDA graphs, which need every node on CUDA."""
        fallback = [] if self.options.get("cuda_graph") else [("CPUExecutionProvider", {})]
        return self._provider_options() + fallback

    def _session_options(self, profile_dir: str | None = None) -> Any:
        so = self.ort.SessionOptions()
        so.log_severity_level = 3
        if self.options.get("threads"):
            so.intra_op_num_threads = int(self.options["threads"])
        if self.options.get("cuda_graph") and not profile_dir:
            # ORT adds the CPU EP implicitly; this makes a node CUDA cannot run an error at load time.
            so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
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
        """Load CUDA/cuDNN from NVIDIA's pip packages (onnxruntime-gpu[cuda,cudnn], ORT >= 1.21) before the session.

        Without it a machine with only the driver finds no libcudart/libcudnn and the session falls
        back to the CPU. Skipped when torch is already imported: it loaded its own copies.
        """
        if hasattr(self.ort, "preload_dlls") and importlib.util.find_spec("nvidia") is not None \
                and "torch" not in sys.modules:
            try:
                self.ort.preload_dlls(cuda=True, cudnn=True)
            except Exception:  # noqa: BLE001 - best effort; session creation reports what is missing
                pass

    def _activate_impl(self, artifact: Artifact) -> None:
        import onnxruntime as ort

        self.ort = ort
        self.device_index = parse_cuda_device(self.device, self.name)
        self._tmpdir = tempfile.TemporaryDirectory(prefix="qb-ortgpu-")
        self._clock: Clock | None = None
        self._last_shape: tuple[int, ...] | None = None
        self._in = self._out = self._host_in = self._host_out = None
        self._host_compute: str | None = None
        self._bound_shape: tuple[int, ...] | None = None
        self.session = self.binding = None
        try:
            self._open_events_stream()
            self._preload_cuda_libraries()
            try:
                self.session = ort.InferenceSession(str(artifact.path), self._session_options(),
                                                    providers=self._providers())
            except Exception as exc:  # noqa: BLE001 - ORT raises several types; keep one line
                raise RuntimeFailure(load_error(self.name, Path(artifact.path), exc, ort.__version__)) from None
            if self.provider not in self.session.get_providers():
                # ORT drops a provider that fails to load (and retries TensorRT as CUDA+CPU without our options):
                # measuring that session under this runtime's name would be a wrong row, so the cell fails.
                raise RuntimeFailure(
                    f"{self.name}: {self.provider} failed to initialise, the session fell back to "
                    f"{self.session.get_providers()} ({self._libraries} missing or mismatched for onnxruntime "
                    f"{ort.__version__}; see the cell log); not run on another provider")
        except BaseException:
            self._deactivate_impl()
            raise
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input_name, self.output_name = inp.name, out.name
        self.input_dtype = np.dtype(_ORT_TYPES.get(inp.type, np.float32))
        self.output_dtype = np.dtype(_ORT_TYPES.get(out.type, np.float32))
        self._output_dims = list(out.shape)
        self.binding = self.session.io_binding()
        self._run_options = None
        if self._stream is not None:  # return after enqueueing; complete() waits, after the end event
            self._run_options = ort.RunOptions()
            self._run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")
        self._host_compute = self._host_compute_reason(ort.__version__) if self._stream is not None else None

    def _host_compute_reason(self, ort_version: str) -> str | None:
        """Why compute must be timed on the host although CUDA events are available, or None."""
        if not self.options.get("cuda_graph"):
            return None
        try:
            version = tuple(int(v) for v in ort_version.split(".")[:2])
        except ValueError:
            version = (0, 0)
        if ORT_ASYNC_GRAPH_REPLAY is not None and version >= ORT_ASYNC_GRAPH_REPLAY:
            return None
        return f"onnxruntime {ort_version} synchronises the stream after a CUDA-graph replay"

    # ---- run -------------------------------------------------------------------------------------
    def _bind_buffers(self, shape: tuple[int, ...]) -> None:
        """Allocate the device input/output for this batch shape and bind them once (fixed addresses),
        with pinned host buffers for the timed copies (one of each per bound shape)."""
        ov = self.ort.OrtValue
        self._free_pinned()
        self.binding.clear_binding_inputs()
        self.binding.clear_binding_outputs()
        self._in = ov.ortvalue_from_shape_and_type(list(shape), self.input_dtype.type, "cuda", self.device_index)
        self.binding.bind_ortvalue_input(self.input_name, self._in)
        out_shape = self._static_output_shape(shape[0])
        if out_shape is None:
            if self.options.get("cuda_graph"):
                raise RuntimeFailure(f"{self.name}: cuda_graph needs a static output shape apart from the batch, "
                                     f"'{self.output_name}' is {self._output_dims}")
            self._out = None
            self.binding.bind_output(self.output_name, "cuda", self.device_index)
        else:
            self._out = ov.ortvalue_from_shape_and_type(out_shape, self.output_dtype.type, "cuda", self.device_index)
            self.binding.bind_ortvalue_output(self.output_name, self._out)
        # Device addresses read by the timed copies, looked up once per shape rather than between the events.
        self._in_ptr = self._in.data_ptr()
        self._out_ptr = self._out.data_ptr() if self._out is not None else None
        if self._stream is not None:
            # A copy from or to pageable memory is staged by the driver and returns only once done (d2h) or
            # staged (h2d): pinned buffers time the DMA alone, as TensorRT's adapter does.
            self._host_in = self._cuda.pinned_empty(tuple(shape), self.input_dtype)
            if self._out is not None:
                self._host_out = self._cuda.pinned_empty(tuple(out_shape), self.output_dtype)
        self._bound_shape = tuple(shape)

    def _free_pinned(self) -> None:
        for name in ("_host_in", "_host_out"):
            arr = getattr(self, name, None)
            if arr is not None:
                self._cuda.free_pinned(arr)
            setattr(self, name, None)

    def _stage_impl(self, inputs: np.ndarray) -> Any:
        x = np.ascontiguousarray(inputs, dtype=self.input_dtype)
        if x.shape != self._bound_shape:
            if self._bound_shape is not None and self.options.get("cuda_graph"):
                # A captured CUDA graph replays fixed addresses and shapes.
                raise RuntimeFailure(f"{self.name}: cuda_graph captured batch shape {self._bound_shape}, "
                                     f"got {x.shape} (one shape per activation)")
            self._bind_buffers(x.shape)
        if self._stream is not None:
            np.copyto(self._host_in, x)  # host work, outside the timed DMA
            begin(self._clock)
            self._cuda.htod_async(self._in_ptr, self._host_in, self._stream)
            complete(self._cuda, self._stream, self._clock)
        else:
            self._in.update_inplace(x)
        self._last_shape = x.shape
        return self._in

    def _static_output_shape(self, batch: int) -> list[int] | None:
        dims = [d if isinstance(d, int) and d > 0 else None for d in self._output_dims]
        if dims and dims[0] is None:
            dims[0] = batch
        return None if not dims or any(d is None for d in dims) else dims  # type: ignore[return-value]

    def _infer_impl(self, staged: Any) -> Any:
        if self._host_compute:
            host_timed(self._clock)  # the run itself waits for the GPU: an end event would come after that wait
        begin(self._clock)
        try:
            self.session.run_with_iobinding(self.binding, self._run_options)
        except Exception as exc:  # noqa: BLE001 - ORT raises several types; keep one line
            raise RuntimeFailure(f"{self.name} inference failed: {str(exc).splitlines()[0]}") from None
        if self._stream is not None:
            complete(self._cuda, self._stream, self._clock)
        else:
            self.binding.synchronize_outputs()
        return self._out if self._out is not None else self.binding.get_outputs()[0]

    def _fetch_impl(self, outputs: Any) -> np.ndarray:
        if self._stream is not None and outputs is self._out:
            begin(self._clock)
            self._cuda.dtoh_async(self._host_out, self._out_ptr, self._stream)
            complete(self._cuda, self._stream, self._clock)
            return np.array(self._host_out, dtype=np.float32, copy=True)  # the pinned buffer is reused
        return np.asarray(outputs.numpy(), dtype=np.float32)

    def clock(self) -> Clock:
        if self._clock is None:
            if self._stream is not None:
                from .cuda_mem import CudaEventClock

                self._clock = CudaEventClock(self._cuda, self._stream, "compute" if self._host_compute else None)
            else:
                self._clock = Clock()
        return self._clock

    # ---- reports ---------------------------------------------------------------------------------
    def settings_used(self) -> dict[str, Any]:
        opts = self.session.get_provider_options() if self.session is not None else {}
        mine = opts.get(self.provider, {})
        keep = ("device_id", "cudnn_conv_algo_search", "enable_cuda_graph", "use_tf32", "trt_fp16_enable",
                "trt_int8_enable", "trt_engine_cache_enable", "trt_engine_cache_path")
        return {"threads": self.options.get("threads"), "providers": self.session.get_providers(),
                "provider_options": {k: v for k, v in mine.items() if k in keep},
                "cuda_graph": bool(self.options.get("cuda_graph")),
                "tf32": self._tf32_allowed(mine),
                "h2d_host_memory": "pinned" if self._stream is not None else "pageable",
                "d2h_host_memory": "pinned" if self._stream is not None and self._out is not None else "pageable",
                "compute_clock": ("host-perf_counter_ns" if self._host_compute or self._stream is None
                                  else "cuda-events"),
                "compute_clock_note": self._host_compute,
                "clock": self.clock().kind}

    def _tf32_allowed(self, provider_options: dict[str, Any]) -> bool | None:
        """Whether "fp32" convolutions/GEMMs may run in TF32 (None: this ORT does not say)."""
        value = provider_options.get("use_tf32")
        return None if value is None else str(value) not in ("0", "False", "false")

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
        if getattr(self, "_cuda", None) is not None:
            self._free_pinned()
        self._in = self._out = None
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


def onnxruntime_gpu_cuda_major() -> int | None:
    """The CUDA major the installed onnxruntime-gpu was built for (its [cuda] extra's packages), or None."""
    try:
        requires = md.requires("onnxruntime-gpu") or []
        version = md.version("onnxruntime-gpu")
    except md.PackageNotFoundError:
        return None
    runtime = [r for r in requires if r.startswith("nvidia-cuda-runtime")]
    if runtime:
        return 12 if "cu12" in runtime[0] else 13
    major, minor = (int(x) for x in version.split(".")[:2])
    return 13 if (major, minor) >= (1, 28) else 12  # PyPI builds: CUDA 12 up to 1.26, CUDA 13 from 1.28


def ort_trt_cache_dir(option: str | None) -> Path:
    """The TensorRT EP engine cache folder: the option, else ``$QUANTBENCH_CACHE/ort-trt`` or
    ``~/.cache/quantbench/ort-trt``."""
    if option:
        return Path(os.path.expandvars(os.path.expanduser(str(option))))
    return Path(os.environ.get("QUANTBENCH_CACHE") or Path.home() / ".cache" / "quantbench") / "ort-trt"


class OrtTensorRTRuntime(OrtCudaRuntime):
    """ONNX Runtime with the TensorRT execution provider first (CUDA, then CPU, as fallbacks).

    Options: ``threads``, ``trt_fp16``, ``trt_int8`` (TensorRT EP precision flags; leave them off to
    build fp16/QDQ files as typed), ``trt_engine_cache_dir`` (default ``$QUANTBENCH_CACHE/ort-trt``
    or ``~/.cache/quantbench/ort-trt``), ``clock``. The optimisation profile covers batch 1..the
    harness's batch (none for a static batch).
    """

    name = "ort-trt"
    provider = "TensorrtExecutionProvider"
    extra = "tensorrt10,ort-gpu"  # the EP links TensorRT 10 (libnvinfer.so.10), never 11
    tox_env = "tensorrt10"
    save_optimized_graph = False  # ORT cannot serialise a graph with TensorRT-compiled nodes
    _libraries = "TensorRT 10 (libnvinfer.so.10, libnvonnxparser.so.10) or CUDA/cuDNN libraries"

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return ("threads", "trt_fp16", "trt_int8", "trt_engine_cache_dir", "clock")

    @classmethod
    def requirements(cls) -> str:
        from .cuda_mem import TENSORRT_MIN_DRIVER, installed_cuda_major
        from .trt_plan import TENSORRT_DISTS

        trt = installed_cuda_major(TENSORRT_DISTS)
        ort_major = onnxruntime_gpu_cuda_major()
        if trt and ort_major and trt != ort_major:
            return (f"mismatch: onnxruntime-gpu is a CUDA {ort_major} build, TensorRT a CUDA {trt} build "
                    "(install both for one CUDA major)")
        return driver_requirement(trt or ort_major, {12: ".[tensorrt10,ort-gpu] / tox -e tensorrt10",
                                                    13: ".[tensorrt10-cu13,ort-gpu-cu13] / tox -e tensorrt10-cu13"},
                                  TENSORRT_MIN_DRIVER)

    def supports(self, artifact: Artifact) -> str | None:
        from .trt_plan import int8_qdq_problem

        # Asymmetric uint8 Q/DQ would silently run on the CUDA EP, not in TensorRT.
        return super().supports(artifact) or int8_qdq_problem(artifact)

    def _preload_cuda_libraries(self) -> None:
        super()._preload_cuda_libraries()
        try:  # the tensorrt wheel loads libnvinfer, which the TensorRT EP then finds by soname
            import tensorrt  # noqa: F401 - imported for its side effect
        except Exception:  # noqa: BLE001 - without it the EP reports the missing library itself
            pass

    def _provider_options(self) -> list[tuple[str, dict[str, Any]]]:
        cache = ort_trt_cache_dir(self.options.get("trt_engine_cache_dir"))
        try:
            cache.mkdir(parents=True, exist_ok=True)  # the TensorRT EP does not create parent folders
        except OSError as exc:
            raise RuntimeFailure(f"{self.name}: cannot create the engine cache folder {cache}: "
                                 f"{exc.strerror}") from None
        trt_opts: dict[str, Any] = {
            "device_id": str(self.device_index), "trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache),
            "trt_fp16_enable": "True" if self.options.get("trt_fp16") else "False",
            "trt_int8_enable": "True" if self.options.get("trt_int8") else "False"}
        trt_opts.update(self._profile_shapes())
        cuda_opts: dict[str, Any] = {"device_id": str(self.device_index)}
        if self._stream is not None:
            stream = str(self._cuda.stream_handle(self._stream))
            trt_opts["user_compute_stream"] = cuda_opts["user_compute_stream"] = stream
        return [(self.provider, trt_opts), ("CUDAExecutionProvider", cuda_opts)]

    def _host_compute_reason(self, ort_version: str) -> str | None:
        # The TensorRT EP synchronises the stream after enqueueV3 whenever it splits the graph between
        # TensorRT and other EPs (sync_stream_after_enqueue_), which the node placement only shows afterwards.
        return "the TensorRT EP may synchronise the stream after its enqueue (split graph)"

    def _tf32_allowed(self, provider_options: dict[str, Any]) -> bool | None:
        return True  # the TensorRT EP has no TF32 switch: TensorRT's default allows TF32 for fp32 layers

    def _profile_shapes(self) -> dict[str, str]:
        """TensorRT EP profile options for batch 1..self.batch (none for a static batch or other dynamic dims)."""
        if not self.batch or self.artifact is None or self.artifact.path is None:
            return {}
        import onnx

        from .trt_plan import profile_shapes

        graph = onnx.load(str(self.artifact.path), load_external_data=False).graph
        inits = {i.name for i in graph.initializer}
        inputs = [i for i in graph.input if i.name not in inits]
        if len(inputs) != 1:
            return {}
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in inputs[0].type.tensor_type.shape.dim)
        if not dims or dims[0] > 0:
            return {}  # static shapes need no profile, and one from batch 1 would contradict a fixed batch
        try:
            lo, opt, hi = profile_shapes(dims, self.batch)
        except ValueError:
            return {}
        name = inputs[0].name

        def fmt(shape: tuple[int, ...]) -> str:
            return f"{name}:" + "x".join(str(d) for d in shape)

        return {"trt_profile_min_shapes": fmt(lo), "trt_profile_opt_shapes": fmt(opt),
                "trt_profile_max_shapes": fmt(hi)}
