"""``mode = "qat"``: QAT of any exportable model (registry, torchvision, module:), whole or a layer subset."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from quantbench.exporters.quantize import QuantSettings
from quantbench.exporters.registry import resolve_model
from tests.exporters.test_train import stripes_npz

SIDE = 12


def test_qat_keys_belong_to_mode_qat_and_leave_other_settings_alone():
    s = QuantSettings.from_dict({"mode": "qat", "qat_steps": 5, "qat_lr": 1e-3, "op_types": ["Conv"]})
    assert s.to_dict()["qat_steps"] == 5 and s.to_dict()["calibration"] is None
    with pytest.raises(ValueError, match="qat_steps applies to mode = 'qat' only"):
        QuantSettings.from_dict({"qat_steps": 5})
    with pytest.raises(ValueError, match="calibration does not apply to mode = 'qat'"):
        QuantSettings.from_dict({"mode": "qat", "calibration": "entropy"})
    with pytest.raises(ValueError, match="qat_lr must be a number"):
        QuantSettings.from_dict({"mode": "qat", "qat_lr": 0})
    # Static settings (and so their cache keys and row settings) carry no qat_* keys.
    assert not any(k.startswith("qat_") for k in QuantSettings().to_dict())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """mnist_cnn trained on stripes (40 steps) and its data."""
    from quantbench.exporters.train import TrainSettings, train

    d = tmp_path_factory.mktemp("qat")
    data = stripes_npz(d / "stripes.npz", side=SIDE)
    train("mnist_cnn", f"npz:{data}", d / "m.pt", TrainSettings(max_steps=40, batch=32), input_size=SIDE,
          log=lambda _m: None)
    src = resolve_model("mnist_cnn", weights=str(d / "m.pt"), input_shape=(1, SIDE, SIDE), num_classes=2)
    return src, f"npz:{data}"


def _weights(path: Path) -> dict[str, int]:
    """Name -> ONNX data type of every weight matrix / kernel (INT8 = 3, FLOAT = 1)."""
    return {i.name: i.data_type for i in onnx.load(str(path)).graph.initializer if len(i.dims) >= 2}


def _top1(path: Path, data: str, preprocess: dict) -> float:
    import onnxruntime as ort

    from quantbench.calibration_data import Preprocess, open_source

    ev = open_source(data).evaluation
    x = Preprocess.from_dict(preprocess).apply(ev.read(np.arange(len(ev))))
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    return float((out.argmax(1) == ev.labels).mean())


@pytest.mark.torch
@pytest.mark.ort_cpu
@pytest.mark.parametrize("op_types, int8_prefixes", [
    (None, ("features", "classifier")),
    (["Conv"], ("features",)),
    (["Gemm", "MatMul"], ("classifier",)),
])
@pytest.mark.slow
def test_qat_of_a_registry_model_quantizes_exactly_the_chosen_layers(trained, tmp_path, op_types, int8_prefixes):
    from quantbench.exporters import qat_model
    from quantbench.exporters.qat import qdq_problems

    src, data = trained
    settings = QuantSettings.from_dict({"mode": "qat", "qat_steps": 6, "qat_batch": 32,
                                        **({"op_types": op_types} if op_types else {})})
    out = tmp_path / "qat.onnx"
    ran = qat_model.run(src, settings, data, src.preprocess, out)
    assert ran["steps"] == 6 and ran["layers_fake_quantized"] == (4 if op_types is None else 2)
    assert qdq_problems(onnx.load(str(out))) == []
    weights = _weights(out)
    assert len(weights) == 4
    for name, dtype in weights.items():
        assert (dtype == onnx.TensorProto.INT8) == name.startswith(int8_prefixes), (name, dtype)
    assert _top1(out, data, src.preprocess) > 0.85  # the trained net (chance 0.5) survives QAT and export
    if op_types is None:  # every Conv/Gemm has Q/DQ around it: ONNX Runtime runs all four in integer kernels
        assert _ort_int8_share(out, tmp_path) == 1.0


def _ort_int8_share(path: Path, tmp_path: Path) -> float:
    import onnxruntime as ort

    from quantbench.runtimes.ort_cpu import summarize_optimized_graph

    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return summarize_optimized_graph(tmp_path / "optimized.onnx")["int8_op_share"]


def bn_net():
    """A module: model with BatchNorm and a residual add (what eager-mode QAT cannot take as it is)."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
            self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            x = self.stem(x)
            x = torch.relu(x + self.block(x))
            return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():  # non-trivial running statistics, so folding them matters
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net


