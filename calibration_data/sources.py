"""Data sources behind one interface: a calibration split and an evaluation split that never overlap."""
from __future__ import annotations

import difflib
import gzip
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SHIPPED = Path(__file__).resolve().parent / "data" / "fashion-mnist-subset"
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32, 0x0E: np.float64}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


class DataError(ValueError):
    """A data problem described in one line (missing path, truncated file, non-image file, bad spec)."""


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST format, optionally gzipped); raise :class:`DataError` if truncated."""
    if not path.exists():
        raise DataError(f"IDX file not found: {path}")
    raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: header needs {header} bytes, got {len(raw)}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[raw[2]]).newbyteorder(">")
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) < expected:
        raise DataError(f"{path} is truncated: expected {expected} bytes, got {len(raw)}")
    return np.frombuffer(raw, dtype=dtype, count=int(np.prod(dims)), offset=header).reshape(dims).astype(
        dtype.newbyteorder("="))


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file (used to make the shipped subset)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.GzipFile(path, "wb", mtime=0) as fh:
        fh.write(header + array.tobytes())


class Split:
    """Images and labels held in memory (uint8), read by index."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, name: str) -> None:
        if len(images) != len(labels):
            raise DataError(f"{name}: {len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.name = name

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Raw uint8 images for ``indices``: (N, H, W) or (N, H, W, C)."""
        return self.images[np.asarray(indices)]

    def select(self, n: int | None, seed: int = 0, classes: list[int] | tuple[int, ...] | None = None) -> np.ndarray:
        """Deterministic sample indices: ``n`` of them (None = all), optionally only from ``classes``.

        Samples are drawn class by class in round-robin over a seeded shuffle, so small
        calibration sets stay balanced across classes.
        """
        pool = np.arange(len(self))
        if classes is not None:
            unknown = set(classes) - set(np.unique(self.labels).tolist())
            if unknown:
                raise DataError(f"{self.name}: no samples with label(s) {sorted(unknown)}")
            pool = pool[np.isin(self.labels, list(classes))]
        if n is None:
            return pool
        if n > len(pool):
            raise DataError(f"{self.name}: asked for {n} samples, only {len(pool)} available")
        rng = np.random.default_rng(seed)
        shuffled = rng.permutation(pool)
        order = np.argsort(_rank_within_class(self.labels[shuffled]), kind="stable")
        return np.sort(shuffled[order[:n]])


def _rank_within_class(labels: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        ranks[where] = np.arange(len(where))
    return ranks


@dataclass
class DataSource:
    """A data set with a calibration split (training part) and an evaluation split (test part)."""

    name: str
    spec: str
    calibration: Split
    evaluation: Split
    num_classes: int
    info: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """Identity of the data, stored with every result row."""
        return {"name": self.name, "spec": self.spec, "num_classes": self.num_classes,
                "n_calibration": len(self.calibration), "n_evaluation": len(self.evaluation),
                "image_shape": list(self.evaluation.image_shape), **self.info}


def _idx_files(root: Path, prefix: str) -> tuple[Path, Path]:
    for suffix in ("", ".gz"):
        img, lab = root / f"{prefix}-images-idx3-ubyte{suffix}", root / f"{prefix}-labels-idx1-ubyte{suffix}"
        if img.exists() and lab.exists():
            return img, lab
    raise DataError(f"no {prefix}-images-idx3-ubyte[.gz] / {prefix}-labels-idx1-ubyte[.gz] in {root}")


def open_idx(root: Path, name: str, spec: str, info: dict[str, Any] | None = None) -> DataSource:
    """A directory of MNIST-format IDX files: train-* for calibration, t10k-* for evaluation."""
    if not root.is_dir():
        raise DataError(f"IDX directory not found: {root}")
    tr_i, tr_l = _idx_files(root, "train")
    te_i, te_l = _idx_files(root, "t10k")
    cal = Split(read_idx(tr_i), read_idx(tr_l), f"{name}/train")
    ev = Split(read_idx(te_i), read_idx(te_l), f"{name}/test")
    classes = int(max(cal.labels.max(), ev.labels.max())) + 1
    return DataSource(name, spec, cal, ev, classes, {"path": str(root), **(info or {})})


def _verify_manifest(root: Path) -> dict[str, Any]:
    manifest = json.loads((root / "MANIFEST.json").read_text())
    for fname, digest in manifest["sha256"].items():
        actual = hashlib.sha256((root / fname).read_bytes()).hexdigest()
        if actual != digest:
            raise DataError(f"shipped data file {fname} does not match its checksum in MANIFEST.json")
    return manifest


def open_fashion_mnist(prefer_full: bool = True) -> DataSource:
    """Fashion-MNIST: the full Debian set when installed, else the real subset shipped here."""
    full = Path(os.environ.get("QUANTBENCH_FASHION_MNIST", DEBIAN_FASHION_MNIST))
    if prefer_full and full.is_dir():
        return open_idx(full, "fashion-mnist", "fashion-mnist", {"variant": "full", "license": "MIT"})
    if not SHIPPED.is_dir():
        raise DataError(f"shipped Fashion-MNIST subset missing at {SHIPPED}")
    manifest = _verify_manifest(SHIPPED)
    return open_idx(SHIPPED, "fashion-mnist", "fashion-mnist-subset",
                    {"variant": "shipped-subset", "license": manifest.get("license", "MIT")})


def _partition(n: int, seed: int, eval_fraction: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    n_eval = max(1, int(round(n * eval_fraction)))
    return np.sort(perm[n_eval:]), np.sort(perm[:n_eval])


def open_digits() -> DataSource:
    """scikit-learn's 8×8 digits (values 0..16 scaled to uint8), split 70/30 with a fixed seed."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("the 'digits' data set needs scikit-learn: pip install .[data]") from None
    d = load_digits()
    images = np.clip(d.images * (255.0 / 16.0), 0, 255).round().astype(np.uint8)
    cal_idx, ev_idx = _partition(len(images), seed=0)
    return DataSource("digits", "digits", Split(images[cal_idx], d.target[cal_idx], "digits/calibration"),
                      Split(images[ev_idx], d.target[ev_idx], "digits/evaluation"), 10,
                      {"variant": "full", "license": "CC BY 4.0 (UCI)", "split": "seeded 70/30 partition"})


def open_npz(path: Path) -> DataSource:
    """``x_train, y_train, x_test, y_test`` arrays, or ``x, y`` split 70/30 with a fixed seed."""
    if not path.is_file():
        raise DataError(f"npz file not found: {path}")
    try:
        arrays = dict(np.load(path, allow_pickle=False))
    except Exception as exc:  # noqa: BLE001 - numpy raises several types for bad files
        raise DataError(f"{path} is not a readable .npz file: {exc}") from None
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        cal = Split(_as_uint8(arrays["x_train"], path), arrays["y_train"], f"{path.name}/train")
        ev = Split(_as_uint8(arrays["x_test"], path), arrays["y_test"], f"{path.name}/test")
        split = "x_train/x_test"
    elif {"x", "y"} <= arrays.keys():
        x, y = _as_uint8(arrays["x"], path), arrays["y"]
        cal_idx, ev_idx = _partition(len(x), seed=0)
        cal, ev = Split(x[cal_idx], y[cal_idx], f"{path.name}/calibration"), Split(x[ev_idx], y[ev_idx], f"{path.name}/evaluation")
        split = "seeded 70/30 partition"
    else:
        raise DataError(f"{path} needs arrays x_train,y_train,x_test,y_test or x,y (has {', '.join(arrays)})")
    classes = int(max(cal.labels.max(), ev.labels.max())) + 1
    return DataSource(path.stem, f"npz:{path}", cal, ev, classes, {"path": str(path), "split": split})


def _as_uint8(x: np.ndarray, path: Path) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating) and x.size and x.max() <= 1.0 + 1e-6:
        return np.clip(x * 255.0, 0, 255).round().astype(np.uint8)
    if x.size and (x.min() < 0 or x.max() > 255):
        raise DataError(f"{path}: images must be uint8 or floats in [0, 1]")
    return x.astype(np.uint8)


