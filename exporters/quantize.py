"""ONNX Runtime static QDQ quantization with every knob the PTQ studies need.

Calibration is ours (:mod:`.calibrate`), and ORT's ``quantize_static`` gets the ranges through
its calibration cache, for measured reasons: ``quantize_static`` does not forward ``num_bins`` to
the Entropy calibrator (whose default of 128 bins for 128 quantized bins made "Entropy" files
byte-identical to MinMax); its histogram calibrators merged batches by growing the first batch's
bins, so thresholds depended on the batch size and order; and it kept every batch's activations
until the end (ResNet-50, 64 images: 7.4 GiB).
"""
from __future__ import annotations

import difflib
import math
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from quantbench.common.fields import declared_fields, lower_bound, setting
from quantbench.common.memory import release_freed_memory

# "mse": the L2 range search of PyTorch's HistogramObserver (exporters/histogram_mse.py); the others are ORT's.
METHODS = ("minmax", "entropy", "percentile", "distribution", "mse")
QTYPES = ("QUInt8", "QInt8")
# Defaults that make each method do what its name says (see module docstring).
# Entropy searches (bins - 128) / 2 thresholds per tensor in pure Python: 512 bins keeps ResNet-50
# calibration to minutes (2048, TensorRT's choice, takes several times longer); set num_bins to change it.
DEFAULT_BINS = {"entropy": 512, "percentile": 2048, "distribution": 2048, "mse": 2048}  # mse: torch's default
MIN_BINS = {"entropy": 128, "percentile": 2, "distribution": 512}  # ORT's algorithms need at least these
MAX_BINS = 65535  # bin indices (0..num_bins) travel as uint16
DEFAULT_PERCENTILE = 99.99
PERCENTILE_RANGE = "(50, 100]"  # checked as 50 < percentile <= 100
QAT_LR_RANGE = "(0, 1)"  # checked as 0 < qat_lr < 1
# ORT's calibration-range symmetry when quantize_static is not told (create_calibrator's defaults).
ORT_DEFAULT_RANGE_SYMMETRIC = {"minmax": False, "entropy": False, "percentile": True, "distribution": False,
                               "mse": False}  # mse: torch's default per_tensor_affine

_BOOLS = ("per_channel", "symmetric_weight", "reduce_range")
_INTS = ("calib_samples", "calib_batch", "calib_memory_mb", "calib_seed")  # bounds: their declarations (key(ge=…))
_NAME_LISTS = ("op_types", "exclude_nodes")
MODES = ("static", "dynamic", "qat")
# mode = "qat" (exporters/qat_model.py): length (steps, or epochs over the training split; one epoch when
# neither is given), Adam learning rate, batch and seed of the fine-tuning. Left out of the settings (and so
# of cache keys and rows) of the other modes.
QAT_ONLY = ("qat_steps", "qat_epochs", "qat_lr", "qat_batch", "qat_seed")
# What mode = "qat" fake-quantizes as it is (exporters/qat.py's fake quantizers); other values are refused.
QAT_FIXED = ("calibration", "activation_type", "weight_type", "symmetric_activation", "symmetric_weight",
             "reduce_range", "exclude_nodes", "calib_samples", "calib_seed", "calib_classes", "calib_batch", "num_bins",
             "percentile", "weight_bits", "weight_rounding", "weight_storage", "calib_graph")
WEIGHT_BITS = (8, 4, 3)
# "int8": ORT's own 8-bit weights; "int4": ORT's INT4 QDQ weights (opset 21) where it covers the op;
# "simulated": weights rounded to the lower-bit grid but stored as INT8 (accuracy-only study).
WEIGHT_STORAGES = ("int8", "int4", "simulated")
# Keys that only mean something when calibrating (mode = "static"); recorded as None for dynamic.
STATIC_ONLY = ("calibration", "activation_type", "symmetric_activation", "calib_samples", "calib_seed",
               "calib_classes", "calib_batch", "num_bins", "percentile", "calib_memory_mb", "calib_graph")


