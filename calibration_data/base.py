"""The data interface: a split (labels + images read by index) and a source (calibration + evaluation)."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Test-only sources: calibration is a seeded, class-balanced held-out slice of the test split of
# min(HELD_OUT_MAX, HELD_OUT_FRACTION * n) images (at least 1); evaluation is every other image.
HELD_OUT_MAX = 1000
HELD_OUT_FRACTION = 0.2
HELD_OUT_SEED = 0
# Classes listed in describe() by name up to this many; larger maps are summarised by their size.
CLASS_MAP_LIMIT = 100


class DataError(ValueError):
    """A data problem described in one line (missing path, truncated file, non-image file, bad spec)."""


def as_labels(labels: Any, name: str) -> np.ndarray:
    """Labels as a 1-D int64 array of non-negative whole numbers, or :class:`DataError`."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise DataError(f"{name}: labels must be one number per image, got shape {arr.shape}")
    if arr.size and not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataError(f"{name}: labels must be integers, not {arr.dtype}")
    if arr.size and np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
        raise DataError(f"{name}: labels must be whole numbers")
    out = arr.astype(np.int64)
    if out.size and out.min() < 0:
        raise DataError(f"{name}: labels must be >= 0 (found {int(out.min())})")
    return out


def as_pixels(x: np.ndarray, name: str) -> np.ndarray:
    """Images as stored for reading: integer pixels (0..255) become uint8; floats stay float32, unclipped.

    Float images are taken as already scaled: :class:`Preprocess` applies ``scale`` to uint8
    pixels only, so data in [-1, 1] or already normalised reaches mean/std unchanged.
    """
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(f"{name}: integer images must be pixels in 0..255 (found {x.min()}..{x.max()})")
        return x.astype(np.uint8)
    if np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32, copy=False)
        if x.size and not np.all(np.isfinite(x)):
            raise DataError(f"{name}: images contain NaN or infinite values")
        return x
    raise DataError(f"{name}: images must be uint8, integer or float arrays, not {x.dtype}")


class Split:
    """Labels held in memory and images read by index; subclasses decide where images live."""

    def __init__(self, labels: Any, name: str) -> None:
        self.labels = as_labels(labels, name)
        self.name = name

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one raw image, (H, W) or (H, W, C); for folders of mixed sizes, the first image's."""
        raise NotImplementedError

    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray | list[np.ndarray]:
        """Raw images for ``indices``: an (N, H, W[, C]) array, or a list when their sizes differ."""
        raise NotImplementedError

    def subset(self, indices: np.ndarray, name: str) -> Split:
        """A split made of the images at ``indices`` (views or paths, no copies of other images)."""
        raise NotImplementedError

    def select(self, n: int | None, seed: int = 0, classes: Iterable[int] | None = None) -> np.ndarray:
        """Deterministic sample indices: ``n`` of them (None = all), optionally only from ``classes``.

        Samples are drawn class by class in round-robin over a seeded shuffle, so small
        calibration sets stay balanced across classes.
        """
        pool = np.arange(len(self))
        if classes is not None:
            classes = list(classes)
            unknown = set(classes) - set(np.unique(self.labels).tolist())
            if unknown:
                raise DataError(f"{self.name}: no samples with label(s) {sorted(unknown)}")
            pool = pool[np.isin(self.labels, classes)]
        if n is None:
            return pool
        if n > len(pool):
            raise DataError(f"{self.name}: asked for {n} samples, only {len(pool)} available")
        rng = np.random.default_rng(seed)
        shuffled = rng.permutation(pool)
        order = np.argsort(_rank_within_class(self.labels[shuffled]), kind="stable")
        return np.sort(shuffled[order[:n]])


class ArraySplit(Split):
    """Images held in memory: uint8 pixels, or float32 values that are already scaled."""

    def __init__(self, images: np.ndarray, labels: Any, name: str) -> None:
        super().__init__(labels, name)
        if len(images) != len(self.labels):
            raise DataError(f"{name}: {len(images)} images but {len(self.labels)} labels")
        if images.ndim not in (3, 4):
            raise DataError(f"{name}: images must be (N, H, W) or (N, H, W, C), got shape {images.shape}")
        self.images = images

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        return self.images[np.asarray(indices, dtype=np.int64)]

    def subset(self, indices: np.ndarray, name: str) -> ArraySplit:
        return ArraySplit(self.images[indices], self.labels[indices], name)


