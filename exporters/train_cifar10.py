"""Train the builtin ``cifar10_cnn`` (:class:`~quantbench.exporters.small_cnns.Cifar10CNN`) on CIFAR-10.

``python -m quantbench.exporters.train_cifar10 DIR`` (DIR holds ``train/`` and ``test/``, one sub-folder per
class, e.g. ``tar -xzf ../shared/data/cifar10-jpeg.tar.gz -C DIR``) writes ``exporters/assets/cifar10_cnn.pt``
(state_dict), ``cifar10_cnn.onnx`` (FP32, opset 17, BatchNorm folded) and ``cifar10_cnn.json`` (recipe,
accuracy, checksums). Needs torch and Pillow. The JPEGs are decoded once into a uint8 array in memory; that
is for training only, the benchmark reads the folder itself.

Recorded run (2026-12-02, 2-core Xeon shared with other jobs at a load average of 3-9, torch 2.14.1 CPU,
2 threads): ``python -m quantbench.exporters.train_cifar10 /tmp/cifar10`` — 4 epochs in 1433 s of wall
time (the last epoch, with the machine nearly free, took 70 s; about 5 minutes on two idle cores), then
``... --record-only``. FP32 top-1 on the 10,000 JPEG test images: 80.00 % (torch and the exported ONNX
under ONNX Runtime, same preprocessing as the harness); 81.60 % on the tests' 500-image subset (the first
50 sorted files of each class). Figures and checksums: ``assets/cifar10_cnn.json``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from .registry import ASSETS, CIFAR10, resolve_model

SEED, EPOCHS, BATCH, LR, WEIGHT_DECAY = 0, 4, 128, 0.1, 5e-4
NAME = "cifar10_cnn"
SUBSET_PER_CLASS = 50  # the tests' 500-image check: the first 50 test files (sorted names) of every class


def load_split(root: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode every image of ``root/<class>/*`` into (N, H, W, 3) uint8 plus labels (sorted class folders)."""
    from PIL import Image

    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    images, labels = [], []
    for index, cls in enumerate(classes):
        for f in sorted((root / cls).iterdir()):
            with Image.open(f) as im:
                images.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
            labels.append(index)
    return np.stack(images), np.asarray(labels, dtype=np.int64), classes


def first_per_class(labels: np.ndarray, per_class: int = SUBSET_PER_CLASS) -> np.ndarray:
    """Indices of the first ``per_class`` samples of every class (files are in sorted order per class)."""
    return np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)])


def record_onnx_accuracy(onnx_path: Path, x_test: np.ndarray, y_test: np.ndarray) -> dict[str, float]:
    """The ONNX model's top-1 on the whole test split and on the tests' 500-image subset."""
    sub = first_per_class(y_test)
    return {"onnx_test_accuracy": round(evaluate_onnx(onnx_path, x_test, y_test), 4),
            "onnx_test500_accuracy": round(evaluate_onnx(onnx_path, x_test[sub], y_test[sub]), 4)}


