"""The parameter table (trainable / non-trainable, Keras-style) and the whole-test-set wall time in rows."""
from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper

from quantbench.common.onnx_save import save_model
from quantbench.exporters.param_counts import onnx_param_counts
from tests.exporters.test_train import stripes_npz


def test_onnx_counts_take_batchnorm_statistics_as_non_trainable(tmp_path):
    c = 4
    inits = [helper.make_tensor("w", TensorProto.FLOAT, [c, 1, 3, 3], np.ones(c * 9)),
             *[helper.make_tensor(n, TensorProto.FLOAT, [c], np.ones(c)) for n in ("gamma", "beta", "mean", "var")],
             helper.make_tensor("shape", TensorProto.INT64, [2], [-1, c])]
    nodes = [helper.make_node("Conv", ["input", "w"], ["a"]),
             helper.make_node("BatchNormalization", ["a", "gamma", "beta", "mean", "var"], ["b"]),
             helper.make_node("GlobalAveragePool", ["b"], ["g"]),
             helper.make_node("Reshape", ["g", "shape"], ["logits"])]
    graph = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 5, 5])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", c])], inits)
    path = tmp_path / "bn.onnx"
    save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert onnx_param_counts(path) == {"trainable_params": c * 9 + 2 * c, "non_trainable_params": 2 * c,
                                       "params_from": "onnx-initializers"}


@pytest.mark.torch
def test_torch_counts_split_trainable_frozen_and_buffers():
    from torch import nn

    from quantbench.exporters.param_counts import torch_param_counts

    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.Linear(8, 2))
    net[2].weight.requires_grad_(False)
    counts = torch_param_counts(net)
    # conv 8*9+8 and BN affine 2*8 and the dense bias 2 train; the frozen dense weight 16 and the BN running
    # mean/var 2*8 do not (num_batches_tracked is an integer counter, not a parameter).
    assert counts == {"trainable_params": 80 + 16 + 2, "non_trainable_params": 16 + 16, "params_from": "torch"}


@pytest.mark.slow  # a whole sweep: 6 s on two quiet cores
@pytest.mark.torch
@pytest.mark.ort_cpu
def test_rows_carry_the_parameter_table_and_the_test_set_wall_time(tmp_path, capsys):
    from quantbench.harness.cli import main

    data = stripes_npz(tmp_path / "s.npz", n_train=32, n_test=40)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'''[run]
output = "{tmp_path / 'out'}"
runtimes = ["ort-cpu"]
batch_sizes = [8]
min_iters = 2
min_time_s = 0.0
interleave_rounds = 0

[[models]]
name = "module:tests.exporters.test_train_qat:bn_net"
dataset = "npz:{data}"
input_shape = [1, 12, 12]

[[variants]]
name = "fp32"
precision = "fp32"
''')
    assert main(["run", str(cfg), "--no-report"]) == 0
    row = json.loads((tmp_path / "out" / "results.jsonl").read_text().splitlines()[-1])
    # bn_net: convs 8*9 + 8*8*9 (no bias), BN affine 2*(8+8), dense 8*2+2; running mean/var 2*(8+8).
    assert row["trainable_params"] == 72 + 576 + 32 + 18 and row["non_trainable_params"] == 32
    assert row["params_from"] == "torch"
    assert row["param_count"] == 72 + 576 + 16 + 18  # the ONNX file: BatchNorm folded into conv biases
    assert row["eval_samples"] == 40 and row["eval_wall_s"] > 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "out" / "results.jsonl"), "--format", "md"]) == 0
    md = capsys.readouterr().out
    header = next(line for line in md.splitlines() if line.startswith("| variant"))
    assert "| trainable | non-trainable |" in header and "test set s" in header
    fp32_line = next(line for line in md.splitlines() if line.startswith("| fp32"))
    assert "| 698 | 32 |" in fp32_line


def _conv_bn_net():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3))


_CACHED: list = []


def cached_conv_bn_net():
    """A module: function that hands out one cached module (as functools.cache or a module-level instance would)."""
    if not _CACHED:
        _CACHED.append(_conv_bn_net())
    return _CACHED[0]


@pytest.mark.torch
def test_a_module_function_that_caches_its_module_gets_its_real_counts(tmp_path):
    """The export leaves its module without tensors; the counts are taken before it, so a function returning the
    same module every time is counted as a fresh one (it read 0 parameters)."""
    from quantbench.exporters.artifacts import ArtifactStore
    from quantbench.exporters.param_counts import torch_param_counts
    from quantbench.exporters.registry import resolve_model
    from quantbench.harness.sweep.export_worker import export_fp32

    expected = torch_param_counts(_conv_bn_net())
    assert expected["trainable_params"] == 4 * 9 + 4 + 4 + 4 + 4 * 36 * 3 + 3
    source = resolve_model(f"module:{__name__}:cached_conv_bn_net", input_shape=(1, 8, 8), num_classes=3)
    built = export_fp32(source, ArtifactStore(tmp_path))
    assert (built.trainable_params, built.non_trainable_params) == \
        (expected["trainable_params"], expected["non_trainable_params"])
