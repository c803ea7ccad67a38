"""A stand-in for the ``tensorrt`` module: the calls the adapter makes, with TensorRT's documented behaviour.

It lets GPU-free tests drive :class:`quantbench.runtimes.tensorrt_rt.TensorRTRuntime` through its public
interface (activate, stage, infer, fetch, settings_used, execution_report) over the fake CUDA backend
of ``test_cuda_mem``. What it copies from TensorRT, because the adapter depends on it:

- **One logger per process.** The first ``ILogger`` handed to a Builder/Runtime is the one every later
  object logs to (TensorRT 8+ keeps a single global logger), whatever logger they were given.
- **enqueueV3 checks every I/O tensor.** ``execute_async_v3`` fails, logging an error, when an input or
  output has no address (``setTensorAddress``) or the input shape is unset.
- The "engine" really computes: it runs the parsed ONNX file with ONNX Runtime (CPU) on the bytes found
  at the input address and writes every output to its address in the fake device memory.
"""
from __future__ import annotations

import enum
import json
import types
from typing import Any

import numpy as np

__version__ = "10.9.0"  # set per test with make_fake_tensorrt(version=...)


class _Severity(enum.IntEnum):
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)


def make_fake_tensorrt(cuda: Any, version: str = "10.9.0", inspector_json: str | None = None) -> types.ModuleType:
    """A fresh fake ``tensorrt`` module over ``cuda`` (a ``FakeCuda``); ``inspector_json`` is what the
    engine inspector returns (default: one fp32 convolution)."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    state: dict[str, Any] = {"logger": None, "loggers_given": [], "builds": 0, "executions": []}
    trt._state = state

    class ILogger:
        Severity = _Severity

        def __init__(self) -> None:
            pass

    def _register(logger: Any) -> None:
        state["loggers_given"].append(logger)
        if state["logger"] is None:
            state["logger"] = logger  # TensorRT keeps the first; later loggers are ignored

    def _log(severity: _Severity, msg: str) -> None:
        if state["logger"] is not None:
            state["logger"].log(severity, msg)

    class DataType(enum.IntEnum):
        FLOAT, HALF, INT8, INT32 = range(4)

    _NP = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8, DataType.INT32: np.int32}
    _FROM_ONNX = {1: DataType.FLOAT, 10: DataType.HALF, 3: DataType.INT8, 6: DataType.INT32}

    class TensorIOMode(enum.IntEnum):
        NONE, INPUT, OUTPUT = range(3)

    trt.ILogger, trt.DataType, trt.TensorIOMode = ILogger, DataType, TensorIOMode
    trt.nptype = lambda dt: _NP[DataType(dt)]
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8", TF32="TF32")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.ProfilingVerbosity = types.SimpleNamespace(DETAILED="DETAILED")
    trt.LayerInformationFormat = types.SimpleNamespace(JSON="JSON")

    class _Tensor:
        def __init__(self, name: str, shape: tuple[int, ...], dtype: DataType) -> None:
            self.name, self.shape, self.dtype = name, shape, dtype

    class _Network:
        def __init__(self) -> None:
            self.inputs: list[_Tensor] = []
            self.outputs: list[_Tensor] = []
            self.onnx_path = ""

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> _Tensor:
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network: _Network, logger: Any) -> None:
            _register(logger)
            self.network, self.num_errors = network, 0

        def parse_from_file(self, path: str) -> bool:
            import onnx

            graph = onnx.load(path, load_external_data=False).graph
            inits = {i.name for i in graph.initializer}

            def tensor(vi: Any) -> _Tensor:
                dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)
                return _Tensor(vi.name, dims, _FROM_ONNX[vi.type.tensor_type.elem_type])

            self.network.inputs = [tensor(i) for i in graph.input if i.name not in inits]
            self.network.outputs = [tensor(o) for o in graph.output]
            self.network.onnx_path = path
            return True

        def get_error(self, i: int) -> str:
            return ""

    class _Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple] = {}

        def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class _Config:
        def __init__(self) -> None:
            self.flags: set[str] = set()
            self.profiles: list[_Profile] = []
            self.builder_optimization_level = 3
            self.profiling_verbosity = None
            self.int8_calibrator = None

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            self.workspace = size

        def set_flag(self, flag: str) -> None:
            self.flags.add(flag)

        def clear_flag(self, flag: str) -> None:
            self.flags.discard(flag)

        def add_optimization_profile(self, profile: _Profile) -> None:
            self.profiles.append(profile)

    class Builder:
        def __init__(self, logger: Any) -> None:
            _register(logger)

        def create_network(self, flags: int = 0) -> _Network:
            return _Network()

        def create_builder_config(self) -> _Config:
            return _Config()

        def create_optimization_profile(self) -> _Profile:
            return _Profile()

        def build_serialized_network(self, network: _Network, config: _Config) -> bytes | None:
            state["builds"] += 1
            if state.get("fail_build"):
                _log(_Severity.ERROR, state["fail_build"])
                return None
            io = [(t.name, list(t.shape), int(t.dtype), int(TensorIOMode.INPUT)) for t in network.inputs]
            io += [(t.name, list(t.shape), int(t.dtype), int(TensorIOMode.OUTPUT)) for t in network.outputs]
            profile = {k: [list(s) for s in v] for k, v in config.profiles[0].shapes.items()}
            return json.dumps({"onnx": network.onnx_path, "io": io, "profile": profile,
                               "flags": sorted(config.flags)}).encode()

    class _Inspector:
        def __init__(self) -> None:
            self.execution_context = None

        def get_engine_information(self, fmt: str) -> str:
            if inspector_json is not None:
                return inspector_json
            return json.dumps({"Layers": [{"Name": "conv", "LayerType": "CaskConvolution",
                                           "Inputs": [{"Name": "i", "Format/Datatype": "Row major linear FP32"}],
                                           "Outputs": [{"Name": "o", "Format/Datatype": "Row major linear FP32"}]}]})

    class _Engine:
        def __init__(self, spec: dict[str, Any]) -> None:
            self.spec = spec
            self.io = {name: (tuple(shape), DataType(dt), TensorIOMode(mode)) for name, shape, dt, mode in spec["io"]}
            self.names = [name for name, *_ in spec["io"]]

        @property
        def num_io_tensors(self) -> int:
            return len(self.names)

        def get_tensor_name(self, i: int) -> str:
            return self.names[i]

        def get_tensor_mode(self, name: str) -> TensorIOMode:
            return self.io[name][2]

        def get_tensor_dtype(self, name: str) -> DataType:
            return self.io[name][1]

        def get_tensor_profile_shape(self, name: str, index: int) -> list[tuple]:
            return [tuple(s) for s in self.spec["profile"][name]]

        def create_execution_context(self) -> _Context:
            return _Context(self)

        def create_engine_inspector(self) -> _Inspector:
            return _Inspector()

    class _Context:
        def __init__(self, engine: _Engine) -> None:
            self.engine = engine
            self.addresses: dict[str, int] = {}
            self.input_shapes: dict[str, tuple] = {}

        def set_input_shape(self, name: str, shape: tuple) -> bool:
            lo, _, hi = self.engine.spec["profile"][name]
            if not all(a <= d <= b for a, d, b in zip(lo, shape, hi, strict=False)):
                _log(_Severity.ERROR,
                     f"IExecutionContext::setInputShape: Error Code 3: {name} shape {shape} out of profile")
                return False
            self.input_shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name: str) -> tuple:
            if name in self.input_shapes:
                return self.input_shapes[name]
            batch = next(iter(self.input_shapes.values()))[0]
            shape = self.engine.io[name][0]
            return (batch, *shape[1:]) if shape and shape[0] < 0 else shape

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            self.addresses[name] = ptr
            return True

        def execute_async_v3(self, stream: int) -> bool:
            if state.get("fail_execute") is not None:  # "" fails without a message
                if state["fail_execute"]:
                    _log(_Severity.ERROR, state["fail_execute"])
                return False
            missing = [n for n in self.engine.names if n not in self.addresses]
            if missing:
                _log(_Severity.ERROR,
                     "IExecutionContext::enqueueV3: Error Code 3: API Usage Error (Parameter check failed, "
                     f"condition: address is set. Address is not set for tensor {missing[0]}.)")
                return False
            import onnxruntime as ort

            cuda.timeline.append(("execute", stream))
            (name, (shape, dt, _)), = [(n, v) for n, v in self.engine.io.items() if v[2] == TensorIOMode.INPUT]
            shape = self.input_shapes[name]
            dtype = np.dtype(_NP[dt])
            x = cuda.mem[self.addresses[name]][:int(np.prod(shape)) * dtype.itemsize].view(dtype).reshape(shape)
            sess = ort.InferenceSession(self.engine.spec["onnx"], providers=["CPUExecutionProvider"])
            outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {name: x}), strict=True))
            for out_name, value in outs.items():
                odtype = np.dtype(_NP[self.engine.io[out_name][1]])
                raw = np.ascontiguousarray(value, dtype=odtype).view(np.uint8).reshape(-1)
                cuda.mem[self.addresses[out_name]][:raw.size] = raw
            state["executions"].append(stream)
            return True

    class Runtime:
        def __init__(self, logger: Any) -> None:
            _register(logger)

        def deserialize_cuda_engine(self, data: bytes) -> _Engine | None:
            try:
                return _Engine(json.loads(bytes(data)))
            except ValueError:
                _log(_Severity.ERROR,
                     "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (magic tag mismatch)")
                return None

    trt.OnnxParser, trt.Builder, trt.Runtime = OnnxParser, Builder, Runtime
    return trt
