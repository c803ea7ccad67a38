"""The shipped CIFAR-10 CNN: registry defaults, its FP32 ONNX, and its accuracy on real CIFAR-10 images."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from quantbench.exporters.artifacts import ArtifactStore
from quantbench.exporters.onnx_info import onnx_output_info
from quantbench.exporters.registry import ASSETS, CIFAR10, resolve_model

from ..conftest import CIFAR10_TARBALL

TARBALL = CIFAR10_TARBALL  # ../shared/data/cifar10-jpeg.tar.gz: tests that read it are marked shared_data
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cifar10_ptq.toml"
RECORD = json.loads((ASSETS / "cifar10_cnn.json").read_text())
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_registry_defaults():
    src = resolve_model("cifar10_cnn")
    assert tuple(src.input_shape) == (3, 32, 32)
    assert src.num_classes == 10
    assert src.preprocess == CIFAR10
    assert src.weights_label() == "trained:cifar10_cnn.pt"
    assert RECORD["classes"] == CLASSES


@pytest.mark.ort_cpu
def test_shipped_onnx_is_used_and_outputs_ten_logits(tmp_path):
    import onnxruntime as ort

    fp32 = ArtifactStore(tmp_path).fp32(resolve_model("cifar10_cnn"))
    assert fp32.path == ASSETS / "cifar10_cnn.onnx"  # no torch export needed
    assert list(tmp_path.iterdir()) == []
    [(_, dims, _)] = onnx_output_info(fp32.path)
    assert list(dims) == [10]
    sess = ort.InferenceSession(str(fp32.path), providers=["CPUExecutionProvider"])
    for n in (1, 7):
        x = np.random.default_rng(n).standard_normal((n, 3, 32, 32)).astype(np.float32)
        out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        assert out.shape == (n, 10) and np.isfinite(out).all()


@pytest.mark.torch
@pytest.mark.ort_cpu
def test_shipped_onnx_matches_shipped_weights():
    import onnxruntime as ort
    import torch

    from quantbench.exporters.torch_models import build_module

    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = build_module(resolve_model("cifar10_cnn"))(x).numpy()
    sess = ort.InferenceSession(str(ASSETS / "cifar10_cnn.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"input": x.numpy()})[0], ref, rtol=1e-4, atol=1e-4)


def _test_subset(per_class: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """The first ``per_class`` test images (sorted file names) of every class, decoded from the tarball."""
    from PIL import Image

    wanted = {cls: sorted(f"test/{cls}/{i:04d}.jpg" for i in range(per_class)) for cls in CLASSES}
    names = {name: (index, cls) for index, cls in enumerate(CLASSES) for name in wanted[cls]}
    found: dict[str, tuple[np.ndarray, int]] = {}
    with tarfile.open(TARBALL, "r:gz") as tar:
        for member in tar:
            if member.name in names:
                with Image.open(io.BytesIO(tar.extractfile(member).read())) as im:
                    found[member.name] = (np.asarray(im.convert("RGB"), dtype=np.uint8), names[member.name][0])
    assert len(found) == len(names), f"tarball lacks {sorted(set(names) - set(found))[:3]}"
    order = [name for cls in CLASSES for name in wanted[cls]]
    return np.stack([found[n][0] for n in order]), np.asarray([found[n][1] for n in order])


@pytest.mark.ort_cpu
@pytest.mark.shared_data
def test_top1_on_500_real_test_images_matches_the_record():
    import onnxruntime as ort

    from quantbench.calibration_data import Preprocess

    images, labels = _test_subset()
    assert images.shape == (500, 32, 32, 3)
    x = Preprocess.from_dict(resolve_model("cifar10_cnn").preprocess).apply(images)
    sess = ort.InferenceSession(str(ASSETS / "cifar10_cnn.onnx"), providers=["CPUExecutionProvider"])
    top1 = float((sess.run(None, {"input": x})[0].argmax(1) == labels).mean())
    assert abs(top1 - RECORD["onnx_test500_accuracy"]) <= 0.01, (top1, RECORD["onnx_test500_accuracy"])
    assert top1 >= 0.70
    # Not a lucky subset: the recorded full-test-set figure is close to it.
    assert abs(top1 - RECORD["onnx_test_accuracy"]) <= 0.05


def test_example_config_parses():
    from quantbench.harness.config import load_config

    cfg = load_config(EXAMPLE)
    assert [m.name for m in cfg.models] == ["cifar10_cnn"]
    assert [v.name for v in cfg.variants] == ["fp32", "int8-minmax", "int8-entropy", "int8-mse", "fp16"]
    assert cfg.variants[3].quant_settings().calibration == "mse"  # the study's "Histogram"
    assert cfg.run.batch_sizes == [1, 32]
