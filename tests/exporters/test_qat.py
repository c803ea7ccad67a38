"""QAT: a few batches of fake-quant fine-tuning of the shipped Fashion-MNIST CNN, exported to plain QDQ
ONNX that ONNX Runtime runs in int8 with the accuracy the fake-quantized torch model had; the file
enters a sweep as a prebuilt variant (checked against the model's input/output)."""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest

from quantbench.calibration_data import Preprocess, open_source
from quantbench.exporters.registry import ASSETS, resolve_model

pytestmark = [pytest.mark.torch, pytest.mark.ort_cpu, pytest.mark.slow]  # the module fixture fine-tunes for ~25 s

N_TRAIN, N_EVAL = 8 * 64, 1000


@pytest.fixture(scope="module")
def data():
    spec = resolve_model("fashion_cnn")
    pre = Preprocess.from_dict(spec.preprocess)
    src = open_source("fashion-mnist")
    cal, ev = src.calibration, src.evaluation
    n = min(N_EVAL, len(ev.labels))
    return (pre.apply(cal.images[:N_TRAIN]), np.asarray(cal.labels[:N_TRAIN]),
            pre.apply(ev.images[:n]), np.asarray(ev.labels[:n]), tuple(spec.input_shape))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A QAT model after 8 batches from the shipped weights, and its plain QDQ export."""
    import torch

    from quantbench.exporters.qat import export_qdq, finetune, prepare_qat
    from quantbench.exporters.small_cnns import FashionNormalCNN

    x, y, _, _, shape = data
    model = FashionNormalCNN()
    model.load_state_dict(torch.load(ASSETS / "fashion_cnn.pt", weights_only=True))
    qat = prepare_qat(model)
    ran = finetune(qat, x, y, batch=64, max_batches=8, log=lambda _m: None)
    out = export_qdq(qat, tmp_path_factory.mktemp("qat") / "qat.onnx", shape)
    return qat, out, ran


def _ort_logits(path, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"input": x[i:i + 250]})[0] for i in range(0, len(x), 250)])


def _ort_audit(path, tmp_path):
    import onnxruntime as ort

    from quantbench.runtimes.ort_cpu import summarize_optimized_graph

    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return summarize_optimized_graph(tmp_path / "optimized.onnx")


def test_training_ran_and_froze_observers(trained):
    _, _, ran = trained
    assert ran["steps"] == 8 and ran["observers_frozen_at_step"] == 6  # FREEZE_AT = 0.8 of 8 steps
    assert np.isfinite(ran["final_loss"])


def test_export_is_plain_qdq_and_runs_int8_in_ort(trained, tmp_path):
    from quantbench.exporters.qat import qdq_problems

    _, path, _ = trained
    model = onnx.load(str(path))
    assert qdq_problems(model) == []
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Conv") == 2 and ops.count("Gemm") == 2
    # The four weights are stored as INT8 (not float behind a QuantizeLinear), the biases as INT32.
    matrices = [i for i in model.graph.initializer if len(i.dims) >= 2]
    assert len(matrices) == 4 and all(i.data_type == onnx.TensorProto.INT8 for i in matrices)
    biases = [i for i in model.graph.initializer
              if i.data_type == onnx.TensorProto.INT32 and i.name.endswith("bias_quantized")]
    assert len(biases) == 4
    audit = _ort_audit(path, tmp_path)
    assert audit["exec_precision"] == "int8" and audit["int8_op_share"] == 1.0, audit["audit_note"]
    fp32 = ASSETS / "fashion_cnn.onnx"
    assert path.stat().st_size < 0.35 * fp32.stat().st_size


def test_raw_torch_export_would_run_in_float(trained, data, tmp_path):
    """What to_plain_qdq fixes is real: torch's own export leaves ORT computing in float."""
    import torch

    from quantbench.exporters.qat import exportable, qdq_problems

    qat, _, _ = trained
    raw = tmp_path / "raw.onnx"
    with exportable(qat), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(qat, (torch.zeros((1, *data[4])),), str(raw), opset_version=17, dynamo=False,
                          input_names=["input"], output_names=["logits"])
    assert qdq_problems(onnx.load(str(raw)))
    assert _ort_audit(raw, tmp_path)["int8_op_share"] < 1.0


