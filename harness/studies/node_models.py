"""Per-node QDQ models built in memory, as ORT's ``quantize_static`` builds them, without its per-call costs.

A full sensitivity scan needs two models per node (only that node quantized; only that node in float).
``quantize_static`` spends most of each call on work that is the same for every node of one workdir:
loading ``pre.onnx`` and running ONNX shape inference on it (file to file), loading the saved ranges,
computing every weight's per-channel scale (a Python loop per channel: 1.2 s of a ResNet-50 call) and
quantizing every weight, then writing the model that the caller reads back to lower its IR version, to
look for a QuantizeLinear and to open a session. :class:`NodeModels` runs the same quantizer
(``QDQQuantizer`` with the arguments ``quantize_static`` derives from :func:`.static_quant_kwargs`) on a
copy of one shape-inferred model, reuses each weight's quantization parameters and quantized tensor
(the same functions of the same weight, scale and zero point, so the same values), and hands the model
over as bytes. The models are the ones ``quantize_static`` writes (tests/harness/studies compare them
node by node; :meth:`NodeModels.matches_quantize_static` checks one node in every scan, so an ORT whose
``quantize_static`` does something this module does not reproduce is caught and the scan falls back).
"""
from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from quantbench.harness.studies import node_quant as nq


class NodeModels:
    """Build per-node QDQ models of ``workdir`` (``pre.onnx`` and the calibration cache) for ``settings``."""

    def __init__(self, workdir: Path, settings: Any) -> None:
        from onnxruntime.quantization.calibrate import load_tensors_data
        from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

        self.workdir, self.settings = Path(workdir), settings
        self._base = load_model_with_shape_infer(self.workdir / nq.PRE_FILE)  # what quantize_static loads
        self._ranges = load_tensors_data(self.workdir / nq.CACHE_FILE)
        self._params: dict[tuple[Any, ...], Any] = {}  # weight -> its QuantizationParams
        self._weights: dict[tuple[Any, ...], Any] = {}  # (weight, scale, zero point, ...) -> quantized TensorProto
        self._opset_done = False

    def build(self, only: list[str] | None = None, exclude: list[str] | tuple[str, ...] = ()) -> Any:
        """The ModelProto ``quantize_static`` would write for ``only`` / ``exclude`` (see :func:`.node_quant.quantize`),
        with the lowest IR version its opsets allow (as :func:`.node_quant.quantize` leaves the file)."""
        import onnx
        from onnxruntime.quantization import QuantFormat
        from onnxruntime.quantization.quant_utils import update_opset_version
        from onnxruntime.quantization.quantize import check_static_quant_arguments
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        from quantbench.common.onnx_save import with_lowest_ir_version
        from quantbench.exporters.quantize import static_quant_kwargs

        kw = static_quant_kwargs(self.settings, self.workdir / nq.CACHE_FILE, only=only, exclude=exclude)
        if kw["quant_format"] is not QuantFormat.QDQ:
            raise ValueError("NodeModels builds QDQ models only")
        extra = kw["extra_options"] or {}
        if not self._opset_done:  # quantize_static's opset update, once: it depends on the types alone
            self._base = update_opset_version(self._base, kw["weight_type"], kw["activation_type"],
                                              tensor_quant_overrides=extra.get("TensorQuantOverrides"),
                                              block_size=extra.get("BlockSize", 0))
            self._opset_done = True
        if self._ranges.calibration_method != kw["calibrate_method"]:
            raise ValueError(f"calibration cache holds {self._ranges.calibration_method} ranges, settings ask for "
                             f"{kw['calibrate_method']}")
        check_static_quant_arguments(kw["quant_format"], kw["activation_type"], kw["weight_type"])
        op_types = kw["op_types_to_quantize"] or list(set(list(QLinearOpsRegistry) + list(QDQRegistry)))
        model = onnx.ModelProto()
        model.CopyFrom(self._base)
        quantizer = _caching_quantizer()(
            self._params, model, kw["per_channel"], kw["reduce_range"], kw["weight_type"], kw["activation_type"],
            copy.deepcopy(self._ranges), kw["nodes_to_quantize"] or [], kw["nodes_to_exclude"] or [], op_types, extra)
        with _cached_weight_quantization(self._weights):
            quantizer.quantize_model()
        # save_model_to_file without the file: sort, check initializers (as it does), then the IR version
        quantizer.model.topological_sort()
        for init in quantizer.model.model.graph.initializer:
            quantizer.model._check_init(init, "end")
        return with_lowest_ir_version(quantizer.model.model)

    def matches_quantize_static(self, only: list[str] | None = None, exclude: list[str] | tuple[str, ...] = (),
                                tmp: Path | None = None) -> bool:
        """Whether :meth:`build` gives the very model :func:`.node_quant.quantize` (``quantize_static``) writes."""
        import onnx

        tmp = tmp or self.workdir / "node-check.onnx"
        try:
            nq.quantize(self.workdir, self.settings, tmp, only=only, exclude=exclude)
            return onnx.load(str(tmp)) == self.build(only=only, exclude=exclude)
        finally:
            tmp.unlink(missing_ok=True)


