"""NumPy ``.npz`` data sets: train/test arrays, test arrays only, or one x/y pair split 70/30."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import ArraySplit, DataError, DataSource, as_pixels, held_out, partitioned, sha256_files


def open_npz(path: Path, spec: str | None = None) -> DataSource:
    """An ``.npz`` file with ``x_train, y_train, x_test, y_test``, only ``x_test, y_test``, or ``x, y``.

    Integer images are pixels (0..255, stored as uint8); float images are kept as float32,
    unclipped, and taken as already scaled (``Preprocess.scale`` is not applied to them).
    With only ``x_test, y_test``, calibration is a seeded held-out slice of the test images.
    """
    if not path.is_file():
        raise DataError(f"npz file not found: {path}")
    try:
        arrays = dict(np.load(path, allow_pickle=False))
    except Exception as exc:  # noqa: BLE001 - numpy raises several types for bad files
        raise DataError(f"{path} is not a readable .npz file: "
                        f"{str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    keys = arrays.keys()

    def split(x: str, y: str, name: str) -> ArraySplit:
        return ArraySplit(as_pixels(arrays[x], f"{path.name}:{x}"), arrays[y], f"{path.name}/{name}")

    if {"x_test", "y_test"} <= keys and {"x_train", "y_train"} <= keys:
        cal, ev, rule = split("x_train", "y_train", "train"), split("x_test", "y_test", "test"), "x_train/x_test"
    elif {"x_test", "y_test"} <= keys:
        cal, ev, rule = held_out(split("x_test", "y_test", "test"), path.name)
    elif {"x", "y"} <= keys:
        cal, ev, rule = partitioned(split("x", "y", "all"), path.name)
    else:
        raise DataError(f"{path} needs arrays x_train,y_train,x_test,y_test, or x_test,y_test, or x,y "
                        f"(has {', '.join(keys) or 'none'})")
    if cal.image_shape != ev.image_shape:
        raise DataError(f"{path}: calibration images are {cal.image_shape}, evaluation images {ev.image_shape}")
    num_classes = int(max(cal.labels.max(initial=0), ev.labels.max(initial=0))) + 1
    pixels = "uint8" if ev.images.dtype == np.uint8 else "float32 (taken as already scaled)"
    return DataSource(path.stem, spec or f"npz:{path}", cal, ev, num_classes,
                      {"path": str(path), "split": rule, "pixels": pixels},
                      content_hash=lambda: sha256_files([path]), fingerprint_method="sha256 of the npz file")
