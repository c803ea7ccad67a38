"""Image-folder data sets (one sub-folder per class), read lazily: paths and labels in memory, pixels per batch."""
from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import DataError, DataSource, Split, held_out, partitioned

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"}
GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
# 16-bit grey (PNG opens as I;16; TIFF as I;16B or 32-bit I): scaled to 8 bits, not clipped by PIL's convert.
SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
SIXTEEN_BIT_NOTE = "16-bit grey images scaled to 0..255 (value / 257, rounded)"
IGNORED_FOLDERS = {"__MACOSX"}  # archive debris, never a class (hidden folders, ".git" etc., are skipped too)
_INTEGER_NAME = re.compile(r"^[0-9]+$")


def _sixteen_to_eight(x: np.ndarray, path: str, mode: str) -> np.ndarray:
    """A 16-bit grey image (0..65535) as uint8 pixels, scaled (65535 -> 255), in ``mode`` ("L" or "RGB")."""
    if x.size and (x.min() < 0 or x.max() > 65535):
        raise DataError(f"cannot read image {path}: 32-bit integer pixels outside 0..65535 "
                        f"({x.min()}..{x.max()}); only 8- and 16-bit images are supported")
    out = np.rint(x.astype(np.float32) / 257.0).astype(np.uint8)
    return np.repeat(out[..., None], 3, axis=-1) if mode == "RGB" else out


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise DataError("image folders need Pillow: pip install .[data]") from None
    return Image


class FileSplit(Split):
    """Image files read and decoded only when :meth:`read` asks for them (memory independent of size).

    Every image is converted to ``mode`` ("L" or "RGB", fixed per source from its first image).
    """

    def __init__(self, root: Path, files: np.ndarray, labels: np.ndarray, name: str, mode: str,
                 first_shape: tuple[int, ...]) -> None:
        super().__init__(labels, name)
        self.root, self.files, self.mode, self._first_shape = root, files, mode, first_shape
        self._root = str(root)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self._first_shape

    def path(self, i: int) -> str:
        """Path of image ``i`` (a str: pathlib would intern every file name for the life of the process)."""
        return os.path.join(self._root, self.files[i])

    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray | list[np.ndarray]:
        """Decode the images at ``indices``: an (N, H, W[, C]) uint8 array, or a list if their sizes differ."""
        images = [self._decode(self.path(int(i))) for i in np.asarray(indices, dtype=np.int64)]
        if images and all(im.shape == images[0].shape for im in images):
            return np.stack(images)
        return images

    def _decode(self, path: str) -> np.ndarray:
        Image = _pil()
        try:
            with Image.open(path) as im:
                im.load()
                if im.mode in SIXTEEN_BIT_MODES:
                    return _sixteen_to_eight(np.asarray(im), path, self.mode)
                return np.asarray(im if im.mode == self.mode else im.convert(self.mode), dtype=np.uint8)
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for broken files
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(f"cannot read image {path}: {reason}") from None

    def subset(self, indices: np.ndarray, name: str) -> FileSplit:
        return FileSplit(self.root, self.files[indices], self.labels[indices], name, self.mode, self._first_shape)


def _visible(entries: list[os.DirEntry]) -> list[os.DirEntry]:
    return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def _scan(split_dir: Path, ignored: set[str] | None = None) -> dict[str, list[str]]:
    """Class folder name -> sorted image file names; non-image files are an error (hidden ones skipped).

    Hidden folders (``.git``), ``__MACOSX`` and folders without images are not classes: their names
    are added to ``ignored``.
    """
    classes: dict[str, list[str]] = {}
    ignored = set() if ignored is None else ignored
    with os.scandir(split_dir) as it:
        entries = list(it)
    ignored.update(e.name for e in entries if e.name.startswith(".") and e.is_dir())
    top = _visible(entries)
    stray = [e.name for e in top if e.is_file() and Path(e.name).suffix.lower() in IMAGE_SUFFIXES]
    for entry in top:
        if not entry.is_dir():
            continue
        if entry.name in IGNORED_FOLDERS:
            ignored.add(entry.name)
            continue
        with os.scandir(entry.path) as it:
            files = _visible(list(it))
        names = []
        for f in files:
            if f.is_dir():
                continue
            if Path(f.name).suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(f"not an image file: {Path(f.path)} (known suffixes: "
                                f"{', '.join(sorted(IMAGE_SUFFIXES))})")
            names.append(f.name)
        if names:
            classes[entry.name] = names
        else:
            ignored.add(entry.name)
    if not classes:
        folders = sum(1 for e in top if e.is_dir())
        if folders and not stray:
            raise DataError(f"{split_dir}: no images found in its {folders} sub-folder(s)")
        hint = f" ({len(stray)} images lie directly in it)" if stray else ""
        raise DataError(f"{split_dir} has no class sub-folders{hint}: put each class's images in its own folder")
    return classes