def known_roundings() -> tuple[str, ...]:
    """Weight-rounding methods: the registry of :mod:`.weight_rounding` when present, else round-to-nearest."""
    try:
        from . import weight_rounding
    except ImportError:
        return ("nearest",)
    names = getattr(weight_rounding, "ROUNDINGS", None) or ("nearest",)
    return tuple(names)


def _one_of(values: tuple[Any, ...]) -> str:
    """``(8, 4, 3)`` -> "8, 4 or 3"."""
    return f"{', '.join(map(str, values[:-1]))} or {values[-1]}"


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


@dataclass(frozen=True)
class QuantSettings:
    """Static QDQ quantization settings (the keys of a ``[[variants]]`` table).

    ``symmetric_activation`` left unset follows ORT's defaults: Percentile calibrates a symmetric
    range (|x| histogram), the other methods an asymmetric one, and activations are quantized
    asymmetrically; set to true or false it forces both.
    """

    calibration: str = setting("minmax", help="activation range method: minmax, entropy, percentile, "
                               "distribution or mse")
    per_channel: bool = setting(True, help="one weight scale per output channel (false: per tensor)")
    # QInt8 activations left most convs float on this CPU (slow)
    activation_type: str = setting("QUInt8", help="QUInt8 or QInt8 activations")
    weight_type: str = setting("QInt8", help="QInt8 or QUInt8 weights")
    symmetric_activation: bool | None = setting(None, help="force a symmetric (true) or asymmetric (false) "
                                                "activation range", default_text="unset: ORT's default per method")
    symmetric_weight: bool = setting(True, help="symmetric weight quantization")
    reduce_range: bool = setting(False, help="7-bit weights (for CPUs without VNNI)")
    op_types: tuple[str, ...] | None = setting(None, help='op types to quantize, e.g. ["Conv"]',
                                               default_text="unset: every supported op")
    exclude_nodes: tuple[str, ...] = setting((), help="nodes kept in float (mixed precision)")
    calib_samples: int = setting(256, ge=1, help="calibration images (a default larger than the data uses all of it)")
    calib_seed: int = setting(0, help="seed of the calibration images' selection")
    calib_classes: tuple[int, ...] | None = setting(None, help="calibrate on images of these class indices only",
                                                    default_text="unset: every class")
    calib_batch: int = setting(32, ge=1, help="images per calibration batch")
    num_bins: int | None = setting(None, ge=1, help="histogram bins (entropy, percentile, distribution, mse)",
                                   default_text="unset: 512 entropy, 2048 others",
                                   range_text=f"{min(MIN_BINS.values())} to {MAX_BINS} (entropy >= "
                                              f"{MIN_BINS['entropy']}, distribution >= {MIN_BINS['distribution']})")
    percentile: float | None = setting(None, help="percentile method's cut-off", range_text=PERCENTILE_RANGE,
                                       default_text=f"unset: {DEFAULT_PERCENTILE}")
    calib_memory_mb: int = setting(1024, ge=1, help="warn when one calibration sample's activations may exceed this")
    calib_graph: str | None = setting(None, help="graph calibration runs: optimised (ORT's CPU kernels as the model "
                                      "runs, the ranges ORT's quantizer uses) or unoptimised (ORT's "
                                      "calibrators' graph: their ranges and thresholds bit for bit)",
                                      default_text="unset: optimised")
    mode: str = setting("static", help="static (calibrated QDQ), dynamic (ORT quantize_dynamic, no calibration) "
                        "or qat (fine-tuned with fake quantization)")
    weight_bits: int = setting(8, help="Conv/Gemm/MatMul weight bits (activations stay 8-bit)",
                               range_text=_one_of(WEIGHT_BITS))
    weight_rounding: str = setting("nearest", help="how weights land on the grid: nearest, gptq, gpfq "
                                   "(exporters/weight_rounding.py)")
    weight_storage: str | None = setting(None, help="int8, int4 or simulated (rounded to the lower-bit grid, "
                                         "stored as INT8)",
                                         default_text="unset: int8 at 8 bits, int4 at 4, simulated at 3")
    # Set, `quantbench sensitivity` searches nodes to keep in float (harness/studies/mixed_precision.py).
    accuracy_budget: float | None = setting(None, help="top-1 points the INT8 model may lose (searched by "
                                            "`quantbench sensitivity`)", default_text="unset")
    qat_steps: int | None = setting(None, help="mode = qat: fine-tuning steps", default_text="unset: one epoch",
                                    range_text=">= 1")
    qat_epochs: int | None = setting(None, help="mode = qat: epochs over the training split", default_text="unset",
                                     range_text=">= 1")
    qat_lr: float = setting(1e-4, help="mode = qat: Adam learning rate", range_text=QAT_LR_RANGE)
    qat_batch: int = setting(64, help="mode = qat: batch size", range_text=">= 1")
    qat_seed: int = setting(0, help="mode = qat: seed")

    def __post_init__(self) -> None:
        for key in ("op_types", "exclude_nodes", "calib_classes"):  # the Python API's lists, stored as tuples
            if isinstance(getattr(self, key), list):
                object.__setattr__(self, key, tuple(getattr(self, key)))
        self._check_bits()
        self._check_qat()
        if not isinstance(self.calibration, str) or self.calibration not in METHODS:
            close = difflib.get_close_matches(str(self.calibration), METHODS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"unknown calibration method '{self.calibration}'{hint} (known: {', '.join(METHODS)})")
        for key in ("activation_type", "weight_type"):
            value = getattr(self, key)
            if value not in QTYPES:
                close = difflib.get_close_matches(str(value), QTYPES, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise ValueError(f"{key} must be QUInt8 or QInt8, not '{value}'{hint}")
        for key in _BOOLS:
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"{key} must be true or false, not {_kind(getattr(self, key))}")
        if self.symmetric_activation is not None and not isinstance(self.symmetric_activation, bool):
            raise ValueError(f"symmetric_activation must be true or false, not {_kind(self.symmetric_activation)}")
        declared = declared_fields(type(self))
        for name in _INTS:
            value, low = getattr(self, name), lower_bound(declared[name])[0]
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, not {_kind(value)}")
            if value < low:
                raise ValueError(f"{name} must be >= {low}, not {value}")
        for key in _NAME_LISTS:
            value = getattr(self, key)
            if value is None and key == "op_types":
                continue
            if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
                raise ValueError(f"{key} must be a list of names, e.g. ['Conv'], not {_kind(value)}")
        if self.op_types is not None and not self.op_types:
            raise ValueError("op_types must name at least one op type (leave it out to quantize every supported op)")
        if self.calib_classes is not None and (
                not isinstance(self.calib_classes, tuple)
                or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in self.calib_classes)):
            raise ValueError(f"calib_classes must be a list of class indices >= 0, not {_kind(self.calib_classes)}")
        if self.num_bins is not None:
            if isinstance(self.num_bins, bool) or not isinstance(self.num_bins, int):
                raise ValueError(f"num_bins must be an integer, not {_kind(self.num_bins)}")
            low = MIN_BINS.get(self.calibration, 2)
            if not low <= self.num_bins <= MAX_BINS:
                raise ValueError(f"num_bins must be in [{low}, {MAX_BINS}] for {self.calibration}, not {self.num_bins}")
        if self.percentile is not None:
            if isinstance(self.percentile, bool) or not isinstance(self.percentile, (int, float)):
                raise ValueError(f"percentile must be a number, not {_kind(self.percentile)}")
            if not (math.isfinite(self.percentile) and 50 < self.percentile <= 100):
                raise ValueError(f"percentile must be in {PERCENTILE_RANGE}, not {self.percentile}")
        if self.calib_graph is not None:
            from .calibrate import GRAPHS

            if self.calib_graph not in GRAPHS:
                raise ValueError(f"calib_graph must be one of {', '.join(GRAPHS)}, not {_kind(self.calib_graph)}")
        if self.accuracy_budget is not None and (
                isinstance(self.accuracy_budget, bool) or not isinstance(self.accuracy_budget, (int, float))
                or not math.isfinite(self.accuracy_budget) or self.accuracy_budget < 0):
            raise ValueError("accuracy_budget must be a number of top-1 points >= 0, "
                             f"not {_kind(self.accuracy_budget)}")

    def _check_qat(self) -> None:
        defaults = {f.name: f.default for f in fields(self)}
        if self.mode != "qat":
            for key in QAT_ONLY:
                if getattr(self, key) != defaults[key]:
                    raise ValueError(f"{key} applies to mode = 'qat' only")
            return
        for key in QAT_FIXED:
            if getattr(self, key) != defaults[key]:
                raise ValueError(f"{key} does not apply to mode = 'qat' (fake quantization trains QUInt8 "
                                 "asymmetric activations and 8-bit QInt8 symmetric weights; per_channel, op_types "
                                 "and the qat_* keys choose the rest)")
        for key in ("qat_steps", "qat_epochs", "qat_batch"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{key} must be an integer >= 1, not {_kind(value)}")
        if isinstance(self.qat_seed, bool) or not isinstance(self.qat_seed, int) or self.qat_seed < 0:
            raise ValueError(f"qat_seed must be an integer >= 0, not {_kind(self.qat_seed)}")
        if (isinstance(self.qat_lr, bool) or not isinstance(self.qat_lr, (int, float))
                or not (math.isfinite(self.qat_lr) and 0 < self.qat_lr < 1)):
            raise ValueError(f"qat_lr must be a number in {QAT_LR_RANGE}, not {_kind(self.qat_lr)}")

    def _check_bits(self) -> None:
        if not isinstance(self.mode, str) or self.mode not in MODES:
            raise ValueError(f"mode must be 'static', 'dynamic' or 'qat', not {_kind(self.mode)}")
        if isinstance(self.weight_bits, bool) or self.weight_bits not in WEIGHT_BITS:
            raise ValueError(f"weight_bits must be {_one_of(WEIGHT_BITS)}, not {_kind(self.weight_bits)}")
        known = known_roundings()
        if not isinstance(self.weight_rounding, str) or self.weight_rounding not in known:
            raise ValueError(f"unknown weight_rounding {_kind(self.weight_rounding)} (known: {', '.join(known)})")
        if self.weight_storage is not None:
            if self.weight_storage not in WEIGHT_STORAGES:
                raise ValueError(f"weight_storage must be one of {', '.join(WEIGHT_STORAGES)}, "
                                 f"not {_kind(self.weight_storage)}")
            allowed = {8: ("int8",), 4: ("int4", "simulated"), 3: ("simulated",)}[self.weight_bits]
            if self.weight_storage not in allowed:
                raise ValueError(f"weight_storage '{self.weight_storage}' does not fit weight_bits = "
                                 f"{self.weight_bits} (use {' or '.join(allowed)})")
        if self.weight_bits < 8 and (self.weight_type != "QInt8" or not self.symmetric_weight):
            raise ValueError(f"weight_bits = {self.weight_bits} uses a symmetric signed grid: "
                             "needs weight_type = 'QInt8' and symmetric_weight = true")
        if self.weight_bits < 8 and self.reduce_range:
            raise ValueError(f"reduce_range (7-bit weights) does not combine with weight_bits = {self.weight_bits}")
        if self.mode == "dynamic":
            defaults = {f.name: f.default for f in fields(self)}
            for key in STATIC_ONLY:
                if getattr(self, key) != defaults[key]:
                    raise ValueError(f"{key} does not apply to mode = 'dynamic' (no calibration; activations are "
                                     "quantized at run time)")
            if self.weight_bits != 8 or self.weight_rounding != "nearest":
                raise ValueError("mode = 'dynamic' quantizes weights to 8 bits by rounding to nearest "
                                 "(weight_bits and weight_rounding apply to mode = 'static')")

    @property
    def resolved_weight_storage(self) -> str:
        """How the weights are stored (as run): ``int8``, ``int4`` or ``simulated``."""
        if self.weight_storage is not None:
            return self.weight_storage
        return {8: "int8", 4: "int4", 3: "simulated"}[self.weight_bits]

    @property
    def effective_bins(self) -> int | None:
        """Histogram bins actually used (None for MinMax and dynamic quantization)."""
        if self.calibration == "minmax" or self.mode in ("dynamic", "qat"):
            return None
        return self.num_bins or DEFAULT_BINS[self.calibration]

    @property
    def effective_percentile(self) -> float | None:
        if self.calibration != "percentile":
            return None
        return float(self.percentile) if self.percentile is not None else DEFAULT_PERCENTILE

    @property
    def effective_calib_graph(self) -> str | None:
        """The graph calibration runs (None for dynamic and QAT, which calibrate nothing)."""
        if self.mode in ("dynamic", "qat"):
            return None
        if self.calib_graph is not None:
            return self.calib_graph
        return "optimised"

    @property
    def calib_symmetric(self) -> bool:
        """Whether the calibrated range is symmetric around 0 (as run)."""
        if self.symmetric_activation is not None:
            return self.symmetric_activation
        return ORT_DEFAULT_RANGE_SYMMETRIC[self.calibration]

    @property
    def activation_symmetric(self) -> bool:
        """Whether activations are quantized with a symmetric scale (ORT's ActivationSymmetric, as run)."""
        return bool(self.symmetric_activation)

    def to_config(self) -> dict[str, Any]:
        """The settings as given (JSON-able); ``from_dict(s.to_config()) == s``. Dynamic settings leave
        out the calibration keys (they do not apply)."""
        d: dict[str, Any] = {}
        for f in fields(self):
            if self.mode in ("dynamic", "qat") and f.name in STATIC_ONLY:
                continue
            if self.mode != "qat" and f.name in QAT_ONLY:
                continue
            value = getattr(self, f.name)
            d[f.name] = list(value) if isinstance(value, tuple) else value
        return d

    def to_dict(self) -> dict[str, Any]:
        """What was run, for result rows and cache keys: defaults resolved (``num_bins``,
        ``percentile``, ``symmetric_activation``) plus ``calib_symmetric`` (the range symmetry). ``calib_graph``
        appears when it is "optimised" only: rows from before the key calibrated the unoptimised graph, so their
        cache keys and fingerprints stay valid where nothing changed."""
        d = self.to_config()
        d["weight_storage"] = self.resolved_weight_storage
        if self.mode in ("dynamic", "qat"):  # nothing was calibrated: the calibration keys are null, not defaults
            d.update({key: None for key in STATIC_ONLY if key != "calib_graph"})  # absent, as before the key
            d["calib_symmetric"] = None
            if self.mode == "qat":  # the fake quantizers' types (ranges learned in training)
                d.update({"activation_type": "QUInt8", "symmetric_activation": False})
            return d
        d["num_bins"] = self.effective_bins
        d["percentile"] = self.effective_percentile
        if self.effective_calib_graph == "optimised":  # absent: the unoptimised graph, as every row before the key
            d["calib_graph"] = "optimised"
        else:
            d.pop("calib_graph", None)
        d["symmetric_activation"] = self.activation_symmetric
        d["calib_symmetric"] = self.calib_symmetric
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> QuantSettings:
        """Build from a ``[[variants]]`` table; unknown keys and wrong types raise one-line ValueErrors."""
        if d is not None and not isinstance(d, dict):
            raise ValueError(f"quantization settings must be a table, not {_kind(d)}")
        d = dict(d or {})
        names = [f.name for f in fields(cls)]
        for key in d:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise ValueError(f"unknown quantization setting '{key}'{hint}")
        if d.get("mode") == "dynamic":
            for key in STATIC_ONLY:
                if key in d:
                    raise ValueError(f"{key} does not apply to mode = 'dynamic' (no calibration; activations are "
                                     "quantized at run time)")
        for key in ("op_types", "exclude_nodes", "calib_classes"):
            if isinstance(d.get(key), list):
                d[key] = tuple(d[key])
        return cls(**d)


def _calibrated_op_types(settings: QuantSettings) -> list[str]:
    """Only the tensors of ops that will be quantized need ranges (fewer histograms to search)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    if settings.op_types:
        return list(settings.op_types)
    return sorted(set(QDQRegistry) | set(QLinearOpsRegistry))


def calibration_config(settings: QuantSettings) -> Any:
    """The :class:`.calibrate.CalibrationConfig` that computes ``settings``' activation ranges."""
    from .calibrate import CalibrationConfig

    return CalibrationConfig(method=settings.calibration, symmetric=settings.calib_symmetric,
                             num_bins=settings.effective_bins, percentile=settings.effective_percentile,
                             op_types=tuple(_calibrated_op_types(settings)), graph=settings.effective_calib_graph,
                             exclude_nodes=tuple(settings.exclude_nodes),
                             activation_symmetric=settings.activation_symmetric)


def check_exclude_nodes(model_path: Path, exclude: tuple[str, ...] | list[str]) -> None:
    """Every name in ``exclude`` must be a node of the graph that is quantized; else one line naming close matches."""
    import onnx

    if not exclude:
        return
    names = [n.name for n in onnx.load(str(model_path), load_external_data=False).graph.node]
    known = set(names)
    for name in exclude:
        if name not in known:
            close = difflib.get_close_matches(name, names, n=3)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise ValueError(f"exclude_nodes: '{name}' is not a node of the graph being quantized "
                             f"(after quant_pre_process){hint}")


def pre_processed(fp32_path: Path, tmp: Path, notes: list[str]) -> Path:
    """ORT's quant_pre_process of ``fp32_path`` into ``tmp`` (the graph that is quantized), or the
    original file with a note when pre-processing fails (it is an optimisation, not a requirement)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = tmp / "pre.onnx"
    try:
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=False)
    except Exception as exc:  # noqa: BLE001 - any failure: quantize the original graph, with a note
        from quantbench.common.worker_protocol import one_line

        # one_line: an exception without a message (ORT's shape inference asserts bare) crashed here
        notes.append(f"quant_pre_process failed, quantizing the original graph: {one_line(exc)}")
        return Path(fp32_path)
    return pre


def static_quant_kwargs(settings: QuantSettings, cache: Path, only: list[str] | None = None,
                        exclude: list[str] | tuple[str, ...] = (),
                        extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``quantize_static``'s keyword arguments (all but the two paths) for ``settings``, with the ranges
    from the calibration cache ``cache``. ``only``: quantize just these nodes; ``exclude``: keep these in
    float too (added to ``settings.exclude_nodes``); ``extra``: more ``extra_options``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    qtype = {"QUInt8": QuantType.QUInt8, "QInt8": QuantType.QInt8}
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile, "distribution": CalibrationMethod.Distribution,
              "mse": CalibrationMethod.MinMax}  # mse ranges reach ORT as plain ranges (calibrate.py)
    return {"calibration_data_reader": None, "calibration_cache_path": str(cache), "quant_format": QuantFormat.QDQ,
            "per_channel": settings.per_channel, "activation_type": qtype[settings.activation_type],
            "weight_type": qtype[settings.weight_type], "reduce_range": settings.reduce_range,
            "calibrate_method": method[settings.calibration],
            "op_types_to_quantize": list(settings.op_types) if settings.op_types else None,
            "nodes_to_quantize": list(only) if only else None,
            "nodes_to_exclude": list(settings.exclude_nodes) + [n for n in exclude if n not in settings.exclude_nodes],
            "extra_options": {"ActivationSymmetric": settings.activation_symmetric,
                              "WeightSymmetric": settings.symmetric_weight, **(extra or {})}}


def calibration_cost(result: Any) -> dict[str, Any]:
    """``time_s`` (calibration alone), ``floor_s`` (FP32 forward time of its passes), ``time_ratio`` with its
    ``time_ratio_ci95`` and ``floor_probes`` of a :class:`.calibrate.CalibrationResult`, rounded for rows."""
    def sig(x: float | None) -> float | None:  # 5 significant digits: a small model's floor is milliseconds
        return float(f"{x:.5g}") if x is not None else None

    ci = getattr(result, "time_ratio_ci95", None)
    return {"time_s": sig(result.time_s), "floor_s": sig(result.floor_s), "time_ratio": sig(result.time_ratio),
            "time_ratio_ci95": [sig(ci[0]), sig(ci[1])] if ci else None,
            "floor_probes": result.floor_probes, "count_s": sig(getattr(result, "count_s", None))}


def quantize_qdq(fp32_path: Path, out_path: Path, settings: QuantSettings, reader: Any,
                 stats: dict[str, Any] | None = None, progress: Any = None) -> list[str]:
    """Quantize ``fp32_path`` to a QDQ model at ``out_path``; returns notes worth recording.

    ``stats`` (optional) receives what calibration cost: tensors, samples, MB per sample, pass seconds,
    and its time, floor and their ratio (``time_s``, ``floor_s``, ``time_ratio``; :mod:`.calibrate`).
    ``progress``: :data:`.calibrate.ProgressFn`, called as calibration reads samples.
    """
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    from quantbench.common.onnx_save import lower_ir_version

    from .bitwidth import needs_opset21, plan_grids, tensor_overrides, upgrade_opset
    from .calibrate import calibrate

    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="qb-quant-") as tmpdir:
        tmp = Path(tmpdir)
        pre = pre_processed(Path(fp32_path), tmp, notes)
        check_exclude_nodes(pre, settings.exclude_nodes)
        grids = plan_grids(pre, settings)
        # A weight_rounding other than "nearest" rewrites the integers ORT stores (after quantize_static), on
        # these grids below 8 bits and on ORT's own 8-bit grid (weight_type, reduce_range) at 8.
        if needs_opset21(grids):
            upgraded = tmp / "pre21.onnx"
            upgrade_opset(pre, upgraded)
            pre = upgraded
        if stats is not None and grids:
            stats["weight_grids"] = {g.storage: sum(1 for h in grids if h.storage == g.storage) for g in grids}
        result = calibrate(pre, calibration_config(settings), reader, tmp, progress=progress)
        notes.extend(result.notes)
        sample_mb = result.bytes_per_sample / 2**20
        if sample_mb > settings.calib_memory_mb:
            notes.append(f"calibration runs one sample at a time, whose activations may take {sample_mb:.0f} MB "
                         f"(above calib_memory_mb = {settings.calib_memory_mb})")
        if stats is not None:
            stats.update({"tensors": result.tensors, "samples": result.samples,
                          "activation_mb_per_sample": round(sample_mb, 1),
                          "pass_s": [round(p, 3) for p in result.pass_s], **calibration_cost(result)})
        cache = tmp / "calibration.json"
        save_tensors_data(result.ranges, cache)
        del result
        release_freed_memory()  # calibration's sessions and buffers, before quantize_static loads the model
        # The grids' scales are the weights' scales; ORT must not widen them for tiny biases.
        extra = ({"TensorQuantOverrides": tensor_overrides(grids), "QDQDisableWeightAdjustForInt32Bias": True}
                 if grids else None)
        quantize_static(str(pre), str(out_path), **static_quant_kwargs(settings, cache, extra=extra))
        if settings.weight_rounding != "nearest":  # same grid and graph, other integers (weight_rounding.py)
            from .weight_rounding import round_qdq_weights

            notes += round_qdq_weights(pre, out_path, reader, settings, tmp, stats)
    lower_ir_version(out_path)  # ORT stamps onnx's newest IR, which older runtimes refuse
    return notes
