"""Open a data source by spec: a calibration split and an evaluation split that never overlap.

A spec is a string (``fashion-mnist``, ``fashion-mnist-subset``, ``digits``, ``idx:DIR``,
``folder:DIR``, ``npz:FILE``) or a dict ``{"spec": "folder:DIR", "classes": [...], "labels": "FILE"}``.
Paths expand ``~`` and ``$VARS``. The readers live in :mod:`.idx`, :mod:`.folders` and :mod:`.npz`.
"""
from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .base import ArraySplit, DataError, DataSource, Split, partitioned
from .folders import IMAGE_SUFFIXES, FileSplit, open_folder
from .idx import DEBIAN_FASHION_MNIST, SHIPPED, open_fashion_mnist, open_idx, read_idx, write_idx
from .npz import open_npz

__all__ = ["DEBIAN_FASHION_MNIST", "IMAGE_SUFFIXES", "KINDS", "PATH_KINDS", "SHIPPED", "ArraySplit", "DataError",
           "DataSource", "FileSplit", "Split", "absolute_path", "absolute_spec", "check_spec", "expand_path",
           "open_digits", "open_folder", "open_idx", "open_npz", "open_source", "read_idx", "write_idx"]

KINDS = ("fashion-mnist", "fashion-mnist-subset", "idx:DIR", "digits", "folder:DIR", "npz:FILE")
DICT_KEYS = ("spec", "classes", "labels", "class_subset", "restrict_outputs")
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def expand_path(text: str, spec: str) -> Path:
    """``~`` and ``$VAR``/``${VAR}`` expanded; an unset variable is a :class:`DataError` naming it."""
    unset = [a or b for a, b in _VAR.findall(text) if (a or b) not in os.environ]
    if unset:
        raise DataError(f"environment variable {unset[0]} is not set (used in data source '{spec}')")
    return Path(os.path.expanduser(os.path.expandvars(text)))


PATH_KINDS = ("idx", "mnist", "folder", "npz")  # spec kinds whose argument is a path


def absolute_path(text: str, base: str | os.PathLike) -> str:
    """``text`` made absolute against ``base`` if it is relative: the way every path in a config is resolved.

    ``~`` and ``$VARS`` are expanded to judge; a spelling that expands to an absolute path, or names
    an unset variable, is kept as written (it is expanded, or reported, when opened).
    """
    expanded = os.path.expanduser(os.path.expandvars(text))
    if os.path.isabs(expanded) or "$" in expanded or not text.strip():
        return text
    return os.path.abspath(os.path.join(os.fspath(base), expanded))


def absolute_spec(spec: Any, base: str | os.PathLike) -> Any:
    """A data source spec (string or table) with its paths made absolute (:func:`absolute_path`)."""
    if isinstance(spec, str):
        kind, sep, arg = spec.partition(":")
        return f"{kind}:{absolute_path(arg, base)}" if sep and arg and kind in PATH_KINDS else spec
    if isinstance(spec, Mapping):
        out = dict(spec)
        if isinstance(out.get("spec"), str):
            out["spec"] = absolute_spec(out["spec"], base)
        if isinstance(out.get("labels"), str):
            out["labels"] = absolute_path(out["labels"], base)
        return out
    return spec


def open_digits() -> DataSource:
    """scikit-learn's 8×8 digits (values 0..16 scaled to uint8), split 70/30 with a fixed seed."""
    try:
        import sklearn
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("the 'digits' data set needs scikit-learn: pip install .[data]") from None
    d = load_digits()
    images = np.clip(d.images * (255.0 / 16.0), 0, 255).round().astype(np.uint8)
    cal, ev, split = partitioned(ArraySplit(images, d.target, "digits/all"), "digits")

    def content() -> str:
        return hashlib.sha256(images.tobytes() + d.target.astype(np.int64).tobytes()
                              + sklearn.__version__.encode()).hexdigest()

    return DataSource("digits", "digits", cal, ev, 10,
                      {"variant": "full", "license": "CC BY 4.0 (UCI)", "split": split,
                       "sklearn": sklearn.__version__},
                      content_hash=content, fingerprint_method="sha256 of the arrays and the scikit-learn version")