def open_folder(root: Path) -> DataSource:
    """An image-folder tree, class per sub-folder; ``train/`` + ``test/`` (or ``val/``) used as splits."""
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if (root / "train").is_dir() and test_dir is not None:
        classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
        cal = _folder_split(root / "train", classes, f"{root.name}/train")
        ev = _folder_split(test_dir, classes, f"{root.name}/{test_dir.name}")
        split = f"train/{test_dir.name}"
    else:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        whole = _folder_split(root, classes, root.name)
        cal_idx, ev_idx = _partition(len(whole), seed=0)
        cal = Split(whole.images[cal_idx], whole.labels[cal_idx], f"{root.name}/calibration")
        ev = Split(whole.images[ev_idx], whole.labels[ev_idx], f"{root.name}/evaluation")
        split = "seeded 70/30 partition"
    return DataSource(root.name, f"folder:{root}", cal, ev, len(classes),
                      {"path": str(root), "classes": classes, "split": split})


def _folder_split(root: Path, classes: list[str], name: str) -> Split:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DataError("image folders need Pillow: pip install .[data]") from None
    if not classes:
        raise DataError(f"{root} has no class sub-folders")
    images, labels, mode, size = [], [], None, None
    for label, cls in enumerate(classes):
        folder = root / cls
        if not folder.is_dir():
            raise DataError(f"{root} has no sub-folder for class '{cls}'")
        for f in sorted(folder.iterdir()):
            if f.is_dir() or f.name.startswith("."):
                continue
            try:
                with Image.open(f) as im:
                    im.load()
                    mode = mode or ("L" if im.mode in ("L", "1", "I;16") else "RGB")
                    im = im.convert(mode)
                    size = size or im.size
                    if im.size != size:
                        im = im.resize(size)
                    images.append(np.asarray(im, dtype=np.uint8))
            except (UnidentifiedImageError, OSError):
                raise DataError(f"not an image file: {f}") from None
            labels.append(label)
    if not images:
        raise DataError(f"{root}: no images found")
    return Split(np.stack(images), np.array(labels), name)


KINDS = ("fashion-mnist", "fashion-mnist-subset", "idx:DIR", "digits", "folder:DIR", "npz:FILE")


def open_source(spec: str) -> DataSource:
    """Open a data source by spec: fashion-mnist, fashion-mnist-subset, idx:DIR, digits, folder:DIR, npz:FILE."""
    kind, _, arg = spec.partition(":")
    if kind == "fashion-mnist" and not arg:
        return open_fashion_mnist(prefer_full=True)
    if kind == "fashion-mnist-subset" and not arg:
        return open_fashion_mnist(prefer_full=False)
    if kind == "digits" and not arg:
        return open_digits()
    if kind in ("idx", "mnist") and arg:
        return open_idx(Path(arg).expanduser(), Path(arg).name, spec)
    if kind == "folder" and arg:
        return open_folder(Path(arg).expanduser())
    if kind == "npz" and arg:
        return open_npz(Path(arg).expanduser())
    close = difflib.get_close_matches(kind, [k.split(":")[0] for k in KINDS], n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise DataError(f"unknown data source '{spec}'{hint} (known: {', '.join(KINDS)})")
