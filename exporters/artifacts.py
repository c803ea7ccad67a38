"""Content-addressed artifact cache: fp32 export, fp16 and int8 QDQ variants.

An artifact's directory name is a hash of everything that determines its bytes (source model,
weights, settings, calibration data, tool versions), so a rerun reuses it and a change rebuilds it.
Quantization runs in a contained worker (:mod:`quantbench.common.worker_protocol`: own process group,
killed on timeout) so its wall time and peak memory are measured cleanly and a hang cannot stall the
sweep. An ONNX artifact's size and hash cover its external-data files too.
"""
from __future__ import annotations

import hashlib
import importlib.metadata as md
import importlib.util
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantbench.common.files import sha256_file  # re-exported: the store and its callers hash files with it

from .onnx_info import (
    count_params,
    load_checked,
    onnx_files,
    onnx_input_info,
    onnx_output_info,
)
from .quantize import QuantSettings
from .registry import ASSETS, SHIPPED, ModelSource, resolve_model

__all__ = ["ArtifactStore", "BuiltArtifact", "VariantSpec", "artifact_sha256", "artifact_size", "identical_groups",
           "onnx_input_info", "run_quantize_worker", "sha256_file"]


@dataclass(frozen=True)
class VariantSpec:
    """What to make from the fp32 model."""

    name: str
    precision: str  # fp32 | fp16 | int8
    quant: QuantSettings | None = None
    builder: str = "onnx"  # onnx | trt-calibrate (TensorRT 10 calibrates the fp32 ONNX itself)
    calibrator: str | None = None


@dataclass
class BuiltArtifact:
    """A built (or cached) artifact and what it cost to make."""

    variant: str
    precision: str
    path: Path
    sha256: str
    size_bytes: int
    param_count: int
    quant_time_s: float | None
    quant_peak_mem_mb: float | None
    notes: list[str] = field(default_factory=list)
    weights: str = ""
    reference_path: Path | None = None
    quant_mem_delta_mb: float | None = None
    # int8 artifacts: the file's size with the Conv/Gemm/MatMul weights packed at weight_bits bits
    # (equals size_bytes for 8-bit and real INT4 weights; smaller for simulated ones). None otherwise.
    packed_size_bytes: int | None = None
    # What calibration cost (exporters/quantize.py's stats: time_s, floor_s, time_ratio, pass_s, ...); None otherwise.
    calibration: dict[str, Any] | None = None
    # The model's parameter table (exporters/param_counts.py), set on FP32 artifacts by with_param_counts.
    trainable_params: int | None = None
    non_trainable_params: int | None = None
    params_from: str | None = None  # "torch" | "onnx-initializers"


