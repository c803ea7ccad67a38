"""ONNX Runtime static QDQ quantization with every knob the PTQ studies need.

Calibration is driven here rather than inside ``quantize_static`` for two measured reasons:
(a) ``quantize_static`` does not forward ``num_bins`` to the Entropy calibrator, whose default
histogram (128 bins for 128 quantized bins) leaves a single candidate threshold, so "Entropy"
wrote files byte-identical to MinMax; (b) the histogram calibrators keep every batch's
activations until the end (ResNet-50, 64 images: 7.4 GiB). We feed one batch per
``collect_data`` call, so histograms are merged batch by batch and memory stays bounded, then
hand the ranges to ``quantize_static`` through its calibration cache.
"""
from __future__ import annotations

import difflib
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

METHODS = ("minmax", "entropy", "percentile", "distribution")
# Defaults that make each method do what its name says (see module docstring).
# Entropy searches (bins - 128) / 2 thresholds per tensor in pure Python: 512 bins keeps ResNet-50
# calibration to minutes (2048, TensorRT's choice, takes several times longer); set num_bins to change it.
DEFAULT_BINS = {"entropy": 512, "percentile": 2048, "distribution": 2048}
DEFAULT_PERCENTILE = 99.99


@dataclass(frozen=True)
class QuantSettings:
    """Static QDQ quantization settings (the keys of a ``[[variants]]`` table)."""

    calibration: str = "minmax"
    per_channel: bool = True
    activation_type: str = "QUInt8"  # QInt8 activations left most convs float on this CPU (slow)
    weight_type: str = "QInt8"
    symmetric_activation: bool = False
    symmetric_weight: bool = True
    reduce_range: bool = False
    op_types: tuple[str, ...] | None = None
    exclude_nodes: tuple[str, ...] = ()
    calib_samples: int = 256
    calib_seed: int = 0
    calib_classes: tuple[int, ...] | None = None
    calib_batch: int = 32
    num_bins: int | None = None
    percentile: float | None = None
    calib_memory_mb: int = 1024  # activations held per calibration step (the batch is split to fit)

    def __post_init__(self) -> None:
        if self.calibration not in METHODS:
            close = difflib.get_close_matches(self.calibration, METHODS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"unknown calibration method '{self.calibration}'{hint} (known: {', '.join(METHODS)})")
        for key in ("activation_type", "weight_type"):
            if getattr(self, key) not in ("QUInt8", "QInt8"):
                raise ValueError(f"{key} must be QUInt8 or QInt8, not '{getattr(self, key)}'")
        if self.calib_samples < 1 or self.calib_batch < 1 or self.calib_memory_mb < 1:
            raise ValueError("calib_samples, calib_batch and calib_memory_mb must be >= 1")
        if self.percentile is not None and not 50 < self.percentile <= 100:
            raise ValueError("percentile must be in (50, 100]")

    @property
    def effective_bins(self) -> int | None:
        return self.num_bins or DEFAULT_BINS.get(self.calibration)

    @property
    def effective_percentile(self) -> float | None:
        if self.calibration != "percentile":
            return None
        return self.percentile or DEFAULT_PERCENTILE

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("op_types", "exclude_nodes", "calib_classes"):
            if d[key] is not None:
                d[key] = list(d[key])
        d["num_bins"] = self.effective_bins
        d["percentile"] = self.effective_percentile
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "QuantSettings":
        d = dict(d or {})
        names = [f.name for f in fields(cls)]
        for key in d:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise ValueError(f"unknown quantization setting '{key}'{hint}")
        for key in ("op_types", "exclude_nodes", "calib_classes"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


def _calibrate(model_path: Path, settings: QuantSettings, reader: Any, tmp: Path) -> Path:
    """Collect activation ranges batch by batch and write ORT's calibration cache; returns its path."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile, "distribution": CalibrationMethod.Distribution}
    extra: dict[str, Any] = {"symmetric": settings.symmetric_activation}
    # MinMax reduces its ranges at the end of every collect_data call (we call it per batch);
    # ORT's max_intermediate_outputs option drops the data it clears, so it is not used.
    if settings.calibration != "minmax":
        extra["num_bins"] = settings.effective_bins
    if settings.calibration == "percentile":
        extra["percentile"] = settings.effective_percentile
    calibrator = create_calibrator(model_path, _calibrated_op_types(settings), augmented_model_path=str(tmp / "augmented.onnx"),
                                   calibrate_method=method[settings.calibration],
                                   providers=["CPUExecutionProvider"], extra_options=extra)
    reader.rewind()
    per_sample = activation_bytes_per_sample(model_path)
    n, micro = 0, None
    while (batch := reader.get_next()) is not None:
        if micro is None:
            micro = _micro_batch(calibrator, batch, settings.calib_memory_mb, per_sample)
        name, x = next(iter(batch.items()))
        for start in range(0, len(x), micro):
            calibrator.collect_data(_OneBatch({name: x[start:start + micro]}))
        n += 1
    if n == 0:
        raise ValueError("calibration reader produced no batches")
    ranges = calibrator.compute_data()
    cache = tmp / "calibration.json"
    save_tensors_data(ranges, cache)
    del calibrator
    return cache


def _calibrated_op_types(settings: QuantSettings) -> list[str]:
    """Only the tensors of ops that will be quantized need ranges (fewer histograms to search)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    if settings.op_types:
        return list(settings.op_types)
    return sorted(set(QDQRegistry) | set(QLinearOpsRegistry))


def activation_bytes_per_sample(model_path: Path) -> int:
    """Bytes of every intermediate tensor of one sample (from shape inference): an upper bound on
    what a calibration run keeps alive per sample."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(model_path)))
    total = 0
    for vi in list(model.graph.value_info) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if not dims:
            continue
        n = 1
        for d in dims[1:]:  # the first axis is the batch
            n *= d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
        total += n * 4
    return max(total, 1)


def _micro_batch(calibrator: Any, batch: dict, budget_mb: int, per_sample: int) -> int:
    """Samples per ``collect_data`` call so that one call's activations fit in ``budget_mb``.

    ORT materialises a whole batch's activations (and, for histogram methods, returns every
    calibrated tensor), so each batch is split into micro-batches: ResNet-50 at 224×224 needs
    about 100 MB of activations per image, MinMax on 32 images peaked at 7.7 GB otherwise.
    """
    name, x = next(iter(batch.items()))
    outputs = calibrator.infer_session.run(None, {name: x[:1]})
    per_sample = max(per_sample, sum(o.nbytes for o in outputs))
    return int(max(1, min(len(x), budget_mb * 2**20 // per_sample)))


class _OneBatch:
    """A reader that yields one batch: lets us call ``collect_data`` per batch."""

    def __init__(self, batch: dict) -> None:
        self.batch = batch

    def get_next(self):
        batch, self.batch = self.batch, None
        return batch

    def rewind(self) -> None:  # pragma: no cover - ORT does not rewind here
        pass


def quantize_qdq(fp32_path: Path, out_path: Path, settings: QuantSettings, reader: Any) -> list[str]:
    """Quantize ``fp32_path`` to a QDQ model at ``out_path``; returns notes worth recording."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="qb-quant-") as tmpdir:
        tmp = Path(tmpdir)
        pre = tmp / "pre.onnx"
        try:
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=False)
        except Exception as exc:  # noqa: BLE001 - pre-processing is an optimisation, not a requirement
            notes.append(f"quant_pre_process failed, quantizing the original graph: {str(exc).splitlines()[0]}")
            pre = Path(fp32_path)
        cache = _calibrate(pre, settings, reader, tmp)
        qtype = {"QUInt8": QuantType.QUInt8, "QInt8": QuantType.QInt8}
        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile, "distribution": CalibrationMethod.Distribution}
        quantize_static(
            str(pre), str(out_path), calibration_data_reader=None, calibration_cache_path=str(cache),
            quant_format=QuantFormat.QDQ, per_channel=settings.per_channel,
            activation_type=qtype[settings.activation_type], weight_type=qtype[settings.weight_type],
            reduce_range=settings.reduce_range, calibrate_method=method[settings.calibration],
            op_types_to_quantize=list(settings.op_types) if settings.op_types else None,
            nodes_to_exclude=list(settings.exclude_nodes),
            extra_options={"ActivationSymmetric": settings.symmetric_activation,
                           "WeightSymmetric": settings.symmetric_weight})
    if settings.exclude_nodes:
        import onnx

        names = {n.name for n in onnx.load(str(fp32_path)).graph.node}
        missing = [n for n in settings.exclude_nodes if n not in names]
        if missing:
            notes.append(f"exclude_nodes not in the graph (ignored): {', '.join(missing)}")
    return notes
