"""OpenVINO: compiles the same ONNX artifacts (Q/DQ pairs become OpenVINO low-precision ops).

On CPUs with AVX-512 BF16 / AMX, OpenVINO runs "FP32" models in bf16 unless
``INFERENCE_PRECISION_HINT=f32`` is set (~2× faster, outputs shift). The adapter exposes that as
the ``precision`` option, reads back what was applied and reports the precision each compute
layer really ran in.

Shapes: the ONNX artifacts have a dynamic batch axis. The model is reshaped to a static batch
(``activate(batch=...)``, else the first staged batch) because static shapes compile to faster
CPU kernels; a batch of another size recompiles (each compile time is in ``settings_used``).

Inputs are bound as host tensors on every device (``host_memory`` is True): on a GPU the copies
happen inside ``infer`` and count as compute.
"""
from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np

from .base import Artifact, Availability, Runtime, RuntimeFailure, missing_package

PRECISIONS = {"default": None, "f32": "f32", "bf16": "bf16", "f16": "f16"}
# OPTIMIZATION_CAPABILITIES names for each inference precision.
CAPABILITY = {"f32": "FP32", "bf16": "BF16", "f16": "FP16"}
HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
# Layer types (rt_info "layerType") that do the arithmetic; their runtime precision is what the
# audit counts. The CPU plugin reports group convolutions as "Convolution", Gemm as "FullyConnected".
COMPUTE_LAYERS = {"Convolution", "GroupConvolution", "Deconvolution", "ConvolutionBackpropData",
                  "FullyConnected", "FullyConnectedCompressed", "MatMul", "Gemm"}
RUNTIME_PRECISION = {"u8": "int8", "i8": "int8", "f32": "fp32", "bf16": "bf16", "f16": "fp16"}
READ_BACK = ("PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS", "INFERENCE_PRECISION_HINT",
             "EXECUTION_DEVICES")


def ov_device(device: str, available: list[str]) -> str:
    """Map our lowercase device name ("cpu", "gpu", "gpu.0", "npu") to OpenVINO's; one-line error if absent."""
    by_lower = {d.lower(): d for d in available}
    name = device.lower()
    if name in by_lower:
        return by_lower[name]
    # A single GPU is listed as "GPU", which is also "gpu.0"; "gpu" alone means the first one.
    if name.endswith(".0") and name[:-2] in by_lower:
        return by_lower[name[:-2]]
    if f"{name}.0" in by_lower:
        return by_lower[f"{name}.0"]
    raise RuntimeFailure(f"openvino: unknown device '{device}' (available: {', '.join(sorted(by_lower)) or 'none'})")


