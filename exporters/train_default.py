"""Train the embedded default model: the Fashion-MNIST "Normal CNN", on the full Fashion-MNIST.

``python -m quantbench.exporters.train_default`` writes ``exporters/assets/fashion_cnn.pt`` (state_dict),
``fashion_cnn.onnx`` (FP32, opset 17) and ``fashion_cnn.json`` (recipe, accuracy, checksums).
Needs the Debian package ``dataset-fashion-mnist`` and torch.
"""
from __future__ import annotations

import hashlib
import json
import time

import numpy as np

from .registry import ASSETS, resolve_model

SEED, EPOCHS, BATCH, LR = 0, 4, 128, 1e-3


def main() -> int:
    import torch
    from torch import nn

    from quantbench.calibration_data import Preprocess, open_source

    from .small_cnns import FashionNormalCNN
    from .torch_export import export_onnx

    torch.manual_seed(SEED)
    np.random.seed(SEED)
    source = open_source("fashion-mnist")
    if source.info.get("variant") != "full":
        raise SystemExit("training needs the full Fashion-MNIST: apt-get install dataset-fashion-mnist")
    spec = resolve_model("fashion_cnn", weights="random")
    pre = Preprocess.from_dict(spec.preprocess)
    train, test = source.calibration, source.evaluation
    x_train = torch.from_numpy(pre.apply(train.images))
    y_train = torch.from_numpy(train.labels)
    x_test = torch.from_numpy(pre.apply(test.images))
    model = FashionNormalCNN()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    t0 = time.time()
    gen = torch.Generator().manual_seed(SEED)
    for epoch in range(EPOCHS):
        model.train()
        perm = torch.randperm(len(x_train), generator=gen)
        for i in range(0, len(perm), BATCH):
            idx = perm[i:i + BATCH]
            opt.zero_grad()
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = float((model(x_test).argmax(1).numpy() == test.labels).mean())
        print(f"epoch {epoch + 1}/{EPOCHS}: loss {loss.item():.3f}, test accuracy {acc:.4f} ({time.time() - t0:.0f} s)")
    ASSETS.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), ASSETS / "fashion_cnn.pt")
    onnx_path = export_onnx(resolve_model("fashion_cnn"), ASSETS / "fashion_cnn.onnx")
    recipe = {
        "model": "fashion_cnn (FashionNormalCNN)", "dataset": "Fashion-MNIST, full 60000 train / 10000 test",
        "seed": SEED, "epochs": EPOCHS, "batch": BATCH, "optimizer": f"Adam lr={LR}",
        "preprocess": spec.preprocess, "test_accuracy": round(acc, 4), "train_seconds": round(time.time() - t0, 1),
        "torch": torch.__version__,
        "sha256": {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                   for p in (ASSETS / "fashion_cnn.pt", onnx_path)},
    }
    (ASSETS / "fashion_cnn.json").write_text(json.dumps(recipe, indent=1) + "\n")
    print(f"wrote {ASSETS}: test accuracy {acc:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
