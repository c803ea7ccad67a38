"""TensorRT: builds (and caches) an engine from the ONNX artifact and runs it with ``execute_async_v3``.

H2D, compute and D2H are timed with CUDA events on the adapter's stream, as trtexec reports them.
The precision path depends on the TensorRT generation (see :mod:`runtimes.trt_plan`).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .base import Artifact, Availability, Clock, Runtime, RuntimeFailure, missing_package
from .cuda_mem import (
    TENSORRT_MIN_DRIVER,
    CudaEventClock,
    begin,
    complete,
    cuda_availability,
    driver_requirement,
    installed_cuda_major,
    load_backend,
    parse_cuda_device,
)
from .trt_plan import (
    TENSORRT_DISTS,
    calibration_cache_key,
    choose_precision_path,
    engine_cache_key,
    fold_int32_bias,
    int8_qdq_problem,
    profile_shapes,
    qdq_problems,
)


def default_cache_dir() -> Path:
    """``$QUANTBENCH_CACHE/trt`` or ``~/.cache/quantbench/trt``."""
    return Path(os.environ.get("QUANTBENCH_CACHE", Path.home() / ".cache" / "quantbench")) / "trt"


def _sha256(path: Path) -> str:
    from quantbench.common.files import sha256_file

    return sha256_file(path)


_KEEP_ERRORS = 64  # the logger outlives every engine: keep only the latest messages


def _make_logger(trt: Any) -> Any:
    """A TensorRT logger that keeps the latest error messages, so a failed call can say why in one line."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.count = 0  # errors logged so far: an adapter's mark before a call

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors = [*self.errors[-(_KEEP_ERRORS - 1):], " ".join(str(msg).split())]
                self.count += 1
            if int(severity) <= int(trt.ILogger.Severity.WARNING):
                print(f"[TensorRT] {msg}", flush=True)  # the cell log

        def since(self, mark: int) -> str | None:
            """The last error logged after ``mark`` (an earlier ``count``), or None."""
            return self.errors[-1] if self.count > mark and self.errors else None

    return _Logger()


_LOGGER: tuple[Any, Any] | None = None  # (tensorrt module, its logger)


def shared_logger(trt: Any) -> Any:
    """The process's one TensorRT logger.

    TensorRT keeps the first logger it is given for the whole process (builders, runtimes and parsers
    created later with another one still log to the first), so a logger per engine would lose the
    second engine's errors (two engines are alive during an interleaved speed-up). Each call site
    takes ``logger.count`` before and reads :meth:`since` after, so it reports its own error.
    """
    global _LOGGER
    if _LOGGER is None or _LOGGER[0] is not trt:
        _LOGGER = (trt, _make_logger(trt))
    return _LOGGER[1]


