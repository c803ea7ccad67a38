"""Train a registry model on a data source (``quantbench train``) and save a state_dict for ``weights = FILE``.

The network is the one the registry builds for the same name, input shape and class count (so the file
loads where a ``[[models]]`` table names it with the same ``input_shape``), trained from a seeded random
initialisation with Adam on the source's training split (its calibration split: ``train/``, the IDX
training files, or the held-out slice of a test-only set), preprocessed exactly as the harness
preprocesses that model's inputs. Beside ``FILE`` goes ``FILE`` with suffix ``.json``: the recipe, the
``[[models]]`` keys that load it, the torch top-1 on the evaluation split and the training time.

The helpers :func:`training_batches`, :func:`run_steps` and :func:`evaluate_top1` are shared with QAT
(:mod:`.qat_model`).
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .registry import ModelSource, resolve_model

Progress = Callable[[int, int, float], None]  # (step, total steps, last loss)


@dataclass(frozen=True)
class TrainSettings:
    """How long and how to train: ``max_steps`` caps ``epochs`` (one epoch when neither is given)."""

    epochs: int | None = None
    max_steps: int | None = None
    batch: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("epochs", "max_steps"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{key} must be an integer >= 1, not {value!r}")
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise ValueError(f"batch must be an integer >= 1, not {self.batch!r}")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < 10):
            raise ValueError(f"lr must be a number in (0, 10), not {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, not {self.weight_decay!r}")

    def total_steps(self, n_train: int) -> int:
        """Optimizer steps for ``n_train`` training images."""
        per_epoch = -(-n_train // self.batch)
        if self.epochs is None and self.max_steps is not None:
            return self.max_steps
        total = (self.epochs or 1) * per_epoch
        return min(total, self.max_steps) if self.max_steps is not None else total


def training_batches(split: Any, preprocess: Any, batch: int, seed: int, total: int) -> Iterator[tuple[Any, Any]]:
    """``total`` batches ``(x, y)`` as torch tensors: a seeded reshuffle of ``split`` every epoch, read and
    preprocessed per batch (memory does not grow with an image folder)."""
    import torch

    rng = np.random.default_rng(seed)
    step = 0
    while step < total:
        perm = rng.permutation(len(split))
        for i in range(0, len(perm), batch):
            if step >= total:
                return
            idx = np.sort(perm[i:i + batch])
            x = preprocess.apply(split.read(idx))
            yield torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(
                np.asarray(split.labels[idx], dtype=np.int64))
            step += 1


def run_steps(module: Any, batches: Iterator[tuple[Any, Any]], total: int, optimizer: Any, *,
              progress: Progress | None = None, on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train ``module`` for the batches given (cross-entropy); returns steps, final loss and seconds."""
    import torch

    loss_fn = torch.nn.CrossEntropyLoss()
    module.train()
    step, loss_value, t0 = 0, float("nan"), time.perf_counter()
    for x, y in batches:
        if on_step is not None:
            on_step(step)
        optimizer.zero_grad()
        loss = loss_fn(module(x), y)
        if not torch.isfinite(loss):
            raise ValueError(f"training diverged at step {step + 1} (loss {loss.item()}): lower the learning rate")
        loss.backward()
        optimizer.step()
        step += 1
        loss_value = float(loss.item())
        if progress is not None:
            progress(step, total, loss_value)
    module.eval()
    return {"steps": step, "final_loss": round(loss_value, 4), "train_seconds": round(time.perf_counter() - t0, 1)}


def evaluate_top1(module: Any, split: Any, preprocess: Any, n: int | None, batch: int = 256,
                  seed: int = 0) -> tuple[float, int]:
    """Top-1 of ``module`` in torch on ``n`` images of ``split`` (the harness's class-balanced selection)."""
    import torch

    idx = split.select(min(n, len(split)) if n else None, seed=seed)
    hits = 0
    module.eval()
    with torch.no_grad():
        for i in range(0, len(idx), batch):
            part = idx[i:i + batch]
            x = torch.from_numpy(np.ascontiguousarray(preprocess.apply(split.read(part)), dtype=np.float32))
            hits += int((module(x).argmax(1).numpy() == split.labels[part]).sum())
    return hits / max(1, len(idx)), len(idx)