def _plain(value: Any) -> Any:
    """An OpenVINO property value as a JSON-friendly Python value."""
    if hasattr(value, "get_type_name"):  # ov.Type, e.g. <Type: 'float32'> -> "f32"
        return value.get_type_name()
    if isinstance(value, (int, float, str, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(getattr(value, "name", value))  # enums such as PerformanceMode.LATENCY


class OpenVinoRuntime(Runtime):
    """OpenVINO runtime. Options: threads, hint (latency|throughput), streams, precision (default|f32|bf16|f16)."""

    name = "openvino"
    extra = "openvino"
    tox_env = "openvino"

    @classmethod
    def availability(cls) -> Availability:
        return missing_package("openvino", cls.extra, cls.tox_env) or Availability(True)

    @classmethod
    def devices(cls) -> list[str]:
        import openvino as ov

        return [d.lower() for d in ov.Core().available_devices]

    @classmethod
    def versions(cls) -> dict[str, str]:
        import openvino as ov

        return {"openvino": ov.get_version()}

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return ("threads", "hint", "streams", "precision")

    def _config(self, core: Any, device: str) -> dict[str, Any]:
        """The compile properties from our options; unsupported values fail here, before compiling."""
        unknown = set(self.options) - set(self.option_names())
        if unknown:
            raise RuntimeFailure(f"openvino: unknown option(s) {', '.join(sorted(unknown))} "
                                 f"(known: {', '.join(self.option_names())})")
        cfg: dict[str, Any] = {}
        hint = str(self.options.get("hint", "latency")).lower()
        if hint not in HINTS:
            raise RuntimeFailure(f"openvino: hint must be one of {', '.join(HINTS)}, not '{hint}'")
        cfg["PERFORMANCE_HINT"] = HINTS[hint]
        if self.options.get("threads"):
            cfg["INFERENCE_NUM_THREADS"] = int(self.options["threads"])
        if self.options.get("streams"):
            cfg["NUM_STREAMS"] = str(self.options["streams"])
        precision = str(self.options.get("precision", "default")).lower()
        if precision not in PRECISIONS:
            raise RuntimeFailure(f"openvino: precision must be one of {', '.join(PRECISIONS)}, not '{precision}'")
        if PRECISIONS[precision]:
            caps = [str(c).upper() for c in core.get_property(device, "OPTIMIZATION_CAPABILITIES")]
            if CAPABILITY[precision] not in caps:
                # OpenVINO would silently fall back; a row labelled with a precision that never ran is worse.
                raise RuntimeFailure(f"openvino: device {device} does not support precision {precision} "
                                     f"(capabilities: {', '.join(caps)})")
            cfg["INFERENCE_PRECISION_HINT"] = PRECISIONS[precision]
        return cfg

    def _activate_impl(self, artifact: Artifact) -> None:
        import openvino as ov

        self._core = ov.Core()
        self._ov_device = ov_device(self.device, self._core.available_devices)
        self._ov_config = self._config(self._core, self._ov_device)
        try:
            self._model = self._core.read_model(str(artifact.path))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises a generic RuntimeError
            raise RuntimeFailure(f"openvino could not read {artifact.path}: {_first_line(exc)}") from None
        if len(self._model.inputs) != 1:
            raise RuntimeFailure(f"openvino: {artifact.path} has {len(self._model.inputs)} inputs; "
                                 "quantbench feeds one")
        self._Tensor = ov.Tensor
        # pybind's own infer skips the Python wrapper's input dispatch and output copy (~4 µs per
        # call); it is internal API, so fall back to the public one if it moves.
        self._base_infer = getattr(ov.InferRequest.__mro__[1], "infer", None)
        self.compile_ms: dict[int, float] = {}
        self.compiled = self.request = None
        self._compiled_batch: int | None = None
        self._staged_array: np.ndarray | None = None
        if self.batch:
            self._compile(int(self.batch))

    def _compile(self, batch: int) -> None:
        """(Re)compile for a static ``batch``; the ONNX batch axis is dynamic, so reshaping is free."""
        model = self._model
        shape = model.inputs[0].get_partial_shape()
        if shape.rank.is_dynamic:
            raise RuntimeFailure("openvino: the model input has dynamic rank; cannot fix its batch size")
        if shape[0].is_dynamic or shape[0].get_length() != batch:
            shape[0] = batch
            try:
                model.reshape({model.inputs[0]: shape})
            except Exception as exc:  # noqa: BLE001 - OpenVINO raises a generic RuntimeError
                raise RuntimeFailure(f"openvino could not reshape the input to batch {batch}: "
                                     f"{_first_line(exc)}") from None
        self.request = self.compiled = None  # free the previous compilation first
        t0 = time.perf_counter_ns()
        try:
            self.compiled = self._core.compile_model(model, self._ov_device, self._ov_config)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises a generic RuntimeError
            raise RuntimeFailure(f"openvino could not compile for {self._ov_device}: {_first_line(exc)}") from None
        self.compile_ms[batch] = round((time.perf_counter_ns() - t0) / 1e6, 3)
        self.request = self.compiled.create_infer_request()
        self._input_dtype = self.request.get_input_tensor().data.dtype
        self._compiled_batch = batch
        self._staged_array = None

    @property
    def host_memory(self) -> bool:
        # Inputs are host tensors on every device: a GPU plugin copies them inside infer(), so stage()
        # only binds a buffer and there is no separate host→device (or device→host) step to time.
        return True

    def _stage_impl(self, inputs: np.ndarray) -> Any:
        if inputs is self._staged_array:  # the harness stages the same batch every iteration
            return self._staged_tensor
        if inputs.shape[0] != self._compiled_batch:
            self._compile(inputs.shape[0])
        if inputs.dtype != self._input_dtype or not inputs.flags.c_contiguous:
            inputs = np.ascontiguousarray(inputs, dtype=self._input_dtype)
        # Zero copy on CPU: the request reads the caller's buffer (kept alive by self._staged_array).
        tensor = self._Tensor(inputs, shared_memory=True)
        try:
            self.request.set_input_tensor(tensor)
        except Exception as exc:  # noqa: BLE001 - wrong shape for the compiled model
            raise RuntimeFailure(f"openvino: cannot stage input of shape {inputs.shape}: {_first_line(exc)}") from None
        self._staged_array, self._staged_tensor = inputs, tensor
        return tensor

    def _infer_impl(self, staged: Any) -> Any:
        try:
            if self._base_infer is not None:
                try:
                    self._base_infer(self.request, {}, True, True)  # synchronous; the input is already set
                except TypeError:  # signature changed in this OpenVINO: use the public API from now on
                    self._base_infer = None
                    self.request.infer()
            else:
                self.request.infer()
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises a generic RuntimeError
            raise RuntimeFailure(f"openvino inference failed: {_first_line(exc)}") from None
        return self.request.get_output_tensor()

    def _fetch_impl(self, outputs: Any) -> np.ndarray:
        return np.array(outputs.data, dtype=np.float32, copy=True)

    def settings_used(self) -> dict[str, Any]:
        """Properties read back from the compiled model, plus the requested precision and compile times."""
        props: dict[str, Any] = {}
        if self.compiled is not None:
            for key in READ_BACK:
                try:
                    props[key] = _plain(self.compiled.get_property(key))
                except Exception:  # noqa: BLE001 - not every device reports every property
                    continue
        props["precision_requested"] = str(self.options.get("precision", "default"))
        props["static_batch"] = self._compiled_batch
        props["compile_ms"] = {str(k): v for k, v in getattr(self, "compile_ms", {}).items()}
        return props

    def execution_report(self) -> dict[str, Any]:
        """Per-layer runtime precision of compute layers, from the compiled model's runtime graph."""
        if self.compiled is None:
            return {"audit_note": "openvino: nothing compiled yet (no batch staged)"}
        counts: Counter[str] = Counter()
        kernels: Counter[str] = Counter()
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            layer = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
            if layer not in COMPUTE_LAYERS:
                continue
            prec = info["runtimePrecision"].astype(str).lower() if "runtimePrecision" in info else "unknown"
            counts[RUNTIME_PRECISION.get(prec, prec)] += 1
            if "primitiveType" in info:
                kernels[info["primitiveType"].astype(str)] += 1
        total = sum(counts.values())
        if not total:
            return {"audit_note": "openvino: no compute layers found in the runtime model"}
        dominant, n = counts.most_common(1)[0]
        return {
            "exec_precision": dominant if n == total else "mixed",
            "int8_op_share": round(counts.get("int8", 0) / total, 4),
            "op_precisions": dict(counts),
            "audit_note": "OpenVINO runtime model, compute layers: "
                          + ", ".join(f"{k} {v}" for k, v in counts.most_common())
                          + "; kernels: " + ", ".join(f"{k} {v}" for k, v in kernels.most_common(4)),
        }

    def _deactivate_impl(self) -> None:
        self.request = self.compiled = None
        self._model = self._core = None
        self._staged_array = self._staged_tensor = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