def _parse_dict(spec: Mapping[str, Any]) -> tuple[str, list[str] | None, str | None]:
    for key in spec:
        if key not in DICT_KEYS:
            close = difflib.get_close_matches(str(key), DICT_KEYS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (valid: {', '.join(DICT_KEYS)})"
            raise DataError(f"unknown data source key '{key}'{hint}")
    text = spec.get("spec")
    if not isinstance(text, str) or not text:
        raise DataError("a data source table needs 'spec', e.g. {spec = \"folder:DIR\"}")
    classes, labels = spec.get("classes"), spec.get("labels")
    if classes is not None:
        if isinstance(classes, (str, bytes)) or not isinstance(classes, (list, tuple)) or not classes:
            raise DataError(f"data source '{text}': classes must be a non-empty list of class folder names")
        if not all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in classes):
            raise DataError(f"data source '{text}': classes must be folder names (strings)")
        classes = [str(c) for c in classes]
    if labels is not None and (not isinstance(labels, str) or not labels):
        raise DataError(f"data source '{text}': labels must be the path of a file with one class name per line")
    if classes is not None and labels is not None:
        raise DataError(f"data source '{text}': give either classes or labels, not both")
    subset = spec.get("class_subset")
    if subset is not None and (not isinstance(subset, (list, tuple)) or not subset or len(set(subset)) != len(subset)
                               or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in subset)):
        raise DataError(f"data source '{text}': class_subset must be a non-empty list of distinct class indices >= 0")
    if not isinstance(spec.get("restrict_outputs", False), bool):
        raise DataError(f"data source '{text}': restrict_outputs must be true or false")
    return text, classes, labels


def _parse(spec: Any) -> tuple[str, str, str, list[str] | None, str | None]:
    """(kind, argument, text, classes, labels) of a spec, checked without opening anything."""
    if isinstance(spec, Mapping):
        text, classes, labels = _parse_dict(spec)
    elif isinstance(spec, str):
        text, classes, labels = spec, None, None
    else:
        raise DataError(f"a data source is a string or a table with 'spec', not {type(spec).__name__}")
    kind, _, arg = text.partition(":")
    if (classes is not None or labels is not None) and kind != "folder":
        raise DataError(f"data source '{text}': classes/labels apply to folder: sources only "
                        "(other sources carry numeric labels)")
    if not (kind in ("fashion-mnist", "fashion-mnist-subset", "digits") and not arg
            or kind in PATH_KINDS and arg):
        close = difflib.get_close_matches(kind, [k.split(":")[0] for k in KINDS], n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise DataError(f"unknown data source '{text}'{hint} (known: {', '.join(KINDS)})")
    return kind, arg, text, classes, labels


def check_spec(spec: Any) -> None:
    """Check a spec as a config check can, before anything runs: its form, and that a ``labels`` file
    exists. The data itself is opened (and its problems reported per model) when the model is prepared."""
    _, _, text, _, labels = _parse(spec)
    if labels is not None and not expand_path(labels, text).is_file():
        raise DataError(f"data source '{text}': labels file not found: {labels}")


def open_source(spec: str | Mapping[str, Any]) -> DataSource:
    """Open a data source by spec (see the module docstring); bad specs raise a one-line :class:`DataError`.

    A table's ``class_subset = [i, ...]`` keeps only the images of those class indices in both splits
    (a subset task; the class indices, and so the model's outputs, stay those of the whole set).
    """
    source = _open(spec)
    subset = spec.get("class_subset") if isinstance(spec, Mapping) else None
    return with_class_subset(source, subset) if subset else source


def with_class_subset(source: DataSource, subset: list[int]) -> DataSource:
    """``source`` with only the images whose label is in ``subset`` (both splits; indices unchanged)."""
    keep = sorted(int(c) for c in subset)
    present = set(np.unique(np.concatenate([source.calibration.labels, source.evaluation.labels])).tolist())
    missing = [c for c in keep if c not in present]
    if missing:
        raise DataError(f"data source '{source.spec}': class_subset names class(es) {missing} it has no images of")
    for attr in ("calibration", "evaluation"):
        split = getattr(source, attr)
        idx = np.flatnonzero(np.isin(split.labels, keep))
        setattr(source, attr, split.subset(idx, f"{split.name}[classes {','.join(map(str, keep))}]"))
    source.info = {**source.info, "class_subset": keep,
                   "split": f"{source.info.get('split', '')} | class_subset {keep}"}
    return source


def restricted_classes(spec: Any, source: DataSource) -> list[int] | None:
    """The output indices a ``restrict_outputs = true`` table restricts top-1/top-5 to: its ``class_subset``,
    else every class the data holds (labels of both splits); None when the table does not ask for it."""
    if not (isinstance(spec, Mapping) and spec.get("restrict_outputs")):
        return None
    if spec.get("class_subset"):
        return sorted(int(c) for c in spec["class_subset"])
    labels = np.concatenate([source.calibration.labels, source.evaluation.labels])
    return sorted(int(c) for c in np.unique(labels))


def _open(spec: str | Mapping[str, Any]) -> DataSource:
    kind, arg, text, classes, labels = _parse(spec)
    if kind == "fashion-mnist":
        return open_fashion_mnist(prefer_full=True)
    if kind == "fashion-mnist-subset":
        return open_fashion_mnist(prefer_full=False)
    if kind == "digits":
        return open_digits()
    if kind in ("idx", "mnist"):
        path = expand_path(arg, text)
        return open_idx(path, path.name, text)
    if kind == "folder":
        return open_folder(expand_path(arg, text), text, classes,
                           expand_path(labels, text) if labels is not None else None)
    return open_npz(expand_path(arg, text), text)