def test_ort_accuracy_matches_the_fake_quantized_model(trained, data):
    from quantbench.exporters.qat import fake_quant_accuracy

    qat, path, _ = trained
    _, _, x, y, _ = data
    logits = _ort_logits(path, x)
    ort_acc = float((logits.argmax(1) == y).mean())
    torch_acc = fake_quant_accuracy(qat, x, y)
    assert ort_acc > 0.8  # the shipped model is ~90 %; a broken export is near 10 %
    assert abs(ort_acc - torch_acc) <= 0.01
    fp32_acc = float((_ort_logits(ASSETS / "fashion_cnn.onnx", x).argmax(1) == y).mean())
    assert ort_acc > fp32_acc - 0.03


def test_prebuilt_artifact_is_described_and_checked(trained, tmp_path):
    from quantbench.exporters.artifacts import ArtifactStore, sha256_file

    _, path, _ = trained
    store = ArtifactStore(tmp_path / "store")
    fp32 = store.fp32(resolve_model("fashion_cnn"))
    built = store.prebuilt(path, "int8-qat", "int8", fp32)
    assert built.sha256 == sha256_file(path) and built.size_bytes == path.stat().st_size
    assert built.precision == "int8" and built.variant == "int8-qat" and built.reference_path == fp32.path
    assert built.param_count > 0 and built.quant_time_s is None
    with pytest.raises(ValueError, match="differ from the model's"):
        store.prebuilt(ASSETS / "cifar10_cnn.onnx", "int8-qat", "int8", fp32)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        store.prebuilt(bad, "int8-qat", "int8", fp32)


@pytest.mark.openvino
def test_openvino_runs_the_export_in_low_precision(trained, data):
    import openvino as ov

    _, path, _ = trained
    _, _, x, y, _ = data
    compiled = ov.Core().compile_model(str(path), "CPU")
    logits = np.concatenate([compiled(x[i:i + 250])[0] for i in range(0, len(x), 250)])
    assert abs(float((logits.argmax(1) == y).mean()) - float((_ort_logits(path, x).argmax(1) == y).mean())) <= 0.005
    kinds = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) in ("Convolution", "FullyConnected"):
            kinds[op.get_friendly_name()] = info["runtimePrecision"].astype(str)
    assert kinds and all(p in ("u8", "i8") for p in kinds.values()), kinds


def _torch_weight_integers(qat):
    """{module name: (integers, scale)} of each Conv/Linear weight as torch's fake quantizer rounds it."""
    import torch

    out = {}
    with torch.no_grad():
        for name, m in qat.named_modules():
            fq = getattr(m, "weight_fake_quant", None)
            if fq is None:
                continue
            scale = fq.scale.detach().clone()
            shape = [-1] + [1] * (m.weight.dim() - 1)
            q = torch.round(fq(m.weight) / scale.reshape(shape))  # exact: |q| <= 128
            out[name] = (q.numpy().astype(np.int64), scale.numpy())
    return out


def _exported_weight_integers(path):
    """[(integers, scale)] of the Conv/Gemm weights of a plain QDQ file, in graph order."""
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return [(inits[dq[n.input[1]].input[0]].astype(np.int64), inits[dq[n.input[1]].input[1]])
            for n in model.graph.node if n.op_type in ("Conv", "Gemm")]


def test_exported_weights_are_torchs_fake_quant_integers_on_the_ptq_grid(trained):
    """Bit-exact with torch's fake quantizer (which rounds w·(1/s), not w/s), and on the grid the
    docstring names: PTQ's symmetric [-127, 127] with scale max|w|/127 from the frozen observer."""
    qat, path, _ = trained
    ref = _torch_weight_integers(qat)
    exported = _exported_weight_integers(path)
    assert len(ref) == len(exported) == 4
    total = 0
    for (name, (q_ref, s_ref)), (q, s) in zip(ref.items(), exported, strict=True):
        np.testing.assert_array_equal(s, s_ref, err_msg=name)
        assert q.shape == q_ref.shape
        assert int((q != q_ref).sum()) == 0, f"{name}: {(q != q_ref).sum()} of {q.size} integers differ"
        assert q.min() >= -127 and q.max() <= 127, name
        total += q.size
        obs = dict(qat.named_modules())[name].weight_fake_quant.activation_post_process
        amax = np.maximum(-obs.min_val.numpy(), obs.max_val.numpy())
        np.testing.assert_allclose(s, amax / 127, rtol=1e-6, err_msg=name)
    assert total > 200_000  # the whole shipped CNN, not a sample