def _rank_within_class(labels: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        ranks[where] = np.arange(len(where))
    return ranks


def partition(n: int, seed: int, eval_fraction: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(n)`` into (calibration, evaluation) index arrays."""
    perm = np.random.default_rng(seed).permutation(n)
    n_eval = max(1, round(n * eval_fraction))
    return np.sort(perm[n_eval:]), np.sort(perm[:n_eval])


def partitioned(whole: Split, base: str) -> tuple[Split, Split, str]:
    """Calibration and evaluation from one labelled split: the seeded 70/30 :func:`partition` (disjoint)."""
    cal_idx, ev_idx = partition(len(whole), seed=0)
    return (whole.subset(cal_idx, f"{base}/calibration"), whole.subset(ev_idx, f"{base}/evaluation"),
            "seeded 70/30 partition")


def held_out_size(n: int) -> int:
    """Calibration images taken from a test-only split of ``n`` images: min(1000, 20%), at least 1."""
    return max(1, min(HELD_OUT_MAX, int(n * HELD_OUT_FRACTION)))


def held_out(test: Split, base: str, what: str = "test images") -> tuple[Split, Split, str]:
    """Calibration and evaluation from a test-only split: a seeded held-out slice and the rest (disjoint)."""
    n = len(test)
    if n < 2:
        raise DataError(f"{test.name}: a test-only source needs at least 2 images to hold some out for "
                        f"calibration, has {n}")
    n_cal = held_out_size(n)
    cal_idx = test.select(n_cal, seed=HELD_OUT_SEED)
    ev_idx = np.setdiff1d(np.arange(n), cal_idx, assume_unique=True)
    rule = (f"test-only: calibration = seeded class-balanced held-out slice of {n_cal} of {n} {what} "
            f"(min({HELD_OUT_MAX}, {int(HELD_OUT_FRACTION * 100)}%), seed {HELD_OUT_SEED}); "
            f"evaluation = the other {len(ev_idx)}")
    return (test.subset(cal_idx, f"{base}/held-out-calibration"),
            test.subset(ev_idx, f"{base}/held-out-evaluation"), rule)


def sha256_files(paths: Iterable[Path]) -> str:
    """sha256 over the bytes of ``paths`` (read in chunks), each prefixed by its base name."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


@dataclass
class DataSource:
    """A data set with a calibration split (training part) and an evaluation split (test part).

    ``content_hash`` is called at most once, by :meth:`describe` (so cell workers that only read
    batches never pay for it); ``fingerprint_method`` says what it covers.
    """

    name: str
    spec: str
    calibration: Split
    evaluation: Split
    num_classes: int
    info: dict[str, Any] = field(default_factory=dict)
    content_hash: Callable[[], str] | None = field(default=None, repr=False)
    fingerprint_method: str = ""
    class_index: str = "numeric-labels"
    class_map: dict[str, int] | None = None
    _fingerprint: str | None = field(default=None, init=False, repr=False)

    @property
    def fingerprint(self) -> str:
        """sha256 of the data actually used: content (see ``fingerprint_method``), split rule, class map."""
        if self._fingerprint is None:
            content = self.content_hash() if self.content_hash else ""
            key = {"content": content, "split": self.info.get("split"), "class_index": self.class_index,
                   "class_map": self.class_map, "n": [len(self.calibration), len(self.evaluation)]}
            if self.info.get("pixel_scaling"):  # how decoded pixels were scaled (16-bit images), when they were
                key["pixel_scaling"] = self.info["pixel_scaling"]
            self._fingerprint = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        """Identity of the data, stored with every result row (JSON-able)."""
        labels = np.concatenate([self.calibration.labels, self.evaluation.labels])
        out: dict[str, Any] = {
            "name": self.name, "spec": self.spec, "num_classes": self.num_classes,
            "n_calibration": len(self.calibration), "n_evaluation": len(self.evaluation),
            "image_shape": list(self.evaluation.image_shape),
            "max_label": int(labels.max()) if labels.size else None,
            "n_classes_present": len(np.unique(labels)),
            "class_index": self.class_index,
        }
        if self.class_map is not None:
            if len(self.class_map) <= CLASS_MAP_LIMIT:
                out["class_map"] = dict(self.class_map)
            else:
                out["class_map_size"] = len(self.class_map)
        out.update(self.info)
        out["fingerprint"] = self.fingerprint
        out["fingerprint_method"] = self.fingerprint_method
        return out
