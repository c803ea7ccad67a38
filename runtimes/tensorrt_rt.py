"""TensorRT: builds (and caches) an engine from the ONNX artifact and runs it with ``execute_async_v3``.

H2D, compute and D2H are timed with CUDA events on the adapter's stream, as trtexec reports them.
The precision path depends on the TensorRT generation (see :mod:`runtimes.trt_plan`).
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .base import Artifact, Availability, Clock, Runtime, RuntimeFailure, missing_package
from .cuda_mem import CudaEventClock, cuda_availability, load_backend
from exporters.artifacts import sha256_file

from .trt_plan import choose_precision_path, engine_cache_key


def _default_cache_dir() -> Path:
    return Path(os.environ.get("QUANTBENCH_CACHE", Path.home() / ".cache" / "quantbench")) / "trt"


class TensorRTRuntime(Runtime):
    """TensorRT 10.x or 11.x. Options: workspace_mb, cache_dir, builder_optimization_level."""

    name = "tensorrt"
    formats = ("onnx", "trt-calibrate")
    extra = "tensorrt"
    tox_env = "tensorrt"

    @classmethod
    def availability(cls) -> Availability:
        missing = missing_package("tensorrt", cls.extra, "tensorrt / tox -e tensorrt10")
        if missing:
            return missing
        cuda = cuda_availability(cls.extra, cls.tox_env)
        if not cuda.ok:
            return cuda
        try:
            import tensorrt  # noqa: F401
        except Exception as exc:  # noqa: BLE001 - a CUDA/TensorRT version mismatch fails at import
            return Availability(False, f"tensorrt failed to import ({str(exc).splitlines()[0]})",
                                "install the TensorRT wheel matching this CUDA version")
        return Availability(True)

    @classmethod
    def devices(cls) -> list[str]:
        return [f"cuda:{i}" for i in range(load_backend().device_count())]

    @classmethod
    def versions(cls) -> dict[str, str]:
        import tensorrt as trt

        return {"tensorrt": trt.__version__, "cuda_backend": load_backend().name}

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return ("threads", "workspace_mb", "cache_dir", "builder_optimization_level")

    # ---- build -----------------------------------------------------------------------------------
    def _activate_impl(self, artifact: Artifact) -> None:
        import tensorrt as trt

        if not self.device.startswith("cuda"):
            raise RuntimeFailure(f"tensorrt runs on cuda devices, not '{self.device}'")
        self.trt = trt
        self.cuda = load_backend()
        self.device_index = int(self.device.split(":")[1]) if ":" in self.device else 0
        self.cuda.set_device(self.device_index)
        self.logger = trt.Logger(trt.Logger.WARNING)
        major = int(trt.__version__.split(".")[0])
        try:
            self.plan = choose_precision_path(major, artifact)
        except ValueError as exc:
            raise RuntimeFailure(str(exc)) from None
        self._build_info: dict[str, Any] = {"trt_version": trt.__version__, "precision_path": self.plan.note}
        self.engine = self._load_or_build(artifact)
        self.context = self.engine.create_execution_context()
        self.stream = self.cuda.stream_create()
        self.input_name, self.output_name = self._io_names()
        self._buffers: dict[str, int] = {}
        self._shape: tuple[int, ...] | None = None

    def _load_or_build(self, artifact: Artifact) -> Any:
        trt = self.trt
        onnx_path = Path(self.plan.onnx_path)
        cache_dir = Path(self.options.get("cache_dir") or _default_cache_dir())
        key = engine_cache_key(sha256_file(onnx_path), self.plan,
                               {k: self.options.get(k) for k in ("workspace_mb", "builder_optimization_level")},
                               trt.__version__, self.cuda.device_name(self.device_index),
                               self.cuda.compute_capability(self.device_index), self.batch)
        engine_path = cache_dir / f"{key}.engine"
        runtime = trt.Runtime(self.logger)
        self.runtime_trt = runtime
        if engine_path.is_file():
            self._build_info.update({"engine_cache": "hit", "build_s": 0.0})
        else:
            t0 = time.perf_counter()
            serialized = self._build(onnx_path, artifact, cache_dir / f"{key}.calib")
            self._build_info.update({"engine_cache": "miss", "build_s": round(time.perf_counter() - t0, 3)})
            cache_dir.mkdir(parents=True, exist_ok=True)
            engine_path.write_bytes(bytes(serialized))
        self._build_info["engine_bytes"] = engine_path.stat().st_size
        engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if engine is None:
            raise RuntimeFailure(f"tensorrt could not deserialize {engine_path} (built by another TensorRT/GPU?)")
        return engine

    def _build(self, onnx_path: Path, artifact: Artifact, calib_cache: Path) -> Any:
        trt = self.trt
        builder = trt.Builder(self.logger)
        flags = 0
        strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        if self.plan.strongly_typed and strongly_typed is not None and int(trt.__version__.split(".")[0]) < 11:
            flags |= 1 << int(strongly_typed)  # TensorRT 11 is always strongly typed
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)).splitlines()[0] for i in range(parser.num_errors))
            raise RuntimeFailure(f"tensorrt could not parse {onnx_path.name}: {errors or 'unknown error'}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(self.options.get("workspace_mb", 2048)) << 20)
        if self.options.get("builder_optimization_level") is not None:
            config.builder_optimization_level = int(self.options["builder_optimization_level"])
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        for flag in self.plan.flags:
            config.set_flag(getattr(trt.BuilderFlag, flag))
        inp = network.get_input(0)
        sample = tuple(int(d) for d in inp.shape[1:])
        if any(d < 0 for d in sample):
            raise RuntimeFailure(f"tensorrt needs static non-batch dimensions, {onnx_path.name} has {tuple(inp.shape)}")
        batch = self.batch or 1
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, (1, *sample), (batch, *sample), (batch, *sample))
        config.add_optimization_profile(profile)
        self._calib_buffers: list[int] = []
        if self.plan.calibrator:
            config.int8_calibrator = self._calibrator(artifact, inp.name, sample, calib_cache, builder, config)
        serialized = builder.build_serialized_network(network, config)
        for ptr in self._calib_buffers:
            self.cuda.free(ptr)
        if serialized is None:
            raise RuntimeFailure(f"tensorrt failed to build an engine for {onnx_path.name} (see the cell log)")
        return serialized

    def _calibrator(self, artifact: Artifact, input_name: str, sample: tuple[int, ...], cache: Path,
                    builder: Any, config: Any) -> Any:
        from .trt_calibrator import CalibrationFeed, make_calibrator

        if artifact.calibration is None:
            raise RuntimeFailure("tensorrt calibration needs calibration data (artifact.calibration)")
        reader = artifact.calibration()
        batch_size = reader.batch_size
        calib_profile = builder.create_optimization_profile()
        shape = (batch_size, *sample)
        calib_profile.set_shape(input_name, shape, shape, shape)
        config.set_calibration_profile(calib_profile)
        nbytes = int(np.prod(shape)) * 4
        device_buffer = self.cuda.malloc(nbytes)
        self._calib_buffers.append(device_buffer)
        stream = self.cuda.stream_create()

        def to_device(x: np.ndarray) -> int:
            self.cuda.htod_async(device_buffer, x, stream)
            self.cuda.stream_sync(stream)
            return device_buffer

        feed = CalibrationFeed(reader, batch_size, cache, to_device)
        self._build_info["calibrator"] = self.plan.calibrator
        return make_calibrator(self.trt, self.plan.calibrator or "entropy", feed)

    def _io_names(self) -> tuple[str, str]:
        trt = self.trt
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        return inputs[0], outputs[0]

    def _bind(self, shape: tuple[int, ...]) -> None:
        """(Re)allocate device and pinned buffers for a batch shape."""
        for ptr in self._buffers.values():
            self.cuda.free(ptr)
        self.context.set_input_shape(self.input_name, shape)
        out_shape = tuple(self.context.get_tensor_shape(self.output_name))
        self.host_in = self.cuda.pinned_empty(shape, np.float32)
        self.host_out = self.cuda.pinned_empty(out_shape, np.float32)
        self._buffers = {self.input_name: self.cuda.malloc(self.host_in.nbytes),
                         self.output_name: self.cuda.malloc(self.host_out.nbytes)}
        for name, ptr in self._buffers.items():
            self.context.set_tensor_address(name, ptr)
        self._shape = shape

    # ---- run -------------------------------------------------------------------------------------
    def _stage_impl(self, inputs: np.ndarray) -> Any:
        if inputs.shape != self._shape:
            self._bind(tuple(inputs.shape))
        np.copyto(self.host_in, inputs)
        self.cuda.htod_async(self._buffers[self.input_name], self.host_in, self.stream)
        self.cuda.stream_sync(self.stream)
        return self._buffers[self.input_name]

    def _infer_impl(self, staged: Any) -> Any:
        if not self.context.execute_async_v3(self.cuda.stream_handle(self.stream)):
            raise RuntimeFailure("tensorrt execute_async_v3 failed")
        self.cuda.stream_sync(self.stream)
        return self._buffers[self.output_name]

    def _fetch_impl(self, outputs: Any) -> np.ndarray:
        self.cuda.dtoh_async(self.host_out, outputs, self.stream)
        self.cuda.stream_sync(self.stream)
        return np.array(self.host_out, copy=True)

    def clock(self) -> Clock:
        return CudaEventClock(self.cuda, self.stream)

    def settings_used(self) -> dict[str, Any]:
        return {**{k: v for k, v in self.options.items() if k != "cache_dir"}, **self._build_info}

    def execution_report(self) -> dict[str, Any]:
        """Layer output precisions from TensorRT's engine inspector (detailed profiling verbosity)."""
        try:
            inspector = self.engine.create_engine_inspector()
            info = json.loads(inspector.get_engine_information(self.trt.LayerInformationFormat.JSON))
        except Exception as exc:  # noqa: BLE001 - the inspector is best effort
            return {"audit_note": f"engine inspector unavailable: {exc}"}
        counts: Counter[str] = Counter()
        for layer in info.get("Layers", []):
            if not isinstance(layer, dict) or layer.get("LayerType") in ("Reformat", "NoOp", "Shuffle"):
                continue
            outputs = layer.get("Outputs") or []
            # TensorRT 10 reports "Format/Datatype"; 11 split it into separate fields: read them all.
            fmt = json.dumps(outputs[0]) if outputs else ""
            prec = "int8" if "Int8" in fmt else "fp16" if "Half" in fmt else "fp32" if "Float" in fmt else "other"
            counts[prec] += 1
        total = sum(v for k, v in counts.items() if k != "other")
        if not total:
            return {"audit_note": "engine inspector reported no layer precisions", **self._build_info}
        dominant, n = counts.most_common(1)[0]
        return {"exec_precision": dominant if n == sum(counts.values()) else "mixed",
                "int8_op_share": round(counts.get("int8", 0) / total, 4), "op_precisions": dict(counts),
                "audit_note": f"{self.plan.note}; engine layers: " + ", ".join(f"{k} {v}" for k, v in counts.items())}

    def _deactivate_impl(self) -> None:
        for ptr in getattr(self, "_buffers", {}).values():
            self.cuda.free(ptr)
        self._buffers = {}
        self.cuda.release_pinned()
        self.context = None
        self.engine = None