class TensorRTRuntime(Runtime):
    """TensorRT 10.x or 11.x.

    Options: ``workspace_mb`` (default 2048), ``cache_dir`` (engine cache, default
    ``~/.cache/quantbench/trt``), ``builder_optimization_level``, ``strongly_typed`` (TensorRT 10:
    build fp16/int8 from the typed ONNX instead of precision flags), ``tf32`` (default true, as
    TensorRT's), ``batch`` (profile max when the harness gives none), ``inspector_dir`` (write the engine
    inspector's JSON of each engine there, ``<precision>-<engine key>.json``; benchmarks/gpu_check.sh uses it).
    """

    name = "tensorrt"
    formats = ("onnx", "trt-calibrate")
    extra = "tensorrt"
    tox_env = "tensorrt"

    @classmethod
    def availability(cls) -> Availability:
        """Ok, or every missing part at once: the tensorrt package (or a stub of it), cuda-python, the GPU."""
        from .trt_libs import nvidia_index_hint, stub_install

        parts: list[Availability] = []
        missing = missing_package("tensorrt", cls.extra, "tensorrt (11.x) / tox -e tensorrt10 (10.x)")
        if missing:
            parts.append(Availability(False, missing.reason, f"{nvidia_index_hint(cls.extra)} / tox -e tensorrt "
                                                             "(11.x) / tox -e tensorrt10 (10.x)"))
        stub = stub_install()
        if stub:
            parts.append(Availability(False, stub, nvidia_index_hint(cls.extra)))
        cuda = cuda_availability(cls.extra, cls.tox_env)
        if not cuda.ok:
            parts.append(cuda)
        if parts:
            return Availability(False, "; ".join(a.reason for a in parts),
                                "; ".join(dict.fromkeys(a.hint for a in parts if a.hint)))
        try:
            import tensorrt  # noqa: F401 - only whether it imports
        except Exception as exc:  # noqa: BLE001 - a CUDA/TensorRT version mismatch fails at import
            return Availability(False, f"tensorrt failed to import ({str(exc).splitlines()[0]})",
                                "install the TensorRT wheel matching this CUDA version")
        return Availability(True)

    @classmethod
    def devices(cls) -> list[str]:
        try:
            return [f"cuda:{i}" for i in range(load_backend().device_count())]
        except Exception:  # noqa: BLE001 - discovery must not fail on a broken driver
            return []

    @classmethod
    def versions(cls) -> dict[str, str]:
        import tensorrt as trt

        v = {"tensorrt": trt.__version__}
        try:
            backend = load_backend()
            v.update({"cuda_backend": backend.name, "cuda_driver": backend.driver_version(),
                      "gpu": backend.device_name(0)})
        except Exception:  # noqa: BLE001 - the versions are best effort; TensorRT's own is known
            pass
        return v

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return ("workspace_mb", "cache_dir", "builder_optimization_level", "strongly_typed", "tf32", "batch",
                "inspector_dir")

    @classmethod
    def requirements(cls) -> str:
        """The NVIDIA driver the installed TensorRT wheel needs (or each build's, when none is installed)."""
        return driver_requirement(installed_cuda_major(TENSORRT_DISTS),
                                  {12: ".[tensorrt] / tox -e tensorrt (10.x: tensorrt10)",
                                   13: ".[tensorrt-cu13] / tox -e tensorrt-cu13 (10.x: tensorrt10-cu13)"},
                                  TENSORRT_MIN_DRIVER)

    def supports(self, artifact: Artifact) -> str | None:
        return super().supports(artifact) or int8_qdq_problem(artifact)  # int32 biases are folded at build

    # ---- build -----------------------------------------------------------------------------------
    def _activate_impl(self, artifact: Artifact) -> None:
        import tensorrt as trt

        self.device_index = parse_cuda_device(self.device, self.name)
        self.trt = trt
        self.cuda = load_backend()
        self.cuda.set_device(self.device_index)
        self.trt_major = int(trt.__version__.split(".")[0])
        try:
            self.plan = choose_precision_path(self.trt_major, artifact, bool(self.options.get("strongly_typed")))
        except ValueError as exc:
            raise RuntimeFailure(str(exc)) from None
        self.logger = shared_logger(trt)
        self._build_info: dict[str, Any] = {"trt_version": trt.__version__, "precision_path": self.plan.note,
                                            "builder_flags": list(self.plan.flags),
                                            "strongly_typed": self.plan.strongly_typed or self.trt_major >= 11}
        self.stream = self.cuda.stream_create()
        self._clock: CudaEventClock | None = None
        self._buffers: dict[str, int] = {}
        self._pinned: list[np.ndarray] = []
        self._shape: tuple[int, ...] | None = None
        self.engine = self.context = self.runtime_trt = None
        self.profile_max = self.batch or (int(self.options["batch"]) if self.options.get("batch") else None)
        if self.profile_max is not None:
            try:
                self._load_engine(artifact, self.profile_max)
            except BaseException:
                self._deactivate_impl()  # activate failed: deactivate() will not be called
                raise
        # else: the engine is built for the first staged batch (no batch given by the harness or options)

    def _load_engine(self, artifact: Artifact, batch: int) -> None:
        trt = self.trt
        onnx_path = Path(self.plan.onnx_path)
        if not onnx_path.is_file():
            raise RuntimeFailure(f"tensorrt: ONNX file not found: {onnx_path}")
        cache_dir = Path(self.options.get("cache_dir") or default_cache_dir())
        model_sha = _sha256(onnx_path)
        key_options = {k: self.options.get(k) for k in ("workspace_mb", "builder_optimization_level", "tf32")}
        calib_data, self._calib_reader = None, None
        if self.plan.calibrator:  # the engine and its table depend on the data the calibrator sees
            from .trt_calibrator import calibration_fingerprint

            if artifact.calibration is None:
                raise RuntimeFailure("tensorrt calibration needs calibration data (artifact.calibration)")
            reader = artifact.calibration()
            calib_data = calibration_fingerprint(reader)
            if hasattr(reader, "rewind"):  # rewound by the fingerprint: a build calibrates from it, no second open
                self._calib_reader = reader
            self._build_info["calibration_data"] = calib_data
        key = engine_cache_key(model_sha, self.plan, key_options, trt.__version__,
                               self.cuda.device_name(self.device_index),
                               self.cuda.compute_capability(self.device_index), batch, dict(artifact.settings),
                               calibration=calib_data)
        engine_path = cache_dir / f"{key}.engine"
        self.runtime_trt = trt.Runtime(self.logger)
        mark = self.logger.count
        if engine_path.is_file():
            self._build_info.update({"engine_cache": "hit", "build_s": 0.0})
        else:
            calib_path = None
            if self.plan.calibrator:
                calib_path = cache_dir / (calibration_cache_key(model_sha, self.plan.calibrator, trt.__version__,
                                                                dict(artifact.settings), calib_data) + ".calib")
            if artifact.format == "onnx" and artifact.precision == "int8":  # only a build reads the ONNX file
                onnx_path = self._float_bias_source(onnx_path, model_sha, cache_dir)
            t0 = time.perf_counter()
            serialized = self._build(onnx_path, artifact, batch, calib_path)
            self._build_info.update({"engine_cache": "miss", "build_s": round(time.perf_counter() - t0, 3)})
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = engine_path.with_name(f"{engine_path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(bytes(serialized))
            tmp.replace(engine_path)  # atomic: parallel cells never read a half-written engine
        self._calib_reader = None
        self._build_info.update({"engine_bytes": engine_path.stat().st_size, "engine_key": key})
        engine = self.runtime_trt.deserialize_cuda_engine(engine_path.read_bytes())
        if engine is None:
            why = self.logger.since(mark) or "built by another TensorRT version or GPU?"
            raise RuntimeFailure(f"tensorrt could not deserialize {engine_path.name}: {why}")
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise RuntimeFailure("tensorrt could not create an execution context (out of GPU memory?)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or not outputs:
            raise RuntimeFailure(f"tensorrt adapter runs single-input models; this engine has inputs {inputs}")
        # enqueueV3 fails unless every I/O tensor has an address: all outputs get a device buffer,
        # the first is the one fetched (and compared with the reference).
        self.input_name, self.output_name, self.output_names = inputs[0], outputs[0], outputs
        # The engine's I/O types, not float32: a model with fp16 (or int8) I/O needs host buffers of that type.
        self.input_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self.input_name)))
        self.output_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self.output_name)))
        self._output_dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in outputs}
        self._build_info["outputs"] = list(outputs)
        try:
            lo, _, hi = engine.get_tensor_profile_shape(self.input_name, 0)
            self.profile_min, self.profile_max = int(lo[0]), int(hi[0])
        except Exception:  # noqa: BLE001 - a static engine may list no profile
            self.profile_min = self.profile_max = batch
        self._build_info["profile_batch"] = [self.profile_min, batch, self.profile_max]

    def _float_bias_source(self, onnx_path: Path, model_sha: str, cache_dir: Path) -> Path:
        """``onnx_path``, or when it has int32 bias Q/DQ, the same file with those biases dequantized (exact):
        TensorRT's DequantizeLinear takes no int32."""
        if not qdq_problems(onnx_path).get("int32 bias"):
            return onnx_path
        folded = cache_dir / f"{model_sha[:32]}-float-bias.onnx"
        if not folded.is_file():
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = folded.with_name(f"{folded.name}.{os.getpid()}.tmp")
            self._build_info["int32_bias_folded"] = fold_int32_bias(onnx_path, tmp)
            tmp.replace(folded)
        return folded

    def _build(self, onnx_path: Path, artifact: Artifact, batch: int, calib_path: Path | None) -> Any:
        trt = self.trt
        builder = trt.Builder(self.logger)
        mark = self.logger.count
        flags = 0
        strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        if self.plan.strongly_typed and strongly is not None:
            flags |= 1 << int(strongly)  # required on 10.x, accepted and ignored on 11.x
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(" ".join(str(parser.get_error(i)).split()) for i in range(parser.num_errors))
            raise RuntimeFailure(f"tensorrt could not parse {onnx_path.name}: {errors or 'unknown error'}")
        if network.num_inputs != 1:
            raise RuntimeFailure(f"tensorrt adapter runs single-input models; "
                                 f"{onnx_path.name} has {network.num_inputs}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(self.options.get("workspace_mb", 2048)) << 20)
        if self.options.get("builder_optimization_level") is not None:
            config.builder_optimization_level = int(self.options["builder_optimization_level"])
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the inspector's per-layer precisions
        if self.options.get("tf32") is False and hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)
        for flag in self.plan.flags:
            if not hasattr(trt.BuilderFlag, flag):
                raise RuntimeFailure(f"TensorRT {trt.__version__} has no {flag} builder flag (strongly typed only)")
            config.set_flag(getattr(trt.BuilderFlag, flag))
        inp = network.get_input(0)
        sample = tuple(int(d) for d in inp.shape[1:])
        if any(d < 0 for d in sample):
            raise RuntimeFailure(f"tensorrt needs static non-batch dimensions, {onnx_path.name} has {tuple(inp.shape)}")
        try:
            lo, opt, hi = profile_shapes(tuple(int(d) for d in inp.shape), batch)
        except ValueError as exc:
            raise RuntimeFailure(f"tensorrt: {onnx_path.name}: {exc}") from None
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, lo, opt, hi)
        config.add_optimization_profile(profile)
        feed, device_buffer = None, None
        if self.plan.calibrator:
            feed, device_buffer, calibrator = self._calibrator(artifact, inp.name, sample, calib_path, builder, config)
            config.int8_calibrator = calibrator
        try:
            serialized = builder.build_serialized_network(network, config)
        finally:
            if device_buffer is not None:
                self.cuda.free(device_buffer)
        if feed is not None:
            if feed.error is not None:
                raise RuntimeFailure(f"tensorrt calibration failed: {feed.error}")
            self._build_info.update({"calibrator": self.plan.calibrator, "calibration_batches": feed.batches_fed,
                                     "calibration_samples": feed.samples_fed,
                                     "calibration_cache": "hit" if feed.cache_read else "miss"})
        if serialized is None:
            why = self.logger.since(mark) or "no error message from TensorRT"
            raise RuntimeFailure(f"tensorrt failed to build an engine for {onnx_path.name}: {why}")
        return serialized

    def _calibrator(self, artifact: Artifact, input_name: str, sample: tuple[int, ...], cache: Path | None,
                    builder: Any, config: Any) -> tuple[Any, int, Any]:
        from .trt_calibrator import CalibrationFeed, make_calibrator

        reader = self._calib_reader if self._calib_reader is not None else artifact.calibration()
        batch_size = int(getattr(reader, "batch_size", 0) or self.profile_max or 1)
        shape = (batch_size, *sample)
        calib_profile = builder.create_optimization_profile()
        calib_profile.set_shape(input_name, shape, shape, shape)
        config.set_calibration_profile(calib_profile)
        device_buffer = self.cuda.malloc(int(np.prod(shape)) * 4)
        stream = self.stream

        def to_device(x: np.ndarray) -> int:
            self.cuda.htod_async(device_buffer, x, stream)
            self.cuda.stream_sync(stream)
            return device_buffer

        assert cache is not None
        feed = CalibrationFeed(reader, batch_size, cache, to_device, sample_shape=sample)
        self._calibrator_obj = make_calibrator(self.trt, self.plan.calibrator or "entropy", feed)  # keep alive
        return feed, device_buffer, self._calibrator_obj

    def _bind(self, shape: tuple[int, ...]) -> None:
        """(Re)allocate device and pinned buffers for a batch shape."""
        self._free_buffers()
        if not self.context.set_input_shape(self.input_name, shape):
            raise RuntimeFailure(f"tensorrt: input shape {shape} is outside the engine's profile "
                                 f"(batch {getattr(self, 'profile_min', 1)}..{self.profile_max})")
        out_shapes = {n: tuple(int(d) for d in self.context.get_tensor_shape(n)) for n in self.output_names}
        unknown = {n: s for n, s in out_shapes.items() if any(d < 0 for d in s)}
        if unknown:
            raise RuntimeFailure(f"tensorrt: outputs with data-dependent shapes are not supported ({unknown})")
        self.host_in = self.cuda.pinned_empty(shape, self.input_dtype)
        self.host_out = self.cuda.pinned_empty(out_shapes[self.output_name], self.output_dtype)
        self._pinned = [self.host_in, self.host_out]
        self._d_in = self.cuda.malloc(self.host_in.nbytes)
        self._buffers = {self.input_name: self._d_in}
        for name, out_shape in out_shapes.items():
            nbytes = int(np.prod(out_shape)) * self._output_dtypes[name].itemsize
            self._buffers[name] = self.cuda.malloc(nbytes)
        self._d_out = self._buffers[self.output_name]
        for name, ptr in self._buffers.items():
            self.context.set_tensor_address(name, ptr)
        # Looked up here, not in infer(): the events would time the lookup between begin and the enqueue.
        self._stream_handle = self.cuda.stream_handle(self.stream)
        self._shape = shape

    def _free_buffers(self) -> None:
        for ptr in self._buffers.values():
            self.cuda.free(ptr)
        for arr in self._pinned:
            self.cuda.free_pinned(arr)
        self._buffers, self._pinned, self._shape = {}, [], None

    # ---- run -------------------------------------------------------------------------------------
    def _stage_impl(self, inputs: np.ndarray) -> Any:
        if self.engine is None:  # no batch known at activate: build for this one
            self.profile_max = int(inputs.shape[0])
            self._load_engine(self.artifact, self.profile_max)
        if inputs.shape != self._shape:
            if inputs.shape[0] > (self.profile_max or 0):
                raise RuntimeFailure(f"tensorrt engine was built for batch <= {self.profile_max}, "
                                     f"got {inputs.shape[0]}")
            self._bind(tuple(inputs.shape))
        # numpy -> pinned staging buffer is host work; the events time only the DMA from pinned memory.
        np.copyto(self.host_in, inputs, casting="same_kind")
        begin(self._clock)
        self.cuda.htod_async(self._d_in, self.host_in, self.stream)
        complete(self.cuda, self.stream, self._clock)
        return self._d_in

    def _infer_impl(self, staged: Any) -> Any:
        mark = self.logger.count
        begin(self._clock)
        if not self.context.execute_async_v3(self._stream_handle):
            why = self.logger.since(mark) or "no error message"
            raise RuntimeFailure(f"tensorrt execute_async_v3 failed: {why}")
        complete(self.cuda, self.stream, self._clock)
        return self._d_out

    def _fetch_impl(self, outputs: Any) -> np.ndarray:
        begin(self._clock)
        self.cuda.dtoh_async(self.host_out, outputs, self.stream)
        complete(self.cuda, self.stream, self._clock)
        return np.array(self.host_out, dtype=np.float32, copy=True)

    def clock(self) -> Clock:
        if self._clock is None:
            self._clock = CudaEventClock(self.cuda, self.stream)
        return self._clock

    def settings_used(self) -> dict[str, Any]:
        applied = {k: v for k, v in self.options.items() if k not in ("cache_dir", "inspector_dir")}
        applied.setdefault("workspace_mb", 2048)
        applied["tf32"] = self.options.get("tf32", True) is not False  # TensorRT allows TF32 for fp32 layers by default
        applied["h2d_host_memory"] = "pinned"  # pageable numpy copied into a pinned buffer first, outside the timing
        return {**applied, **self._build_info}

    def execution_report(self) -> dict[str, Any]:
        """Layer precisions from TensorRT's engine inspector (detailed profiling verbosity)."""
        from .trt_inspect import summarize_engine_layers

        requested = self.artifact.precision if self.artifact else ""
        if self.engine is None:
            return {"audit_note": "no engine was built"}
        try:
            info = self._engine_information()
            report = summarize_engine_layers(info, requested)
        except Exception as exc:  # noqa: BLE001 - the inspector is best effort
            return {"exec_precision": requested or None,
                    "audit_note": f"{self.plan.note}; engine inspector unavailable ({str(exc).splitlines()[0]})"}
        report["audit_note"] = f"{self.plan.note}; {report.get('audit_note', '')}"
        return report

    def _engine_information(self) -> str:
        """The engine inspector's JSON (per-layer precisions and formats); also written to ``inspector_dir``."""
        inspector = self.engine.create_engine_inspector()
        if self.context is not None:
            inspector.execution_context = self.context  # full format strings
        info = inspector.get_engine_information(self.trt.LayerInformationFormat.JSON)
        if self.options.get("inspector_dir"):
            out = Path(str(self.options["inspector_dir"])).expanduser()
            out.mkdir(parents=True, exist_ok=True)
            precision = self.artifact.precision if self.artifact else "unknown"
            (out / f"{precision}-{self._build_info.get('engine_key', 'engine')}.json").write_text(str(info))
        return info

    def _deactivate_impl(self) -> None:
        self._free_buffers()
        if self._clock is not None:
            self._clock.close()
            self._clock = None
        self.context = None  # context before engine before runtime: TensorRT's destruction order
        self.engine = None
        self.runtime_trt = None
        self.cuda.stream_destroy(self.stream)
