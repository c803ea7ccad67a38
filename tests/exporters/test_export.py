"""PyTorch export and FP16 conversion (torch-dependent parts are marked)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from quantbench.exporters.artifacts import ArtifactStore, VariantSpec
from quantbench.exporters.registry import list_models, resolve_model


def test_registry_lists_the_zoo():
    assert {"fashion_cnn", "mnist_cnn", "resnet50", "mobilenet_v2", "vgg16"} <= set(list_models())
    assert list_models("resnet*") == ["resnet18", "resnet50"]


@pytest.mark.ort_cpu
def test_fp16_keeps_float32_io_and_matches(tmp_path):
    import onnxruntime as ort

    source = resolve_model("fashion_cnn")
    store = ArtifactStore(tmp_path)
    fp32 = store.fp32(source)
    fp16 = store.build(source, VariantSpec("fp16", "fp16"), "fashion-mnist", source.preprocess)
    model = onnx.load(str(fp16.path))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert 0.45 < fp16.size_bytes / fp32.size_bytes < 0.55
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)

    def run(path):
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]

    np.testing.assert_allclose(run(fp16.path), run(fp32.path), atol=0.05)


@pytest.mark.torch
@pytest.mark.ort_cpu
def test_export_dynamic_batch_matches_torch(tmp_path):
    import onnxruntime as ort
    import torch

    from quantbench.exporters.torch_export import export_onnx
    from quantbench.exporters.torch_models import build_module

    source = resolve_model("mnist_cnn", weights="random", input_shape=(3, 32, 32))
    path = export_onnx(source, tmp_path / "m.onnx")
    onnx.checker.check_model(onnx.load(str(path)))
    module = build_module(source)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 4):
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            ref = module(x).numpy()
        np.testing.assert_allclose(sess.run(None, {"input": x.numpy()})[0], ref, rtol=1e-4, atol=1e-4)


@pytest.mark.torch
def test_shipped_default_matches_its_weights_and_bad_weights_fail(tmp_path):
    import onnxruntime as ort
    import torch

    from quantbench.exporters.torch_models import build_module

    source = resolve_model("fashion_cnn")
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        ref = build_module(source)(x).numpy()
    shipped = ArtifactStore(tmp_path).fp32(source).path
    out = ort.InferenceSession(str(shipped), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    wrong = tmp_path / "wrong.pt"
    torch.save({"nope": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="do not fit"):
        build_module(resolve_model("fashion_cnn", weights=str(wrong)))


@pytest.mark.torch
def test_export_frees_the_weights_folding_replaced_and_writes_the_same_bytes(tmp_path):
    """ResNet-style Conv+BatchNorm: folding gives the graph new weights, so the module's convolution and
    BatchNorm tensors are freed during the export (ResNet-50's peak was 100 MB higher); the file is unchanged."""
    import contextlib
    import io

    import torch

    from quantbench.exporters import torch_export

    def export(release: bool) -> tuple[bytes, torch.nn.Module]:
        torch.manual_seed(0)
        module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                     torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 4)).eval()
        module[1].running_mean.uniform_(-1, 1)
        buf = io.BytesIO()
        ctx = torch_export.released_folded_weights(module) if release else contextlib.nullcontext()
        with ctx, torch.no_grad():
            torch.onnx.export(module, (torch.zeros(1, 3, 8, 8),), buf, opset_version=17, do_constant_folding=True,
                              dynamo=False)
        return buf.getvalue(), module

    plain, kept = export(False)
    released, freed = export(True)
    assert released == plain
    assert kept[0].weight.numel() == 8 * 3 * 9 and kept[1].running_var.numel() == 8
    assert freed[0].weight.numel() == 0 and freed[1].weight.numel() == 0 and freed[1].running_var.numel() == 0
    assert freed[4].weight.numel() == 4 * 8 * 6 * 6  # not folded: the graph's own weight stays
