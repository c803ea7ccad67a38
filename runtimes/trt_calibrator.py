"""TensorRT 10 INT8 calibrators fed by quantbench's calibration reader.

The batching and cache logic lives in :class:`CalibrationFeed` (plain Python, testable without a
GPU or TensorRT); :func:`make_calibrator` wraps it in TensorRT's ``IInt8EntropyCalibrator2`` or
``IInt8MinMaxCalibrator`` only when TensorRT is importable.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .base import RuntimeFailure


class CalibrationFeed:
    """Feeds fixed-size batches from a reader (``get_next() -> {name: array} | None``) to a calibrator.

    ``to_device(array) -> int`` copies a host batch to the device and returns its address. Short
    final batches are padded by repeating their last sample (calibration profiles are static);
    longer ones are cut. With ``sample_shape`` a batch of another per-sample shape is an error.
    The calibration cache is read from and written to ``cache_path`` so a second build reuses it.
    """

    def __init__(self, reader: Any, batch_size: int, cache_path: Path, to_device: Callable[[np.ndarray], int],
                 sample_shape: tuple[int, ...] | None = None) -> None:
        if batch_size < 1:
            raise RuntimeFailure(f"calibration batch size must be >= 1, not {batch_size}")
        self.reader, self.batch_size, self.cache_path, self.to_device = reader, batch_size, Path(cache_path), to_device
        self.sample_shape = tuple(sample_shape) if sample_shape is not None else None
        self.batches_fed = self.samples_fed = 0
        self.cache_read = self.cache_written = False
        self.error: Exception | None = None  # raised inside TensorRT's callback; the adapter re-raises it
        if hasattr(reader, "rewind"):
            reader.rewind()

    def get_batch(self, names: list[str]) -> list[int] | None:
        """Device addresses of the next batch, one per input name; None when the reader is exhausted."""
        batch = self.reader.get_next()
        if batch is None:
            return None
        ptrs = []
        for name in names:
            x = batch.get(name)
            if x is None:
                if len(batch) != 1:
                    raise RuntimeFailure(f"calibration reader has no input '{name}' (it has {', '.join(batch)})")
                x = next(iter(batch.values()))  # a single-input model whose input the reader names differently
            x = np.asarray(x)
            if self.sample_shape is not None and tuple(x.shape[1:]) != self.sample_shape:
                raise RuntimeFailure(f"calibration batch for '{name}' has samples of shape {tuple(x.shape[1:])}, "
                                     f"the model takes {self.sample_shape}")
            real = min(x.shape[0], self.batch_size)
            if x.shape[0] < self.batch_size:
                x = np.concatenate([x, np.repeat(x[-1:], self.batch_size - x.shape[0], axis=0)])
            ptrs.append(self.to_device(np.ascontiguousarray(x[: self.batch_size], dtype=np.float32)))
        self.batches_fed += 1
        self.samples_fed += real
        return ptrs

    def read_cache(self) -> bytes | None:
        """The cached calibration table, or None (TensorRT then calibrates and calls :meth:`write_cache`)."""
        if not self.cache_path.is_file():
            return None
        self.cache_read = True
        return self.cache_path.read_bytes()

    def write_cache(self, cache: Any) -> None:
        """Store the calibration table atomically (parallel builds may race for the same file)."""
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.with_name(self.cache_path.name + ".tmp")
        tmp.write_bytes(bytes(cache))
        tmp.replace(self.cache_path)
        self.cache_written = True


def calibration_fingerprint(reader: Any) -> str:
    """A content hash of every batch ``reader`` yields, with the batch size: the calibration data as fed.

    Hashing what the calibrator will see covers every knob behind it (data set, sample count,
    seed, classes, preprocessing, batch) without knowing them. Costs one pass over the data.
    """
    digest = hashlib.sha256(f"batch={getattr(reader, 'batch_size', None)}".encode())
    if hasattr(reader, "rewind"):
        reader.rewind()
    n = 0
    while (batch := reader.get_next()) is not None:
        for name in sorted(batch):
            x = np.ascontiguousarray(batch[name])
            digest.update(f"{name}:{x.dtype.str}:{x.shape}".encode())
            digest.update(x.tobytes())
        n += 1
    if hasattr(reader, "rewind"):
        reader.rewind()
    return f"{digest.hexdigest()[:24]}/{n}"


def make_calibrator(trt: Any, kind: str, feed: CalibrationFeed) -> Any:
    """A TensorRT calibrator object of ``kind`` ("entropy" or "minmax") driven by ``feed``."""
    base = {"entropy": trt.IInt8EntropyCalibrator2, "minmax": trt.IInt8MinMaxCalibrator}[kind]

    class _Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.feed = feed

        def get_batch_size(self) -> int:
            return feed.batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            try:
                return feed.get_batch(names)
            except Exception as exc:  # noqa: BLE001 - an exception must not unwind through TensorRT's C++
                feed.error = exc
                return None

        def read_calibration_cache(self) -> bytes | None:
            return feed.read_cache()

        def write_calibration_cache(self, cache: Any) -> None:
            feed.write_cache(cache)

    return _Calibrator()