def evaluate_onnx(path: Path, images: np.ndarray, labels: np.ndarray, batch: int = 500) -> float:
    """Top-1 of an ONNX model under ONNX Runtime CPU, with the registry's preprocessing."""
    import onnxruntime as ort

    from quantbench.calibration_data import Preprocess

    pre = Preprocess.from_dict(CIFAR10)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    hits = 0
    for i in range(0, len(images), batch):
        logits = sess.run(None, {sess.get_inputs()[0].name: pre.apply(images[i:i + batch])})[0]
        hits += int((logits.argmax(1) == labels[i:i + batch]).sum())
    return hits / len(images)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="folder with train/ and test/ (one sub-folder per class)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--record-only", action="store_true",
                        help="do not train: re-measure the shipped ONNX on DIR/test and update the .json")
    args = parser.parse_args(argv)
    if args.record_only:
        x_test, y_test, _ = load_split(args.data / "test")
        meta_path = ASSETS / f"{NAME}.json"
        meta = json.loads(meta_path.read_text())
        meta.update(record_onnx_accuracy(ASSETS / f"{NAME}.onnx", x_test, y_test))
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
        print(json.dumps(meta, indent=1))
        return 0

    import torch
    from torch import nn

    from quantbench.calibration_data import Preprocess

    from .small_cnns import Cifar10CNN
    from .torch_export import export_onnx

    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(SEED)
    t0 = time.time()
    x_train, y_train, classes = load_split(args.data / "train")
    x_test, y_test, test_classes = load_split(args.data / "test")
    if classes != test_classes or len(classes) != 10:
        raise SystemExit("error: expected the same 10 class folders in train/ and test/, "
                         f"got {classes} / {test_classes}")
    print(f"decoded {len(x_train)} train / {len(x_test)} test images in {time.time() - t0:.0f} s")

    pre = Preprocess.from_dict(CIFAR10)
    model = Cifar10CNN().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, nesterov=True, weight_decay=WEIGHT_DECAY)
    steps = EPOCHS * -(-len(x_train) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps, pct_start=0.25)
    loss_fn = nn.CrossEntropyLoss()
    t_train = time.time()
    acc = 0.0
    for epoch in range(EPOCHS):
        model.train()
        perm = rng.permutation(len(x_train))
        for i in range(0, len(perm), BATCH):
            idx = perm[i:i + BATCH]
            batch = x_train[idx]
            flip = rng.random(len(idx)) < 0.5  # random horizontal flips: the only augmentation
            batch[flip] = batch[flip, :, ::-1]
            x = torch.from_numpy(pre.apply(batch)).contiguous(memory_format=torch.channels_last)
            opt.zero_grad()
            loss = loss_fn(model(x), torch.from_numpy(y_train[idx]))
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        hits = 0
        with torch.no_grad():
            for i in range(0, len(x_test), 500):
                hits += int((model(torch.from_numpy(pre.apply(x_test[i:i + 500]))).argmax(1).numpy()
                             == y_test[i:i + 500]).sum())
        acc = hits / len(x_test)
        print(f"epoch {epoch + 1}/{EPOCHS}: loss {loss.item():.3f}, test accuracy {acc:.4f} "
              f"({time.time() - t_train:.0f} s)", flush=True)
    train_seconds = time.time() - t_train

    ASSETS.mkdir(parents=True, exist_ok=True)
    model = model.to(memory_format=torch.contiguous_format)
    torch.save(model.state_dict(), ASSETS / f"{NAME}.pt")
    # Export from a fresh in-registry load (not the training object), as the harness would.
    spec = resolve_model(NAME, weights=str(ASSETS / f"{NAME}.pt"))
    onnx_path = export_onnx(spec, ASSETS / f"{NAME}.onnx")
    onnx_figures = record_onnx_accuracy(onnx_path, x_test, y_test)
    recipe = {
        "model": f"{NAME} (Cifar10CNN)",
        "dataset": "CIFAR-10 JPEG (../shared/data/cifar10-jpeg.tar.gz), 50000 train / 10000 test",
        "classes": classes, "seed": SEED, "epochs": EPOCHS, "batch": BATCH,
        "optimizer": f"SGD nesterov momentum=0.9 weight_decay={WEIGHT_DECAY}, OneCycle max_lr={LR}",
        "augmentation": "random horizontal flip", "preprocess": CIFAR10,
        "test_accuracy": round(acc, 4), **onnx_figures,
        "train_seconds": round(train_seconds, 1), "threads": args.threads, "torch": torch.__version__,
        "command": "python -m quantbench.exporters.train_cifar10 DIR",
        "sha256": {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                   for p in (ASSETS / f"{NAME}.pt", onnx_path)},
    }
    (ASSETS / f"{NAME}.json").write_text(json.dumps(recipe, indent=1) + "\n")
    print(f"wrote {ASSETS}: test accuracy {acc:.4f} (torch), {onnx_figures['onnx_test_accuracy']:.4f} (ONNX Runtime); "
          f"training {train_seconds:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
