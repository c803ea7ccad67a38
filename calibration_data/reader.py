"""One batch reader for ORT's quantize_static, TensorRT calibrators and the evaluation loop."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .base import DataError, Split
from .preprocess import Preprocess


class BatchReader:
    """Batches of preprocessed samples; ``get_next()`` follows ORT's ``CalibrationDataReader``.

    ORT's ``quantize_static`` only calls ``get_next``/``rewind`` (duck typing), so this class does
    not import onnxruntime. With ``pad_last`` the final batch is padded to ``batch_size`` by
    repeating its last sample (fixed-shape engines need it); ``n_valid`` says how many are real.
    """

    def __init__(self, split: Split, preprocess: Preprocess, indices: np.ndarray, batch_size: int,
                 input_name: str = "input", pad_last: bool = False) -> None:
        if batch_size < 1:
            raise DataError(f"batch size must be >= 1, not {batch_size}")
        self.split, self.preprocess = split, preprocess
        self.indices = np.asarray(indices, dtype=np.int64)
        if len(self.indices) == 0:
            raise DataError(f"{split.name}: no samples selected")
        self.batch_size, self.input_name, self.pad_last = batch_size, input_name, pad_last
        self._next = 0

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def load_batch(self, i: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Read and preprocess batch ``i``: (inputs, labels, number of real samples)."""
        idx = self.indices[i * self.batch_size:(i + 1) * self.batch_size]
        n_valid = len(idx)
        if self.pad_last and n_valid < self.batch_size:
            idx = np.concatenate([idx, np.repeat(idx[-1:], self.batch_size - n_valid)])
        return self.preprocess.apply(self.split.read(idx)), self.split.labels[idx], n_valid

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next ``{input_name: batch}``, or None when exhausted (ORT's protocol)."""
        if self._next >= len(self):
            return None
        x, _, _ = self.load_batch(self._next)
        self._next += 1
        return {self.input_name: x}

    def rewind(self) -> None:
        """Start again from the first batch."""
        self._next = 0

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        for i in range(len(self)):
            yield self.load_batch(i)
