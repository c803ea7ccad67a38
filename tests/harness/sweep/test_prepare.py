"""Model preparation: per-model problems fail that model's cells once, before any cell runs; others go on.

Export, the data checks and the FP32 reference run in a contained subprocess under ``timeout_s``,
so a model that segfaults while exporting or an ONNX Loop that never ends fails only that model.
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pytest

from quantbench.exporters.registry import resolve_model
from quantbench.harness.results.store import read_rows
from quantbench.harness.sweep.prepare_worker import PrepareProblem, accuracy_plan
from tests.harness.conftest import run_cli, write_config
from tests.harness.sweep.test_runner_signals import HANG_TIMEOUT_S
from tests.harness.test_user_models import FP32, sweep

GOOD = '[[models]]\nname = "fashion_cnn"\nlabel = "good"\n'


def _onnx_28(path: Path, body: str) -> Path:
    """A (N, 1, 28, 28) -> (N, 10) ONNX model whose middle is ``body``: "nan" or "endless-loop"."""
    import onnx
    from onnx import TensorProto, helper

    from quantbench.common.onnx_save import with_lowest_ir_version

    w = helper.make_tensor("w", TensorProto.FLOAT, [10, 784], np.zeros(7840, np.float32))
    nodes, inits = [], [w]
    if body == "endless-loop":  # a Loop whose trip count no machine finishes
        loop_body = helper.make_graph(
            [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])],
            "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                     helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
                     helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None)],
            [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)])
        inits += [helper.make_tensor("trips", TensorProto.INT64, [], [2 ** 62]),
                  helper.make_tensor("go", TensorProto.BOOL, [], [True])]
        nodes += [helper.make_node("Loop", ["trips", "go", "input"], ["looped"], body=loop_body),
                  helper.make_node("Flatten", ["looped"], ["f"]),
                  helper.make_node("Gemm", ["f", "w"], ["logits"], transB=1)]
    else:  # log(0·x − 1): NaN for every image
        inits.append(helper.make_tensor("b", TensorProto.FLOAT, [10], -np.ones(10, np.float32)))
        nodes += [helper.make_node("Flatten", ["input"], ["f"]),
                  helper.make_node("Gemm", ["f", "w", "b"], ["g"], transB=1),
                  helper.make_node("Log", ["g"], ["logits"])]
    graph = helper.make_graph(nodes, body,
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = with_lowest_ir_version(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.mark.torch
@pytest.mark.ort_cpu
@pytest.mark.slow
def test_a_segfaulting_export_fails_only_its_model(tmp_path, shared_cache, monkeypatch):
    (tmp_path / "crashers.py").write_text(textwrap.dedent("""
        import ctypes
        import torch

        class Boom(torch.nn.Module):
            def forward(self, x):
                ctypes.string_at(0)  # reads address 0: SIGSEGV while the exporter traces forward
                return x

        def boom():
            return Boom()
    """))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    models = '[[models]]\nname = "module:crashers:boom"\ndataset = "fashion-mnist"\n' + GOOD
    rows, logs = sweep(tmp_path, shared_cache, models, eval_samples=40)  # the crash ends it: no timeout waited out
    by = {r["model"]: r for r in rows}
    assert by["good"]["status"] == "ok" and by["good"]["top1"] > 0.7
    assert by["crashers:boom"]["status"] == "failed" and "export to ONNX" in by["crashers:boom"]["error"]
    assert "SIGSEGV" in by["crashers:boom"]["error"]
    errors = [m for m in logs if m.startswith("error: ")]
    assert len(errors) == 1 and "\n" not in errors[0]


@pytest.mark.ort_cpu
@pytest.mark.slow
def test_an_endless_onnx_fails_only_its_model(tmp_path, shared_cache):
    endless = _onnx_28(tmp_path / "endless.onnx", "endless-loop")
    models = f'[[models]]\nname = "{endless}"\ndataset = "fashion-mnist"\n' + GOOD
    rows, logs = sweep(tmp_path, shared_cache, models, eval_samples=40, timeout_s=HANG_TIMEOUT_S)
    by = {r["model"]: r for r in rows}
    assert by["good"]["status"] == "ok" and by["good"]["top1"] > 0.7
    assert by["endless"]["status"] == "failed"
    assert "FP32 reference outputs" in by["endless"]["error"]
    assert f"timed out after {HANG_TIMEOUT_S} s" in by["endless"]["error"]
    errors = [m for m in logs if m.startswith("error: ")]
    assert len(errors) == 1 and "\n" not in errors[0]


@pytest.mark.ort_cpu
@pytest.mark.slow
def test_data_problems_fail_their_model_once_before_any_cell(tmp_path, shared_cache):
    empty = tmp_path / "empty-idx"
    empty.mkdir()
    nan = _onnx_28(tmp_path / "nan.onnx", "nan")
    models = (GOOD + f'[[models]]\nname = "fashion_cnn"\nlabel = "nodata"\ndataset = "idx:{empty}"\n'
              f'[[models]]\nname = "{nan}"\ndataset = "fashion-mnist"\n')
    rows, logs = sweep(tmp_path, shared_cache, models,
                       variants=FP32 + '[[variants]]\nname = "fp16"\nprecision = "fp16"\n', eval_samples=40)
    by_model: dict[str, list[dict]] = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append(r)
    assert all(r["status"] == "ok" for r in by_model["good"])
    assert [r["status"] for r in by_model["nodata"]] == ["failed", "failed"]
    assert "t10k" in by_model["nodata"][0]["error"]
    assert [r["status"] for r in by_model["nan"]] == ["failed", "failed"]
    assert "non-finite outputs (NaN/inf) for 40 of 40" in by_model["nan"][0]["error"]
    errors = [m for m in logs if m.startswith("error: ")]
    assert sorted(m.split(":")[1].split()[-1] for m in errors) == ["nan", "nodata"]  # once per model


@pytest.mark.torch
@pytest.mark.ort_cpu
@pytest.mark.slow
def test_bad_weights_files_fail_their_model_in_one_line(tmp_path, shared_cache):
    import torch

    tensor = tmp_path / "a_tensor.pt"
    torch.save(torch.zeros(3), tensor)
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.toml", out, FP32, eval_samples=20,
                       models=GOOD + f'[[models]]\nname = "fashion_cnn"\nlabel = "tensor"\nweights = "{tensor}"\n')
    proc = run_cli("run", str(cfg), cache=shared_cache)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    by = {r["model"]: r for r in read_rows(out / "results.jsonl").rows}
    assert by["good"]["status"] == "ok"
    assert by["tensor"]["status"] == "failed" and "holds a Tensor, not a state_dict" in by["tensor"]["error"]

    passwd = run_cli("run", str(cfg), "--weights", "/etc/passwd", "-o", str(tmp_path / "out2"), cache=shared_cache)
    assert passwd.returncode != 0 and "Traceback" not in passwd.stdout + passwd.stderr
    rows = read_rows(tmp_path / "out2" / "results.jsonl").rows
    assert rows and all(r["status"] == "failed" for r in rows)
    assert all("/etc/passwd is not a PyTorch state_dict" in r["error"] and "\n" not in r["error"] for r in rows)


@pytest.mark.ort_cpu
@pytest.mark.slow
def test_calib_dataset_is_what_quantization_uses_and_rows_record_both(tmp_path, shared_cache):
    from quantbench.calibration_data import open_source

    src = open_source("fashion-mnist-subset")
    idx = np.arange(200)
    inverted = 255 - np.asarray(src.calibration.read(idx), np.uint8)  # other statistics, same shape and classes
    calib = tmp_path / "inverted.npz"
    np.savez(calib, x_train=inverted, y_train=src.calibration.labels[idx], x_test=inverted[:50],
             y_test=src.calibration.labels[idx][:50])
    int8 = '[[variants]]\nname = "int8"\nprecision = "int8"\ncalibration = "minmax"\ncalib_samples = 32\n'
    models = (f'[[models]]\nname = "fashion_cnn"\nlabel = "own"\n'
              f'[[models]]\nname = "fashion_cnn"\nlabel = "other"\ncalib_dataset = "npz:{calib}"\n')
    rows, _ = sweep(tmp_path, shared_cache, models, variants=int8, eval_samples=40)
    by = {r["model"]: r for r in rows}
    assert by["own"]["status"] == by["other"]["status"] == "ok"
    assert by["own"]["artifact_sha256"] != by["other"]["artifact_sha256"]  # calibrated on different data
    assert by["own"]["dataset"]["spec"] == by["other"]["dataset"]["spec"] == "fashion-mnist"  # evaluated alike
    cal = by["other"]["dataset"]["calibration"]
    assert cal["spec"] == f"npz:{calib}" and cal["fingerprint"] and cal["split_used"] == "calibration"
    own_cal = by["own"]["dataset"]["calibration"]
    assert own_cal["spec"] == "fashion-mnist" and own_cal["fingerprint"] == by["own"]["dataset"]["fingerprint"]


def _source(name: str = "fashion_cnn", **kw):
    return resolve_model(name, **kw)


def test_accuracy_plan_rules():
    labels = np.array([0, 3, 998])
    onnx_like = type("S", (), {"num_classes": None, "is_random": False})()
    assert accuracy_plan("out", [1000], True, onnx_like, labels) == {"num_classes": 1000, "top_k": True, "note": ""}
    assert accuracy_plan("out", [1000, 1, 1], True, onnx_like, labels)["top_k"]  # (N, C, 1, 1) is logits-like
    outside = accuracy_plan("out", [10], True, onnx_like, labels)
    assert not outside["top_k"] and "labels 0..998 fall outside the model's 10 classes" in outside["note"]
    assert "not (N, classes) logits" in accuracy_plan("out", [21, 8, 8], True, onnx_like, labels)["note"]
    assert "not floating point" in accuracy_plan("out", [1000], False, onnx_like, labels)["note"]
    assert "random-init" in accuracy_plan("out", [10], True, _source(weights="random"), np.array([1]))["note"]
    declared = type("S", (), {"num_classes": 1001, "is_random": False})()
    with pytest.raises(PrepareProblem, match="num_classes = 1001"):
        accuracy_plan("out", [1000], True, declared, labels)


def test_weights_labels_and_random_rules(tmp_path):
    assert _source().weights_label() == "trained:fashion_cnn.pt" and not _source().is_random
    assert _source("mnist_cnn").is_random  # a builtin without shipped weights
    user = resolve_model("module:pkg.mod:fn")
    assert user.weights == "builtin" and user.weights_label() == "builtin:module:pkg.mod:fn" and not user.is_random
    assert resolve_model("module:pkg.mod:fn", weights="random").weights_label() == "random-init"
    assert user.num_classes is None  # read from the exported model's output
    onnx_path = tmp_path / "m.onnx"
    from tests.harness.test_user_models import label_reading_onnx

    label_reading_onnx(onnx_path, {0: 0}, n_out=7)
    assert resolve_model(str(onnx_path)).num_classes is None
    with pytest.raises(ValueError, match="carries its own weights"):
        resolve_model(str(onnx_path), weights=str(onnx_path))
    with pytest.raises(ValueError, match="no local weights"):
        resolve_model("resnet18", weights="builtin")


def _idx_copy(root: Path, invert: bool) -> Path:
    """The shipped subset's IDX files under ``root``, with every pixel inverted when ``invert`` (other ranges)."""
    from quantbench.calibration_data.idx import SHIPPED, read_idx, write_idx

    root.mkdir(parents=True)
    for f in SHIPPED.glob("*-ubyte.gz"):
        x = read_idx(f)
        write_idx(root / f.name, 255 - x if invert and "images" in f.name else x)
    return root


