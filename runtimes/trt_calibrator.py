"""TensorRT 10 INT8 calibrators fed by quantbench's calibration reader.

The batching and cache logic lives in :class:`CalibrationFeed` (plain Python, testable without a
GPU or TensorRT); :func:`make_calibrator` wraps it in TensorRT's ``IInt8EntropyCalibrator2`` or
``IInt8MinMaxCalibrator`` only when TensorRT is importable.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np


class CalibrationFeed:
    """Feeds fixed-size batches from a reader (``get_next() -> {name: array} | None``) to a calibrator.

    ``to_device(array) -> int`` copies a host batch to the device and returns its address. Short
    final batches are padded by repeating their last sample (calibration profiles are static).
    The calibration cache is read from and written to ``cache_path`` so a second build reuses it.
    """

    def __init__(self, reader: Any, batch_size: int, cache_path: Path, to_device: Callable[[np.ndarray], int]) -> None:
        self.reader, self.batch_size, self.cache_path, self.to_device = reader, batch_size, Path(cache_path), to_device
        self.batches_fed = 0
        reader.rewind()

    def get_batch(self, names: list[str]) -> list[int] | None:
        batch = self.reader.get_next()
        if batch is None:
            return None
        ptrs = []
        for name in names:
            x = batch.get(name)
            if x is None:  # a single-input model whose input the reader names differently
                x = next(iter(batch.values()))
            if x.shape[0] < self.batch_size:
                pad = np.repeat(x[-1:], self.batch_size - x.shape[0], axis=0)
                x = np.concatenate([x, pad])
            ptrs.append(self.to_device(np.ascontiguousarray(x[: self.batch_size], dtype=np.float32)))
        self.batches_fed += 1
        return ptrs

    def read_cache(self) -> bytes | None:
        return self.cache_path.read_bytes() if self.cache_path.is_file() else None

    def write_cache(self, cache: Any) -> None:
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        self.cache_path.write_bytes(bytes(cache))


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
            return feed.get_batch(names)

        def read_calibration_cache(self) -> bytes | None:
            return feed.read_cache()

        def write_calibration_cache(self, cache: Any) -> None:
            feed.write_cache(cache)

    return _Calibrator()