def artifact_sha256(path: Path) -> str:
    """sha256 of an ONNX model: of the file alone when it has no external data (so it equals
    :func:`sha256_file`), else of the file and each external-data file with its name."""
    files = onnx_files(path)
    if len(files) == 1:
        return sha256_file(path)
    h = hashlib.sha256()
    for f in files:
        if not f.is_file():
            raise ValueError(f"{path}: external-data file {f.name} is missing")
        h.update(f"{f.relative_to(files[0].parent)}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def artifact_size(path: Path) -> int:
    """Bytes of an ONNX model including its external-data files."""
    return sum(f.stat().st_size for f in onnx_files(path) if f.is_file())


def _version(pkg: str) -> str:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return "-"


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


class ArtifactStore:
    """Builds artifacts into ``cache_dir/<hash>/`` and returns them from there when present."""

    def __init__(self, cache_dir: Path) -> None:
        self.root = Path(cache_dir)
        self.root.mkdir(parents=True, exist_ok=True)

    def _describe(self, path: Path, variant: str, precision: str, weights: str, reference: Path | None,
                  meta: dict[str, Any] | None = None) -> BuiltArtifact:
        meta = meta or {}
        return BuiltArtifact(variant=variant, precision=precision, path=path, sha256=artifact_sha256(path),
                             size_bytes=artifact_size(path), param_count=count_params(path),
                             quant_time_s=meta.get("time_s"), quant_peak_mem_mb=meta.get("peak_rss_mb"),
                             quant_mem_delta_mb=meta.get("delta_rss_mb"), notes=list(meta.get("notes", [])),
                             weights=weights, reference_path=reference or path,
                             packed_size_bytes=(meta.get("weights") or {}).get("packed_size_bytes"),
                             calibration=meta.get("calibration") or None)

    def fp32(self, source: ModelSource) -> BuiltArtifact:
        """The fp32 ONNX of ``source``: the user's file, the shipped default, or a fresh export."""
        if source.kind == "onnx":
            path = Path(source.target)
            load_checked(path)
            return self._describe(path, "fp32", "fp32", source.weights_label(), None)
        wf = source.weights_file()
        weights_hash = sha256_file(wf) if wf else "random"
        shipped = ASSETS / f"{source.target}.onnx"
        if (source.kind == "builtin" and source.target in SHIPPED and source.weights in (None, "builtin")
                and shipped.exists()
                and _shape_of(source) == _shape_of(resolve_model(source.target))):
            # The trained builtins ship their ONNX, so benchmark environments need no torch.
            return self._describe(shipped, "fp32", "fp32", source.weights_label(), None)
        if importlib.util.find_spec("torch") is None:
            raise ValueError(f"exporting {source.name} to ONNX needs torch: pip install .[torch] "
                             "(or pass a .onnx file)")
        key = _key("fp32", source.kind, source.target, list(source.input_shape), source.num_classes, weights_hash,
                   _version("torch"), _version("torchvision"), 17)
        out = self.root / key / "model.onnx"
        if not out.exists():
            from .torch_export import export_onnx

            export_onnx(source, out)
        return self._describe(out, "fp32", "fp32", source.weights_label(), None)

    def with_param_counts(self, built: BuiltArtifact, source: ModelSource,
                          counts: dict[str, Any] | None = None) -> BuiltArtifact:
        """``built`` (an FP32 artifact of ``source``) with the model's trainable / non-trainable parameter counts,
        from the torch model when there is one (cached beside the artifacts: building it once is enough);
        ``counts``: already counted (before an export that empties its module)."""
        import dataclasses

        from .param_counts import model_param_counts

        # params-2: a cached module: function's counts taken after its export read 0 (stores holding them skip them)
        key = _key("params-2", built.sha256, source.kind, source.target, list(source.input_shape), source.num_classes,
                   source.weights_label())
        path = self.root / "params" / f"{key}.json"
        if path.is_file():
            counts = json.loads(path.read_text())
        else:
            counts = counts or model_param_counts(source, built.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(counts))
        return dataclasses.replace(built, **counts)

    def prebuilt(self, path: str | Path, variant: str, precision: str, fp32: BuiltArtifact) -> BuiltArtifact:
        """A user's ready-made artifact of the model behind ``fp32`` (a QAT export, say), used as it is.

        Raises a one-line ValueError when it is not a valid ONNX file or its input/outputs differ from
        the FP32 model's (shapes without the batch axis, element types; symbolic dims match anything).
        """
        p = Path(os.path.expandvars(str(path))).expanduser()
        load_checked(p)
        mine = [onnx_input_info(p)[1:], *[o[1:] for o in onnx_output_info(p)]]
        theirs = [onnx_input_info(fp32.path)[1:], *[o[1:] for o in onnx_output_info(fp32.path)]]
        if len(mine) != len(theirs) or any(not _same_io(a, b) for a, b in zip(mine, theirs, strict=True)):
            raise ValueError(f"{path}: input/outputs {_io_text(mine)} differ from the model's {_io_text(theirs)}")
        size = artifact_size(p)
        meta = {"notes": [f"prebuilt artifact: {path}"],
                "weights": {"packed_size_bytes": size if precision == "int8" else None}}
        return self._describe(p, variant, precision, fp32.weights, fp32.path, meta)

    def build(self, source: ModelSource, variant: VariantSpec, data_spec: str | dict[str, Any],
              preprocess: dict[str, Any], fp32: BuiltArtifact | None = None,
              timeout_s: float | None = None) -> BuiltArtifact:
        """Make (or reuse) ``variant`` of ``source``; quantization is killed after ``timeout_s`` (None: no limit).

        ``data_spec`` is a data source spec string or dict, passed through to ``open_source`` as is.
        """
        fp32 = fp32 or self.fp32(source)
        if variant.precision == "fp32" or variant.builder == "trt-calibrate":
            return fp32
        if variant.precision == "fp16":
            key = _key("fp16", fp32.sha256, _version("onnxconverter-common"), _version("onnx"))
            out = self.root / key / "model.onnx"
            if not out.exists():
                from .fp16 import convert_fp16

                out.parent.mkdir(parents=True, exist_ok=True)
                tmp = out.with_suffix(".tmp.onnx")
                convert_fp16(fp32.path, tmp)
                tmp.replace(out)
            return self._describe(out, variant.name, "fp16", fp32.weights, fp32.path)
        if variant.precision != "int8" or variant.quant is None:
            raise ValueError(f"variant '{variant.name}': cannot build precision {variant.precision}")
        if variant.quant.mode == "qat":
            return self._build_qat(source, variant, data_spec, preprocess, fp32, timeout_s)
        if variant.quant.mode == "dynamic":  # no calibration: the data cannot change the file
            key = _key("int8-dynamic", fp32.sha256, variant.quant.to_dict(), _version("onnxruntime"))
        else:
            from quantbench.calibration_data import open_source

            data = open_source(data_spec).describe()
            # "calib-3": two-pass fixed-range calibration (exporters/calibrate.py) with numpy's exact bin counts
            # and ORT's |x| range for symmetric Percentile; older caches used ORT's calibrators or other bins.
            # "grid-1": weight_bits grids as explicit scales (exporters/bitwidth.py). "round-2": GPTQ/GPFQ weight
            # rounding (exporters/weight_rounding.py; 8 bits on ORT's own grid, held-out error note); bump when it
            # changes.
            key = _key("int8", "calib-3", "grid-1", "round-2", fp32.sha256, variant.quant.to_dict(), data, preprocess,
                       _version("onnxruntime"))
        out = self.root / key / "model.onnx"
        meta_path = out.with_name("build.json")
        if not (out.exists() and meta_path.exists()):
            from .bitwidth import weight_summary

            out.parent.mkdir(parents=True, exist_ok=True)
            meta = run_quantize_worker(fp32.path, out, variant.quant, data_spec, preprocess, timeout_s=timeout_s)
            meta["weights"] = weight_summary(out, variant.quant, artifact_size(out))
            meta_path.write_text(json.dumps(meta))
        meta = json.loads(meta_path.read_text())
        return self._describe(out, variant.name, "int8", fp32.weights, fp32.path, meta)

    def _build_qat(self, source: ModelSource, variant: VariantSpec, data_spec: str | dict[str, Any],
                   preprocess: dict[str, Any], fp32: BuiltArtifact, timeout_s: float | None) -> BuiltArtifact:
        """``mode = "qat"``: fine-tune the torch model with fake quantization on the data's training split
        (exporters/qat_model.py) and export plain QDQ ONNX, cached by everything that changes the file ("qat-3":
        outputs fake-quantized, redundant ReLU6 Clips dropped; bump it when the QAT or its export changes)."""
        from quantbench.calibration_data import open_source

        from .qat_worker import run_qat_worker

        if source.kind == "onnx":
            raise ValueError(f"variant '{variant.name}': mode = 'qat' trains the PyTorch model; {source.name} is an "
                             "ONNX file (use a registry name, torchvision:NAME or module:pkg.mod:fn)")
        if importlib.util.find_spec("torch") is None:
            raise ValueError(f"variant '{variant.name}': mode = 'qat' needs torch: pip install .[torch]")
        data = open_source(data_spec).describe()
        key = _key("int8-qat", "qat-3", fp32.sha256, source.kind, source.target, list(source.input_shape),
                   variant.quant.to_dict(), data, preprocess, _version("torch"), _version("torchvision"))
        out = self.root / key / "model.onnx"
        meta_path = out.with_name("build.json")
        if not (out.exists() and meta_path.exists()):
            out.parent.mkdir(parents=True, exist_ok=True)
            meta = run_qat_worker(source, out, variant.quant, data_spec, preprocess, timeout_s=timeout_s)
            meta["weights"] = {"packed_size_bytes": artifact_size(out)}
            meta_path.write_text(json.dumps(meta))
        meta = json.loads(meta_path.read_text())
        return self._describe(out, variant.name, "int8", fp32.weights, fp32.path, meta)


def _same_io(a: tuple[list[Any], str], b: tuple[list[Any], str]) -> bool:
    (da, ta), (db, tb) = a, b
    return ta == tb and len(da) == len(db) and all(
        not isinstance(x, int) or not isinstance(y, int) or x == y for x, y in zip(da, db, strict=True))


def _io_text(io: list[tuple[list[Any], str]]) -> str:
    return ", ".join(f"{t}{list(d)}" for d, t in io)


def _shape_of(source: ModelSource) -> tuple[tuple[int, ...], int]:
    return tuple(source.input_shape), source.num_classes


def run_quantize_worker(fp32_path: Path, out: Path, settings: QuantSettings, data_spec: str | dict[str, Any],
                        preprocess: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
    """Quantize in a contained subprocess; returns its time, peak RSS and notes. Raises a one-line ValueError
    on failure ("quantization failed: …", "quantization crashed with SIGKILL …"), and "quantization timed out
    after N s (log: …)" when it runs past ``timeout_s`` (its whole process group is killed)."""
    from quantbench.calibration_data import absolute_spec
    from quantbench.common.worker_protocol import run_worker

    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    # Absolute paths, and the caller's working directory: the worker calibrates on the data the caller means.
    job = {"fp32": str(Path(fp32_path).absolute()), "out": str(out), "settings": settings.to_config(),
           "data": absolute_spec(data_spec, Path.cwd()), "preprocess": preprocess}
    with tempfile.TemporaryDirectory(prefix="qb-qworker-") as tmpdir:
        outcome = run_worker("quantbench.exporters.quantize_worker", job, timeout_s=timeout_s,
                             log_path=out.with_name("quantize.log"), job_path=Path(tmpdir) / "job.json",
                             out_path=Path(tmpdir) / "result.json")
    if not outcome.ok:
        raise ValueError(outcome.failure("quantization"))
    return outcome.result


def identical_groups(artifacts: list[BuiltArtifact]) -> dict[str, str]:
    """Map each variant whose file is byte-identical to an earlier one onto that earlier variant."""
    first: dict[str, str] = {}
    same: dict[str, str] = {}
    for a in artifacts:
        if a.sha256 in first and first[a.sha256] != a.variant:
            same[a.variant] = first[a.sha256]
        else:
            first.setdefault(a.sha256, a.variant)
    return same
