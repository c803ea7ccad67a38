"""OpenVINO: compiles the same ONNX artifacts (Q/DQ pairs become OpenVINO low-precision ops).

On CPUs with AVX-512 BF16 / AMX, OpenVINO runs "FP32" models in bf16 unless
``INFERENCE_PRECISION_HINT=f32`` is set (measured here: ~2× faster, outputs shift). The adapter
exposes that as the ``precision`` option and reports the precision each layer really ran in.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from .base import Artifact, Availability, Runtime, RuntimeFailure, missing_package

PRECISIONS = {"default": None, "f32": "f32", "bf16": "bf16", "f16": "f16"}
HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT", "cumulative_throughput": "CUMULATIVE_THROUGHPUT"}
# Layer types that do the arithmetic; their runtime precision is what the audit counts.
COMPUTE_LAYERS = {"Convolution", "FullyConnected", "MatMul", "GroupConvolution", "Deconvolution",
                  "ConvolutionBackpropData", "GroupConvolutionBackpropData", "Gemm", "FullyConnectedCompressed"}


def _ov_device(device: str) -> str:
    return device.upper()


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

    def _config(self) -> dict[str, Any]:
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
            cfg["INFERENCE_PRECISION_HINT"] = PRECISIONS[precision]
        return cfg

    def _activate_impl(self, artifact: Artifact) -> None:
        import openvino as ov

        core = ov.Core()
        available = [d.lower() for d in core.available_devices]
        if self.device.lower() not in available:
            raise RuntimeFailure(f"openvino: unknown device '{self.device}' (available: {', '.join(available)})")
        device = _ov_device(self.device)
        config = self._config()
        want = config.get("INFERENCE_PRECISION_HINT")
        if want:
            supported = [str(p).lower() for p in core.get_property(device, "OPTIMIZATION_CAPABILITIES")]
            names = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
            if names[want] not in supported:
                raise RuntimeFailure(f"openvino: device {device} does not support precision {want} "
                                     f"(supports: {', '.join(supported)})")
        try:
            model = core.read_model(str(artifact.path))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises a generic RuntimeError
            raise RuntimeFailure(f"openvino could not read {artifact.path}: {str(exc).strip().splitlines()[0]}") from None
        # A static batch compiles to faster CPU kernels than a dynamic one; recompiled if another batch arrives.
        if self.batch:
            shape = model.inputs[0].get_partial_shape()
            shape[0] = self.batch
            model.reshape({model.inputs[0]: shape})
        try:
            self.compiled = core.compile_model(model, device, config)
        except Exception as exc:  # noqa: BLE001
            raise RuntimeFailure(f"openvino could not compile for {device}: {str(exc).strip().splitlines()[0]}") from None
        self.request = self.compiled.create_infer_request()
        self._input = self.compiled.inputs[0]
        self._output = self.compiled.outputs[0]
        self._Tensor = ov.Tensor

    def _stage_impl(self, inputs: np.ndarray) -> Any:
        # Copy into the request's own (plugin-allocated, aligned) input tensor, as a deployment
        # would; wrapping the numpy buffer instead measured 1-2% slower compute on ResNet-50.
        tensor = self.request.get_input_tensor()
        if tuple(tensor.shape) == inputs.shape:
            np.copyto(tensor.data, inputs)
        else:
            tensor = self._Tensor(inputs, shared_memory=False)
            self.request.set_input_tensor(tensor)
        return tensor

    def _infer_impl(self, staged: Any) -> Any:
        self.request.infer()
        return self.request.get_output_tensor()

    def _fetch_impl(self, outputs: Any) -> np.ndarray:
        return np.array(outputs.data, dtype=np.float32, copy=True)

    def settings_used(self) -> dict[str, Any]:
        props = {}
        for key in ("PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS", "INFERENCE_PRECISION_HINT",
                    "EXECUTION_DEVICES"):
            try:
                value = self.compiled.get_property(key)
                props[key] = value.to_string() if hasattr(value, "to_string") else str(value)
            except Exception:  # noqa: BLE001 - not every device reports every property
                continue
        props["precision_requested"] = str(self.options.get("precision", "default"))
        return props

    def execution_report(self) -> dict[str, Any]:
        """Per-layer runtime precision of compute layers, from the compiled model's runtime graph."""
        runtime_model = self.compiled.get_runtime_model()
        counts: Counter[str] = Counter()
        for op in runtime_model.get_ordered_ops():
            info = op.get_rt_info()
            layer = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
            if layer not in COMPUTE_LAYERS:
                continue
            prec = info["runtimePrecision"].astype(str).lower() if "runtimePrecision" in info else "unknown"
            counts[{"u8": "int8", "i8": "int8", "f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(prec, prec)] += 1
        total = sum(counts.values())
        if not total:
            return {"audit_note": "no compute layers found in the runtime model"}
        dominant, n = counts.most_common(1)[0]
        return {
            "exec_precision": dominant if n == total else "mixed",
            "int8_op_share": round(counts.get("int8", 0) / total, 4),
            "op_precisions": dict(counts),
            "audit_note": "OpenVINO runtime model, compute layers: "
                          + ", ".join(f"{k} {v}" for k, v in counts.most_common()),
        }

    def _deactivate_impl(self) -> None:
        self.request = None
        self.compiled = None
