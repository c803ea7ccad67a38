"""Checks of a ``[[models]]`` table's data and preprocessing values, by the data layer's own rules."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import ConfigError, first_line
from .validate import bad, check_keys, conforms

DATA_SPEC_KEYS = {"spec", "classes", "labels", "class_subset", "restrict_outputs"}


def expand_path(path: str) -> Path:
    """``$VARS`` and ``~`` expanded."""
    return Path(os.path.expandvars(path)).expanduser()


def is_onnx_name(name: str) -> bool:
    """A model name that is a path to an ONNX file (as ``exporters.registry`` classifies it)."""
    return not name.startswith(("module:", "torchvision:")) and Path(name).suffix == ".onnx"


def check_data_spec(spec: Any, key: str, where: str) -> None:
    """A ``dataset`` / ``calib_dataset`` value: a non-empty spec string or a table of the known keys."""
    what = f"{where}{key}"
    keys = f"models.{key}"
    if spec is None:
        return
    if isinstance(spec, str):
        if not spec.strip():
            raise ConfigError(f"{what} is empty", keys=keys)
        return
    check_keys(spec, DATA_SPEC_KEYS, f"the {key} table of {where.rstrip(': ')}")
    if not isinstance(spec.get("spec"), str) or not spec["spec"].strip():
        raise ConfigError(f"{what} needs 'spec', a data source such as \"folder:DIR\"", keys=keys)
    if "classes" in spec and not conforms(spec["classes"], list[str]):
        raise bad(f"{what}.", "classes", "a list of strings", spec["classes"], keys)
    if "labels" in spec and not isinstance(spec["labels"], str):
        raise bad(f"{what}.", "labels", "a string (a file path)", spec["labels"], keys)
    if "class_subset" in spec and not (conforms(spec["class_subset"], list[int]) and spec["class_subset"]
                                       and all(c >= 0 for c in spec["class_subset"])):
        raise bad(f"{what}.", "class_subset", "a non-empty list of class indices >= 0", spec["class_subset"], keys)
    if "restrict_outputs" in spec and not isinstance(spec["restrict_outputs"], bool):
        raise bad(f"{what}.", "restrict_outputs", "true or false", spec["restrict_outputs"], keys)


def check_effective_spec(spec: Any, key: str, where: str) -> None:
    """The data source a model will open, checked by the data layer's own rules (form, labels file)."""
    from quantbench.calibration_data import DataError, check_spec

    try:
        check_spec(spec)
    except DataError as exc:
        raise ConfigError(f"{where}{key}: {first_line(exc)}", keys=f"models.{key}") from None


def check_preprocess(table: dict[str, Any], where: str) -> None:
    """Key by key, with :meth:`Preprocess.check_table` (the one validator; keys left out keep the model's
    defaults, so checks across keys finish when the table is merged, in harness.sweep.prepare)."""
    from quantbench.calibration_data import Preprocess

    from .validate import field_names

    check_keys(table, field_names(Preprocess), f"the preprocess table of {where.rstrip(': ')}")
    try:
        Preprocess.check_table(table)
    except (ValueError, TypeError) as exc:  # DataError is a ValueError
        raise ConfigError(f"{where}{first_line(exc)}", keys="models.preprocess") from None