@pytest.mark.ort_cpu
@pytest.mark.slow
def test_relative_data_paths_calibrate_on_the_callers_data_whatever_the_spelling(tmp_path, monkeypatch):
    """Relative data paths mean the same files in every process: INT8 built from a TOML file in one folder
    run from another, from a dict in the caller's folder, and from the absolute path are byte-identical;
    decoys at the same relative path (in the checkout, where the quantize worker used to run, and in
    the working directory of the TOML run) change nothing."""
    from quantbench.harness.config import load_config, parse_config
    from quantbench.harness.sweep.prepare import prepare_artifacts, resolve_models

    rel = "calibration_data/data/fashion-mnist-subset"  # the checkout holds the shipped copy there: a decoy
    user = tmp_path / "user"
    data = _idx_copy(user / rel, invert=True)
    _idx_copy(tmp_path / "elsewhere" / rel, invert=False)  # a second decoy, in the TOML run's working directory
    int8 = {"name": "int8", "precision": "int8", "calibration": "minmax", "calib_samples": 32}

    def build(cfg, name: str) -> tuple[bytes, object]:
        cfg.run.eval_samples = 20
        pm = resolve_models(cfg)[0]
        logs: list[str] = []
        prepare_artifacts(pm, cfg.variants, tmp_path / f"cache-{name}", logs.append)
        assert not pm.error and not pm.artifact_errors, logs
        return pm.artifacts["int8"].path.read_bytes(), pm

    doc = {"models": [{"name": "fashion_cnn", "dataset": f"idx:{rel}"}], "variants": [int8]}
    monkeypatch.chdir(user)
    from_dict, pm = build(parse_config(doc), "dict")
    assert pm.dataset == f"idx:{data}" and pm.dataset_info["path"] == str(data)
    (user / "sweep.toml").write_text(f'[[models]]\nname = "fashion_cnn"\ndataset = "idx:{rel}"\n'
                                     '[[variants]]\nname = "int8"\ncalibration = "minmax"\ncalib_samples = 32\n')
    monkeypatch.chdir(tmp_path / "elsewhere")
    from_toml, _ = build(load_config(user / "sweep.toml"), "toml")
    absolute, _ = build(parse_config({**doc, "models": [{"name": "fashion_cnn", "dataset": f"idx:{data}"}]}), "abs")
    assert from_dict == from_toml == absolute
    decoy, _ = build(parse_config({**doc, "models": [{"name": "fashion_cnn", "dataset": f"idx:{rel}"}]}), "decoy")
    assert decoy != absolute  # the other copy really calibrates differently
