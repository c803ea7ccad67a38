"""MNIST-format IDX files: reading, writing, and the Fashion-MNIST sources (full Debian set, shipped subset)."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .base import ArraySplit, DataError, DataSource, as_pixels, held_out, sha256_files

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SHIPPED = Path(__file__).resolve().parent / "data" / "fashion-mnist-subset"
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32, 0x0E: np.float64}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST format, optionally gzipped); raise :class:`DataError` if truncated."""
    if not path.exists():
        raise DataError(f"IDX file not found: {path}")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} cannot be read: {exc}") from None
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


def _idx_files(root: Path, prefix: str) -> tuple[Path, Path] | None:
    """The (images, labels) files for ``prefix`` (train | t10k), None if neither exists."""
    for suffix in ("", ".gz"):
        img, lab = root / f"{prefix}-images-idx3-ubyte{suffix}", root / f"{prefix}-labels-idx1-ubyte{suffix}"
        if img.exists() and lab.exists():
            return img, lab
    for suffix in ("", ".gz"):
        img, lab = root / f"{prefix}-images-idx3-ubyte{suffix}", root / f"{prefix}-labels-idx1-ubyte{suffix}"
        if img.exists() != lab.exists():
            missing = lab if img.exists() else img
            raise DataError(f"{root}: {missing.name} is missing (its images/labels partner is there)")
    return None


def _split(images: Path, labels: Path, name: str) -> ArraySplit:
    return ArraySplit(as_pixels(read_idx(images), str(images)), read_idx(labels), name)


def open_idx(root: Path, name: str, spec: str, info: dict[str, Any] | None = None) -> DataSource:
    """A directory of MNIST-format IDX files: train-* for calibration, t10k-* for evaluation.

    With only t10k-* files, calibration is a seeded held-out slice of the test images, disjoint
    from the evaluated ones (see :func:`base.held_out`).
    """
    if not root.is_dir():
        raise DataError(f"IDX directory not found: {root}")
    train, test = _idx_files(root, "train"), _idx_files(root, "t10k")
    if test is None:
        what = "only train-* files" if train else "no train-* or t10k-* files"
        raise DataError(f"{root} has {what}: an evaluation split needs t10k-images-idx3-ubyte[.gz] and "
                        f"t10k-labels-idx1-ubyte[.gz]")
    ev = _split(*test, f"{name}/test")
    if train is not None:
        cal = _split(*train, f"{name}/train")
        split, files = "train/t10k", [*train, *test]
    else:
        cal, ev, split = held_out(ev, name)
        files = list(test)
    if cal.image_shape != ev.image_shape:
        raise DataError(f"{root}: train images are {cal.image_shape}, test images {ev.image_shape}")
    num_classes = int(max(cal.labels.max(initial=0), ev.labels.max(initial=0))) + 1
    return DataSource(name, spec, cal, ev, num_classes, {"path": str(root), "split": split, **(info or {})},
                      content_hash=lambda: sha256_files(files), fingerprint_method="sha256 of the IDX files")


def _verify_manifest(root: Path) -> tuple[dict[str, Any], str]:
    """Check the shipped files against MANIFEST.json; return the manifest and its sha256 (the subset's identity)."""
    raw = (root / "MANIFEST.json").read_bytes()
    manifest = json.loads(raw)
    for fname, digest in manifest["sha256"].items():
        actual = hashlib.sha256((root / fname).read_bytes()).hexdigest()
        if actual != digest:
            raise DataError(f"shipped data file {fname} does not match its checksum in MANIFEST.json")
    return manifest, hashlib.sha256(raw).hexdigest()


def open_fashion_mnist(prefer_full: bool = True) -> DataSource:
    """Fashion-MNIST: the full Debian set when installed, else the real subset shipped here."""
    full = Path(os.environ.get("QUANTBENCH_FASHION_MNIST", DEBIAN_FASHION_MNIST))
    if prefer_full and full.is_dir():
        return open_idx(full, "fashion-mnist", "fashion-mnist", {"variant": "full", "license": "MIT"})
    if not SHIPPED.is_dir():
        raise DataError(f"shipped Fashion-MNIST subset missing at {SHIPPED}")
    manifest, digest = _verify_manifest(SHIPPED)
    src = open_idx(SHIPPED, "fashion-mnist", "fashion-mnist-subset",
                   {"variant": "shipped-subset", "license": manifest.get("license", "MIT")})
    src.content_hash, src.fingerprint_method = (lambda: digest), "sha256 of the shipped subset's MANIFEST.json"
    return src