def model_for_data(model: str, source: Any, input_size: int | None = None, channels: int | None = None,
                   weights: str = "random") -> ModelSource:
    """The registry's :class:`ModelSource` for ``model`` with the data's class count and the input size asked."""
    spec = resolve_model(model, weights=weights, num_classes=source.num_classes)
    if input_size is not None or channels is not None:
        c, h, w = spec.input_shape
        size = (input_size, input_size) if input_size is not None else (h, w)
        spec = resolve_model(model, weights=weights, num_classes=source.num_classes,
                             input_shape=(channels or c, *size))
    return spec


def train(model: str, data: str | Mapping[str, Any], out: Path, settings: TrainSettings, *,
          input_size: int | None = None, channels: int | None = None, eval_samples: int | None = 1000,
          threads: int = 0, progress: Progress | None = None,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``model`` on ``data`` and write the state_dict ``out`` and its ``.json`` recipe; returns the recipe."""
    import torch

    from quantbench.calibration_data import Preprocess, open_source

    from .torch_models import construct_module

    if threads:
        torch.set_num_threads(threads)
    source = open_source(data)
    spec = model_for_data(model, source, input_size, channels)
    if spec.kind not in ("builtin", "torchvision"):
        raise ValueError(f"quantbench train takes registry models (quantbench models), not '{model}'")
    pre = Preprocess.from_dict(spec.preprocess)
    train_split = source.calibration
    if len(train_split) == 0:
        raise ValueError(f"data source '{source.spec}' has no training images")
    if int(np.max(train_split.labels)) >= source.num_classes:
        raise ValueError(f"labels reach {int(np.max(train_split.labels))} "
                         f"but the data has {source.num_classes} classes")
    torch.manual_seed(settings.seed)
    module = construct_module(spec)
    total = settings.total_steps(len(train_split))
    log(f"training {spec.name} {list(spec.input_shape)} ({sum(p.numel() for p in module.parameters()):,} parameters) "
        f"on {source.spec}: {len(train_split)} training images, {total} steps of {settings.batch}")
    optimizer = torch.optim.Adam(module.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    ran = run_steps(module, training_batches(train_split, pre, settings.batch, settings.seed, total), total,
                    optimizer, progress=progress)
    top1, n_eval = evaluate_top1(module, source.evaluation, pre, eval_samples)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.with_name(out.name + ".tmp")
    torch.save(module.state_dict(), staged)
    staged.replace(out)
    recipe = {
        "model": spec.name, "kind": spec.kind, "data": source.spec, "data_fingerprint": source.fingerprint,
        "n_train": len(train_split), "settings": asdict(settings), "optimizer": "Adam", "loss": "cross-entropy",
        "augmentation": "none", "init": f"seeded random (torch.manual_seed({settings.seed}))", **ran,
        "torch_top1": round(top1, 4), "eval_samples": n_eval, "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "models_table": {"name": spec.name, "weights": str(out), "dataset": source.spec,
                         "input_shape": list(spec.input_shape), "num_classes": spec.num_classes},
        "preprocess": spec.preprocess, "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
    }
    out.with_suffix(".json").write_text(json.dumps(recipe, indent=1) + "\n")
    return recipe


def models_table_toml(recipe: Mapping[str, Any]) -> str:
    """The ``[[models]]`` table that benchmarks a trained file (what ``quantbench train`` prints)."""
    t = recipe["models_table"]
    return (f'[[models]]\nname = "{t["name"]}"\nweights = "{t["weights"]}"\ndataset = "{t["dataset"]}"\n'
            f'input_shape = {t["input_shape"]}\nnum_classes = {t["num_classes"]}\n')
