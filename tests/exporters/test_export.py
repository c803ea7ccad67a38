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
def test_export_frees_the_weights_folding_replaced_and_writes_the_same_bytes(monkeypatch):
    """ResNet-style Conv+BatchNorm: the graph holds weights of its own (folded, deduplicated), so the module's
    tensors are freed before the exporter writes its copies (ResNet-50's peak was 100 MB higher); tensors the
    graph bakes in as constants stay alive through it (test_train's adaptive-pool net); the file is unchanged."""
    import contextlib
    import io
    import weakref

    import torch
    from torch.onnx._internal.torchscript_exporter import onnx_proto_utils

    from quantbench.exporters import torch_export

    seen: dict[str, bool] = {}

    def export(release: bool) -> bytes:
        torch.manual_seed(0)
        module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                     torch.nn.Conv2d(8, 4, 3)).eval()
        module[1].running_mean.uniform_(-1, 1)
        # each tracked tensor's memory is a numpy array: it lives exactly as long as the tensor's storage
        refs = {}
        for name, sub, attr in (("conv", module[0], "weight"), ("bn", module[1], "running_var"),
                                ("conv2", module[3], "weight")):
            array = getattr(sub, attr).detach().numpy().copy()
            tensor = torch.from_numpy(array)
            if attr in sub._parameters:
                sub._parameters[attr] = torch.nn.Parameter(tensor)
            else:
                sub._buffers[attr] = tensor
            refs[name] = weakref.ref(array)
            del array, tensor
        add = onnx_proto_utils._add_onnxscript_fn

        def while_writing(model_bytes, custom_opsets):  # called after the C++ serialisation, inside the export
            seen.update({name: ref() is not None for name, ref in refs.items()})
            return add(model_bytes, custom_opsets)

        monkeypatch.setattr(onnx_proto_utils, "_add_onnxscript_fn", while_writing)
        buf = io.BytesIO()
        ctx = torch_export.released_folded_weights(module) if release else contextlib.nullcontext()
        with ctx, torch.no_grad():
            torch.onnx.export(module, (torch.zeros(1, 3, 8, 8),), buf, opset_version=17, do_constant_folding=True,
                              dynamo=False)
        return buf.getvalue()

    plain = export(False)
    assert seen == {"conv": True, "bn": True, "conv2": True}
    released = export(True)
    # the exporter holds copies of its own by then (folded, deduplicated): the module's are freed
    assert seen == {"conv": False, "bn": False, "conv2": False}
    assert released == plain


@pytest.mark.torch
def test_export_of_another_model_inside_the_context_leaves_its_module_whole():
    import io

    import torch

    from quantbench.exporters import torch_export

    ours, other = torch.nn.Conv2d(1, 2, 3), torch.nn.Conv2d(1, 2, 3)
    with torch_export.released_folded_weights(ours), torch.no_grad():
        torch.onnx.export(other, (torch.zeros(1, 1, 5, 5),), io.BytesIO(), opset_version=17, dynamo=False)
    assert ours.weight.numel() == 18 and other.weight.numel() == 18