def _read_labels_file(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"labels file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"labels file {path} cannot be read: {exc}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(f"labels file {path} is empty")
    return [ln.strip() for ln in lines]


def _name_map(names: list[str], what: str) -> dict[str, int]:
    """Name -> index (position). A line may carry a description after the name (``n01440764 tench``)."""
    out: dict[str, int] = {}
    for i, name in enumerate(names):
        if not name:
            continue
        if name in out:
            raise DataError(f"{what}: class '{name}' appears twice (index {out[name]} and {i})")
        out[name] = i
    firsts: dict[str, int | None] = {}
    for i, name in enumerate(names):  # first token of a described line, unless it is a full name already
        first = name.split(maxsplit=1)[0] if name else ""
        if first and first != name and first not in out:
            firsts[first] = None if first in firsts else i  # None: two lines start with it
    for first, i in firsts.items():
        out[first] = -1 if i is None else i
    return out


def class_indices(folder_names: set[str], classes: list[str] | None, labels_file: Path | None,
                  ) -> tuple[dict[str, int], str, int]:
    """Map class folder names to indices; returns (map of the folders present, rule, num_classes).

    Order: an explicit ``classes`` list, a ``labels`` file (line number = index), folder names
    that are all integers (their value), else sorted folder names. Folder names that are mostly
    integers but not all are a :class:`DataError` naming the others (never a silent switch).
    """
    if classes is not None or labels_file is not None:
        names, what, rule = ((list(classes), "classes list", "classes-list") if classes is not None
                             else (_read_labels_file(labels_file), f"labels file {labels_file}", "labels-file"))
        table = _name_map(names, what)
        unknown = sorted(folder_names - table.keys())
        if unknown:
            more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
            raise DataError(f"class folder(s) {', '.join(repr(u) for u in unknown[:3])}{more} not in the "
                            f"{what} ({len(names)} names)")
        ambiguous = sorted(n for n in folder_names if table[n] < 0)
        if ambiguous:
            raise DataError(f"class folder '{ambiguous[0]}' matches the first word of several lines of the {what}")
        return {n: table[n] for n in sorted(folder_names)}, rule, len(names)
    odd = sorted(n for n in folder_names if not _INTEGER_NAME.match(n))
    if odd and len(odd) < len(folder_names) / 2:  # mostly integers: never switch to sorted names silently
        more = f" and {len(odd) - 5} more" if len(odd) > 5 else ""
        raise DataError(f"class folders are integer class indices except {', '.join(repr(n) for n in odd[:5])}{more}: "
                        "remove or rename those, or give classes = [...] or a labels file")
    if not odd:
        mapping = {n: int(n) for n in sorted(folder_names)}
        if len(set(mapping.values())) != len(mapping):
            dup = sorted(n for n in mapping if list(mapping.values()).count(mapping[n]) > 1)
            raise DataError(f"class folders {', '.join(dup)} name the same class index")
        return mapping, "integer-folder-names", max(mapping.values()) + 1
    ordered = sorted(folder_names)
    return {n: i for i, n in enumerate(ordered)}, "sorted-folder-names", len(ordered)


def _first_image(root: Path, files: np.ndarray, what: str) -> tuple[str, tuple[int, ...], bool]:
    """Colour mode, shape and whether it is 16-bit, from the first image's header (no pixel decoding)."""
    Image = _pil()
    path = root / files[0]
    try:
        with Image.open(path) as im:
            mode = "L" if im.mode in GREY_MODES else "RGB"
            sixteen = im.mode in SIXTEEN_BIT_MODES
            w, h = im.size
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for broken files
        raise DataError(f"cannot read image {path} ({what}): "
                        f"{str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    return mode, ((h, w) if mode == "L" else (h, w, 3)), sixteen


def describe_rule(rule: str, mapping: dict[str, int], labels_file: Path | None = None,
                  ignored: set[str] | None = None) -> str:
    """The class-index rule in words, with an example, as logged once and stored in ``dataset.class_index_rule``."""
    first = min(mapping, key=lambda n: (mapping[n], n)) if mapping else ""
    text = {"classes-list": f"position in the classes list ('{first}' is class {mapping.get(first)})",
            "labels-file": f"line number in {labels_file} (from 0; '{first}' is class {mapping.get(first)})",
            "integer-folder-names": f"integer folder names (folder '{first}' is class {mapping.get(first)})",
            "sorted-folder-names": f"sorted folder names ('{first}' is class 0 of {len(mapping)})"}.get(rule, rule)
    if ignored:
        shown = sorted(ignored)
        more = f" and {len(shown) - 5} more" if len(shown) > 5 else ""
        text += f"; not classes: {', '.join(shown[:5])}{more} (hidden, archive debris or without images)"
    return text


def _make_split(root: Path, scanned: dict[str, list[str]], mapping: dict[str, int], name: str, mode: str | None,
                ) -> tuple[FileSplit, str, bool]:
    files, labels = [], []
    for cls, names in scanned.items():
        files.extend(f"{cls}/{n}" for n in names)
        labels.extend([mapping[cls]] * len(names))
    arr = np.empty(len(files), dtype=object)
    arr[:] = files
    first_mode, shape, sixteen = _first_image(root, arr, name)
    mode = mode or first_mode
    if mode != first_mode:
        shape = shape[:2] if mode == "L" else (*shape[:2], 3)
    return FileSplit(root, arr, np.asarray(labels, dtype=np.int64), name, mode, shape), mode, sixteen


def _folder_hash(splits: list[FileSplit]) -> str:
    """sha256 over relative path, size and mtime of every image file used (cheap: stat only)."""
    h = hashlib.sha256()
    for split in splits:
        for i, rel in enumerate(split.files):
            st = os.stat(split.path(i))
            h.update(f"{split.root.name}/{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def open_folder(root: Path, spec: str | None = None, classes: list[str] | None = None,
                labels_file: Path | None = None) -> DataSource:
    """An image-folder tree with one sub-folder per class.

    Layouts: ``train/`` + ``test/`` (or ``val/``) as calibration and evaluation splits; only
    ``test/`` or ``val/``: a seeded held-out calibration slice of it; class folders directly under
    ``root``: a seeded 70/30 partition. Class indices: see :func:`class_indices`. Only paths and
    labels are held; images are decoded per batch by :meth:`FileSplit.read`.
    """
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    train_dir = root / "train" if (root / "train").is_dir() else None
    if train_dir is not None and test_dir is None:
        raise DataError(f"{root} has train/ but no test/ or val/ folder to evaluate on")
    dirs = [d for d in (train_dir, test_dir) if d is not None] or [root]
    ignored: set[str] = set()
    scanned = {d: _scan(d, ignored) for d in dirs}
    names = set().union(*(s.keys() for s in scanned.values()))
    ignored -= names  # a class folder empty in one split is still a class
    mapping, rule, num_classes = class_indices(names, classes, labels_file)
    base = root.name
    if train_dir is not None and test_dir is not None:
        cal, mode, sixteen = _make_split(train_dir, scanned[train_dir], mapping, f"{base}/train", None)
        ev, _, sixteen_ev = _make_split(test_dir, scanned[test_dir], mapping, f"{base}/{test_dir.name}", mode)
        sixteen = sixteen or sixteen_ev
        split = f"train/{test_dir.name}"
    elif test_dir is not None:
        whole, mode, sixteen = _make_split(test_dir, scanned[test_dir], mapping, f"{base}/{test_dir.name}", None)
        cal, ev, split = held_out(whole, base, f"{test_dir.name}/ images")
    else:
        whole, mode, sixteen = _make_split(root, scanned[root], mapping, base, None)
        cal, ev, split = partitioned(whole, base)
    info: dict[str, Any] = {"path": str(root), "split": split,
                            "color_mode": f"{mode}; {SIXTEEN_BIT_NOTE}" if sixteen else mode,
                            "class_index_rule": describe_rule(rule, mapping, labels_file, ignored)}
    if sixteen:  # part of the fingerprint: rows measured while 16-bit pixels were clipped no longer match
        info["pixel_scaling"] = SIXTEEN_BIT_NOTE
    if ignored:
        info["ignored_folders"] = sorted(ignored)
    if labels_file is not None:
        info["labels_file"] = str(labels_file)
    if rule in ("classes-list", "labels-file"):
        info["n_classes_listed"] = num_classes
    kept = [cal, ev]
    return DataSource(base, spec or f"folder:{root}", cal, ev, num_classes, info,
                      content_hash=lambda: _folder_hash(kept),
                      fingerprint_method="sha256 of relative paths, sizes and mtimes of the image files",
                      class_index=rule, class_map=mapping)
