"""``quantbench train`` and exporting nets with adaptive pooling at small inputs (real torch models and data)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from quantbench.exporters.registry import resolve_model

pytestmark = pytest.mark.torch


def stripes_npz(path: Path, n_train: int = 256, n_test: int = 128, side: int = 12, seed: int = 0) -> Path:
    """Two classes a small CNN learns in a few dozen steps: horizontal (0) vs vertical (1) stripes, noisy."""
    rng = np.random.default_rng(seed)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 2, n)
        stripes = (np.arange(side) % 2 == 0).astype(np.float64)
        x = np.where(y[:, None, None] == 0, stripes[None, :, None], stripes[None, None, :]) * 160
        x = np.clip(x + rng.normal(0, 40, (n, side, side)) + 40, 0, 255).astype(np.uint8)
        return x, y.astype(np.int64)

    (xa, ya), (xb, yb) = make(n_train), make(n_test)
    np.savez(path, x_train=xa, y_train=ya, x_test=xb, y_test=yb)
    return path


def test_exact_adaptive_pool_equals_torch_at_sizes_the_exporter_refuses():
    import torch

    from quantbench.exporters.adaptive_pool import ExactAdaptiveAvgPool2d

    for (h, w), (oh, ow) in [((1, 1), (7, 7)), ((5, 3), (7, 2)), ((10, 10), (7, 7)), ((3, 9), (2, 4))]:
        x = torch.randn(2, 3, h, w)
        ref = torch.nn.AdaptiveAvgPool2d((oh, ow))(x)
        torch.testing.assert_close(ExactAdaptiveAvgPool2d((oh, ow), (h, w))(x), ref, rtol=1e-5, atol=1e-6)


def pool7_net():
    """A module: model whose 7×7 adaptive pool sees a 5×5 map at 10×10 inputs (not a factor: unexportable as is)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d((7, 7)),
                         nn.Flatten(), nn.Linear(4 * 49, 3))


@pytest.mark.ort_cpu
def test_net_with_non_factor_adaptive_pool_exports_and_matches_torch(tmp_path):
    import onnxruntime as ort
    import torch

    from quantbench.exporters.torch_export import export_onnx

    src = resolve_model(f"module:{__name__}:pool7_net", input_shape=(1, 10, 10))
    path = export_onnx(src, tmp_path / "pool7.onnx")
    x = torch.randn(3, 1, 10, 10)
    with torch.no_grad():
        ref = pool7_net().eval()(x).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_vgg16_classifier_follows_a_small_input_and_stays_torchvisions_at_224():
    from quantbench.exporters.torch_models import build_module

    small = build_module(resolve_model("vgg16", weights="random", input_shape=(3, 32, 32), num_classes=10))
    assert small.classifier[0].in_features == 512  # the 1×1×512 map, not 49 copies of it
    import torch

    with torch.no_grad():
        assert small(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    big = build_module(resolve_model("vgg16", weights="random", num_classes=10))
    assert big.classifier[0].in_features == 512 * 7 * 7


def test_alexnet_too_small_input_is_one_line_error():
    from quantbench.exporters.torch_models import build_module

    with pytest.raises(ValueError, match="AlexNet cannot take 32×32 inputs"):
        build_module(resolve_model("alexnet", weights="random", input_shape=(3, 32, 32), num_classes=10))


@pytest.mark.slow
@pytest.mark.ort_cpu
def test_vgg16_exports_at_32x32_and_matches_torch(tmp_path):
    import onnxruntime as ort
    import torch

    from quantbench.exporters.torch_export import export_onnx
    from quantbench.exporters.torch_models import build_module

    src = resolve_model("vgg16", weights="random", input_shape=(3, 32, 32), num_classes=10)
    path = export_onnx(src, tmp_path / "vgg16.onnx")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = build_module(src)(x).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_train_cli_learns_and_writes_a_state_dict_the_registry_loads(tmp_path, capsys):
    import torch

    from quantbench.exporters.torch_models import build_module
    from quantbench.harness.cli import main

    data = stripes_npz(tmp_path / "stripes.npz")
    out = tmp_path / "w" / "mnist_cnn.pt"
    rc = main(["train", "mnist_cnn", "--data", f"npz:{data}", "--input-size", "12", "--max-steps", "40",
               "--batch", "32", "--seed", "3", "-q", "-o", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    recipe = json.loads(out.with_suffix(".json").read_text())
    assert recipe["steps"] == 40 and recipe["settings"]["seed"] == 3 and recipe["n_train"] == 256
    assert recipe["torch_top1"] > 0.9, recipe  # chance is 0.5
    assert recipe["models_table"]["input_shape"] == [1, 12, 12] and 'input_shape = [1, 12, 12]' in printed
    # The file loads where a [[models]] table names it, and the loaded net scores what training reported.
    src = resolve_model("mnist_cnn", weights=str(out), input_shape=(1, 12, 12), num_classes=2)
    net = build_module(src)
    from quantbench.calibration_data import Preprocess, open_source
    from quantbench.exporters.train import evaluate_top1

    source = open_source(f"npz:{data}")
    top1, _ = evaluate_top1(net, source.evaluation, Preprocess.from_dict(src.preprocess), 1000)
    assert top1 == pytest.approx(recipe["torch_top1"], abs=1e-4)
    # Seeded: the same command gives the same weights.
    again = tmp_path / "again.pt"
    assert main(["train", "mnist_cnn", "--data", f"npz:{data}", "--input-size", "12", "--max-steps", "40",
                 "--batch", "32", "--seed", "3", "-q", "-o", str(again)]) == 0
    a, b = torch.load(out, weights_only=True), torch.load(again, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_train_epochs_and_max_steps_set_the_length():
    from quantbench.exporters.train import TrainSettings

    assert TrainSettings(batch=32).total_steps(100) == 4  # one epoch by default
    assert TrainSettings(epochs=3, batch=32).total_steps(100) == 12
    assert TrainSettings(epochs=3, max_steps=5, batch=32).total_steps(100) == 5
    assert TrainSettings(max_steps=50, batch=32).total_steps(100) == 50


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "epochs must be an integer >= 1"),
    (["--lr", "-1"], "lr must be a number"),
    (["--input-size", "2"], "--input-size must be >= 8"),
])
def test_train_bad_settings_are_one_line_errors(tmp_path, capsys, argv, message):
    from quantbench.harness.cli import main

    data = stripes_npz(tmp_path / "s.npz", n_train=8, n_test=8)
    rc = main(["train", "mnist_cnn", "--data", f"npz:{data}", "-q", "-o", str(tmp_path / "x.pt"), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.pt").exists()


def test_train_refuses_an_onnx_file(tmp_path, capsys):
    from quantbench.exporters.registry import ASSETS
    from quantbench.harness.cli import main

    data = stripes_npz(tmp_path / "s.npz", n_train=8, n_test=8)
    rc = main(["train", str(ASSETS / "fashion_cnn.onnx"), "--data", f"npz:{data}", "-q", "-o", str(tmp_path / "x.pt")])
    assert rc == 2 and "takes registry models" in capsys.readouterr().err