@pytest.mark.torch
@pytest.mark.ort_cpu
def test_qat_of_a_module_model_folds_batchnorm_and_runs_every_conv_in_int8(tmp_path):
    from quantbench.exporters import qat_model
    from quantbench.exporters.qat import qdq_problems

    data = stripes_npz(tmp_path / "s.npz", n_train=64, n_test=16, side=SIDE)
    src = resolve_model(f"module:{__name__}:bn_net", input_shape=(1, SIDE, SIDE))
    out = tmp_path / "bn.onnx"
    qat_model.run(src, QuantSettings.from_dict({"mode": "qat", "qat_steps": 2, "qat_batch": 16}), f"npz:{data}",
                  src.preprocess, out)
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    assert "BatchNormalization" not in ops and ops.count("Conv") == 2 and qdq_problems(model) == []
    assert all(t == onnx.TensorProto.INT8 for t in _weights(out).values())
    assert _ort_int8_share(out, tmp_path) == 1.0  # also the conv before the residual add and the dense head


@pytest.mark.torch
@pytest.mark.slow
def test_qat_refuses_an_onnx_model_and_an_empty_layer_choice(trained, tmp_path):
    from quantbench.exporters import qat_model
    from quantbench.exporters.registry import ASSETS

    src, data = trained
    with pytest.raises(ValueError, match="does not apply to an ONNX file"):
        qat_model.run(resolve_model(str(ASSETS / "fashion_cnn.onnx")), QuantSettings(mode="qat"), data, {},
                      tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="select no Conv2d/Linear layer"):
        qat_model.run(src, QuantSettings.from_dict({"mode": "qat", "op_types": ["Add"]}), data, src.preprocess,
                      tmp_path / "x.onnx")


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.ort_cpu
def test_a_sweep_compares_ptq_and_qat_from_one_config(trained, tmp_path):
    import json

    from quantbench.harness.cli import main

    src, data = trained
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(f'''[run]
output = "{tmp_path / 'res'}"
runtimes = ["ort-cpu"]
batch_sizes = [16]
eval_samples = 64
min_iters = 2
min_time_s = 0.0
interleave_rounds = 0

[[models]]
name = "mnist_cnn"
weights = "{src.weights}"
dataset = "{data}"
input_shape = [1, {SIDE}, {SIDE}]
num_classes = 2

[[variants]]
name = "int8-ptq"
precision = "int8"

[[variants]]
name = "int8-qat-conv"
precision = "int8"
mode = "qat"
qat_steps = 3
qat_batch = 16
op_types = ["Conv"]
''')
    assert main(["run", str(cfg), "--no-report"]) == 0
    rows = {r["variant"]: r for r in map(json.loads, (tmp_path / "res" / "results.jsonl").read_text().splitlines())}
    qat = rows["int8-qat-conv"]
    assert qat["status"] == "ok" and qat["top1"] is not None
    assert qat["variant_settings"]["mode"] == "qat" and qat["variant_settings"]["qat_steps"] == 3
    assert qat["variant_settings"]["op_types"] == ["Conv"]
    assert any(n.startswith("QAT: 3 steps of 16") for n in qat["artifact_notes"])
    assert qat["artifact_sha256"] != rows["int8-ptq"]["artifact_sha256"]


@pytest.mark.torch
@pytest.mark.slow
def test_qat_is_seeded_by_qat_seed(trained, tmp_path):
    from quantbench.exporters import qat_model

    src, data = trained
    digests = []
    for i, seed in enumerate((0, 0, 1)):
        out = tmp_path / f"q{i}.onnx"
        qat_model.run(src, QuantSettings.from_dict({"mode": "qat", "qat_steps": 3, "qat_batch": 16, "qat_seed": seed}),
                      data, src.preprocess, out)
        weights = {i.name: i.raw_data for i in onnx.load(str(out)).graph.initializer}
        digests.append(weights)
    assert digests[0] == digests[1] and digests[0] != digests[2]


def relu6_net():
    """Conv+BN+ReLU6 twice and a dense head: ReLU6 exports as Clip (MobileNet's activation)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
                         nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


@pytest.mark.torch
@pytest.mark.ort_cpu
def test_qat_with_relu6_runs_every_conv_in_int8(tmp_path):
    """The Clip of a ReLU6 between a conv and its output quantizer is dropped (the quantizer's range lies
    inside it), so ONNX Runtime fuses DQ-Conv-Q into integer kernels instead of a float Conv+Clip."""
    from quantbench.exporters import qat_model

    data = stripes_npz(tmp_path / "s.npz", n_train=64, n_test=16, side=SIDE)
    src = resolve_model(f"module:{__name__}:relu6_net", input_shape=(1, SIDE, SIDE))
    out = tmp_path / "relu6.onnx"
    qat_model.run(src, QuantSettings.from_dict({"mode": "qat", "qat_steps": 2, "qat_batch": 16}), f"npz:{data}",
                  src.preprocess, out)
    assert "Clip" not in [n.op_type for n in onnx.load(str(out)).graph.node]
    assert _ort_int8_share(out, tmp_path) == 1.0