def has_qdq(model: Any) -> bool:
    """Whether a ModelProto holds any QuantizeLinear node (i.e. something was quantized)."""
    return any(n.op_type == "QuantizeLinear" for n in model.graph.node)


@functools.cache
def _caching_quantizer() -> type:
    """ORT's QDQQuantizer whose initializers' quantization parameters come from a cache shared by the builds
    of one :class:`NodeModels` (its model's weights never change; the parameters are copied, as the
    quantizer adjusts weight scales for int32 biases in place). A class made on first use: ORT loads lazily."""
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    class CachingQDQQuantizer(QDQQuantizer):  # type: ignore[misc]
        def __init__(self, cache: dict[tuple[Any, ...], Any], *args: Any) -> None:
            super().__init__(*args)
            self._param_cache = cache

        def _calc_initializer_quant_params(self) -> dict[str, Any]:
            def key(name: str, info: Any) -> tuple[Any, ...]:
                return (name, info.tensor_type, info.axis, info.data_type)

            wanted = self.tensors_to_quantize
            todo = {n: i for n, i in wanted.items() if key(n, i) not in self._param_cache}
            self.tensors_to_quantize = todo
            try:
                fresh = super()._calc_initializer_quant_params()
            finally:
                self.tensors_to_quantize = wanted
            for n, params in fresh.items():
                self._param_cache[key(n, todo[n])] = params
            # the order quantize_static's own loop gives: the tensors to quantize that are initializers
            return {n: copy.deepcopy(self._param_cache[key(n, i)]) for n, i in wanted.items()
                    if key(n, i) in self._param_cache}

    return CachingQDQQuantizer


@contextlib.contextmanager
def _cached_weight_quantization(cache: dict[tuple[Any, ...], Any]) -> Iterator[None]:
    """``quantize_onnx_initializer`` as the QDQ quantizer calls it, remembered by weight name, scale and zero point."""
    import onnx
    from onnxruntime.quantization import qdq_quantizer

    original = qdq_quantizer.quantize_onnx_initializer

    def cached(weight: Any, quant_type: Any, zero_point: Any, scale: Any, axis: int | None = None,
               quant_weight_name: str | None = None, block_size: int = 0) -> Any:
        key = (weight.name, weight.data_type, tuple(weight.dims), quant_type, zero_point.dtype.str,
               zero_point.tobytes(), scale.dtype.str, scale.tobytes(), axis, quant_weight_name, block_size)
        if key not in cache:
            cache[key] = original(weight, quant_type, zero_point, scale, axis, quant_weight_name, block_size)
        out = onnx.TensorProto()
        out.CopyFrom(cache[key])
        return out

    qdq_quantizer.quantize_onnx_initializer = cached
    try:
        yield
    finally:
        qdq_quantizer.quantize_onnx_initializer = original
