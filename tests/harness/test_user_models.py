"""A user's own model on their own data: accuracy whenever labels apply, the class count read from the model.

The models are built in the test to read their label off the image (one bright pixel per class),
so a correct pipeline scores exactly 100% and any label shift scores far less.
"""
from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from quantbench.harness.config import parse_config
from quantbench.harness.results.store import read_rows
from quantbench.harness.sweep.runner import run_sweep

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

FP32 = '[[variants]]\nname = "fp32"\nprecision = "fp32"\n'
SIDE = 4  # images are SIDE × SIDE, one bright pixel per class


def label_reading_onnx(path: Path, positions: dict[int, int], n_out: int, side: int = SIDE,
                       out_shape: list[Any] | None = None) -> Path:
    """An ONNX model (input (N, 1, side, side)) whose logit ``c`` is the pixel at ``positions[c]``."""
    import onnx
    from onnx import TensorProto, helper

    from quantbench.common.onnx_save import with_lowest_ir_version

    w = np.zeros((n_out, side * side), np.float32)
    for cls, pos in positions.items():
        w[cls, pos] = 1.0
    nodes = [helper.make_node("Flatten", ["input"], ["f"]),
             helper.make_node("Gemm", ["f", "w"], ["logits" if out_shape is None else "g"], transB=1)]
    inits = [helper.make_tensor("w", TensorProto.FLOAT, list(w.shape), w.ravel())]
    if out_shape is not None:  # e.g. (N, 2, n_out / 2): not logits-like
        nodes.append(helper.make_node("Reshape", ["g", "shape"], ["logits"]))
        inits.append(helper.make_tensor("shape", TensorProto.INT64, [len(out_shape) + 1], [-1, *out_shape]))
    graph = helper.make_graph(nodes, "label_reader", [helper.make_tensor_value_info(
        "input", TensorProto.FLOAT, ["N", 1, side, side])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", *(out_shape or [n_out])])], inits)
    onnx.save(with_lowest_ir_version(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])), path)
    return path


def label_images(labels: np.ndarray, positions: dict[int, int], side: int = SIDE) -> np.ndarray:
    """uint8 images, black except for the pixel that encodes each label."""
    x = np.zeros((len(labels), side * side), np.uint8)
    x[np.arange(len(labels)), [positions[int(c)] for c in labels]] = 255
    return x.reshape(len(labels), side, side)


def label_npz(path: Path, classes: list[int], per_class: int = 12, test_only: bool = False) -> tuple[Path, dict]:
    """An npz data set of label-encoding images for ``classes`` (positions 0, 1, 2, … in that order)."""
    positions = {c: i for i, c in enumerate(classes)}
    y = np.repeat(np.array(classes, np.int64), per_class)
    arrays = {"x_test": label_images(y, positions), "y_test": y}
    if not test_only:
        arrays.update(x_train=label_images(y, positions), y_train=y)
    np.savez(path, **arrays)
    return path, positions


FAST = """
[run]
output = "{out}"
cache_dir = "{cache}"
runtimes = ["ort-cpu"]
batch_sizes = [2]
eval_samples = {eval_samples}
warmup_iters = 1
min_iters = 3
min_time_s = 0.01
max_time_s = 1.0
io_batches = 2
interleave_rounds = 0
timeout_s = {timeout_s}
report = false
"""


def sweep(tmp_path: Path, cache: Path, models: str, variants: str = FP32, eval_samples: int = 100_000,
          timeout_s: float = 300) -> tuple[list[dict[str, Any]], list[str]]:
    """Run a sweep in this process (workers are subprocesses); returns its rows and log messages."""
    out = tmp_path / "out"
    text = FAST.format(out=out, cache=cache, eval_samples=eval_samples, timeout_s=timeout_s) + models + variants
    cfg = parse_config(tomllib.loads(text), "test")
    logs: list[str] = []
    run_sweep(cfg, out, log=logs.append)
    return read_rows(out / "results.jsonl").rows, logs


@pytest.mark.ort_cpu
@pytest.mark.slow
def test_a_1000_class_onnx_on_a_labelled_subset_gets_top1(tmp_path, shared_cache):
    data, positions = label_npz(tmp_path / "subset.npz", [3, 17, 500, 998, 0, 42])
    model = label_reading_onnx(tmp_path / "big.onnx", positions, n_out=1000)
    rows, logs = sweep(tmp_path, shared_cache, f'[[models]]\nname = "{model}"\ndataset = "npz:{data}"\n')
    assert [r["status"] for r in rows] == ["ok"], rows[0].get("error")
    row = rows[0]
    assert row["top1"] == 1.0 and row["top5"] == 1.0 and row["accuracy_note"] == ""
    assert row["weights"] == f"onnx:{model}"
    assert row["dataset"]["num_classes"] == 999  # the data's own count; the model's 1000 outputs decide
    assert not [m for m in logs if m.startswith(("warning: model", "error: model"))]


@pytest.mark.ort_cpu
@pytest.mark.slow
def test_num_classes_overrides_the_output_width_but_not_beyond_it(tmp_path, shared_cache):
    data, positions = label_npz(tmp_path / "d.npz", [0, 1, 2, 7])
    model = label_reading_onnx(tmp_path / "m.onnx", positions, n_out=10)
    rows, logs = sweep(tmp_path, shared_cache,
                       f'[[models]]\nname = "{model}"\ndataset = "npz:{data}"\nnum_classes = 5\nlabel = "five"\n'
                       f'[[models]]\nname = "{model}"\ndataset = "npz:{data}"\nnum_classes = 11\nlabel = "eleven"\n')
    five, eleven = (next(r for r in rows if r["model"] == m) for m in ("five", "eleven"))
    # 5 classes declared, label 7 seen: not a valid class, so no top-1, and a note saying why
    assert five["status"] == "ok" and five["top1"] is None and "outside the model's 5 classes" in five["accuracy_note"]
    assert eleven["status"] == "failed" and "num_classes = 11" in eleven["error"]
    assert sum("five" in m and m.startswith("warning: ") for m in logs) == 1


@pytest.mark.ort_cpu
@pytest.mark.slow
def test_labels_outside_the_outputs_and_non_logits_outputs_get_a_note(tmp_path, shared_cache):
    data, positions = label_npz(tmp_path / "d.npz", [0, 1, 15])
    narrow = label_reading_onnx(tmp_path / "narrow.onnx", {0: 0, 1: 1}, n_out=10)
    maps = label_reading_onnx(tmp_path / "maps.onnx", positions, n_out=16, out_shape=[2, 8])
    rows, logs = sweep(tmp_path, shared_cache,
                       f'[[models]]\nname = "{narrow}"\ndataset = "npz:{data}"\n'
                       f'[[models]]\nname = "{maps}"\ndataset = "npz:{data}"\n')
    by = {r["model"]: r for r in rows}
    assert by["narrow"]["status"] == "ok" and by["narrow"]["top1"] is None
    assert "labels 0..15 fall outside the model's 10 classes" in by["narrow"]["accuracy_note"]
    assert by["maps"]["status"] == "ok" and by["maps"]["top1"] is None
    assert "(N, 2, 8), not (N, classes) logits" in by["maps"]["accuracy_note"]
    assert by["maps"]["agreement_top1"] == 1.0  # FP32 against itself: agreement still measured
    warnings = [m for m in logs if m.startswith("warning: model")]
    assert len(warnings) == 2 and all("\n" not in m for m in warnings)


@pytest.mark.ort_cpu
@pytest.mark.slow
def test_a_user_model_that_does_not_fit_the_default_data_fails_once_with_advice(tmp_path, shared_cache):
    big = label_reading_onnx(tmp_path / "imagenet_like.onnx", {c: c for c in range(16)}, n_out=1000, side=28)
    fits = label_reading_onnx(tmp_path / "ten.onnx", {c: c for c in range(10)}, n_out=10, side=28)
    variants = FP32 + '[[variants]]\nname = "fp16"\nprecision = "fp16"\n'
    rows, logs = sweep(tmp_path, shared_cache,
                       f'[[models]]\nname = "{big}"\n[[models]]\nname = "{fits}"\n[[models]]\nname = "fashion_cnn"\n',
                       variants=variants, eval_samples=50)
    big_rows = [r for r in rows if r["model"] == "imagenet_like"]
    assert len(big_rows) == 2 and all(r["status"] == "failed" for r in big_rows)
    assert "does not fit the default data" in big_rows[0]["error"]
    assert 'set dataset = "folder:DIR"' in big_rows[0]["error"]
    errors = [m for m in logs if m.startswith("error: ")]
    assert len(errors) == 1 and "imagenet_like" in errors[0] and "1000 classes" in errors[0]
    # A 10-class 1×28×28 user model fits Fashion-MNIST: used, and said so; the builtin keeps its data.
    assert all(r["status"] == "ok" for r in rows if r["model"] in ("ten", "fashion_cnn"))
    assert any("no dataset named" in m and "ten" in m for m in logs)
    assert next(r for r in rows if r["model"] == "fashion_cnn")["top1"] > 0.8


@pytest.mark.torch
@pytest.mark.ort_cpu
@pytest.mark.slow
def test_a_module_model_with_its_own_weights_gets_accuracy(tmp_path, shared_cache, monkeypatch):
    data, positions = label_npz(tmp_path / "d.npz", [0, 2, 5, 9])
    mod = f"usernet_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{mod}.py").write_text(textwrap.dedent(f"""
        import torch

        def net():
            # A trained network as a user's function would return it: weights already in place.
            lin = torch.nn.Linear({SIDE * SIDE}, 10, bias=False)
            with torch.no_grad():
                lin.weight.zero_()
                for cls, pos in {positions!r}.items():
                    lin.weight[cls, pos] = 1.0
            return torch.nn.Sequential(torch.nn.Flatten(), lin)
    """))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    models = (f'[[models]]\nname = "module:{mod}:net"\ndataset = "npz:{data}"\ninput_shape = [1, {SIDE}, {SIDE}]\n'
              f'[[models]]\nname = "module:{mod}:net"\ndataset = "npz:{data}"\ninput_shape = [1, {SIDE}, {SIDE}]\n'
              f'weights = "random"\nlabel = "declared-random"\n')
    rows, _ = sweep(tmp_path, shared_cache, models)
    own = next(r for r in rows if r["model"] == f"{mod}:net")
    assert own["status"] == "ok", own.get("error")
    assert own["weights"] == f"builtin:module:{mod}:net"
    assert own["top1"] == 1.0 and own["accuracy_note"] == ""
    declared = next(r for r in rows if r["model"] == "declared-random")
    assert declared["weights"] == "random-init" and declared["top1"] is None and declared["agreement_top1"] == 1.0
    assert "random-init" in declared["accuracy_note"]
    assert mod not in sys.modules  # the user's code ran in the preparation subprocess, not in the sweep


INT8 = '[[variants]]\nname = "int8"\nprecision = "int8"\ncalibration = "minmax"\ncalib_samples = 8\n'


def _png_folders(root: Path, per_class: dict[str, int], n: int = 10) -> None:
    """Class folders of grey PNGs; folder ``name`` holds images with the bright pixel at ``per_class[name]``."""
    from PIL import Image

    for name, pos in per_class.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            img = np.zeros(SIDE * SIDE, np.uint8)
            img[pos] = 255
            Image.fromarray(img.reshape(SIDE, SIDE), mode="L").save(root / name / f"{i:03d}.png")


@pytest.mark.ort_cpu
@pytest.mark.slow
def test_integer_class_folders_with_gaps_and_a_classes_list_score_their_real_indices(tmp_path, shared_cache):
    ints = tmp_path / "ints"
    _png_folders(ints, {"003": 0, "017": 1, "042": 2})
    by_index = label_reading_onnx(tmp_path / "by_index.onnx", {3: 0, 17: 1, 42: 2}, n_out=50)
    names = tmp_path / "names"
    _png_folders(names, {"dog": 0, "zebra": 1})
    classes = ["ant", "bee", "cat", "dog"] + [f"c{i}" for i in range(4, 25)] + ["zebra"]  # dog = 3, zebra = 25
    by_name = label_reading_onnx(tmp_path / "by_name.onnx", {3: 0, 25: 1}, n_out=26)
    models = (f'[[models]]\nname = "{by_index}"\ndataset = "folder:{ints}"\n'
              f'[[models]]\nname = "{by_name}"\ndataset = "folder:{names}"\nclasses = {classes!r}\n'.replace("'", '"'))
    rows, logs = sweep(tmp_path, shared_cache, models, variants=FP32 + INT8)
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows), [r.get("error") for r in rows]
    for r in rows:
        assert r["top1"] == 1.0, (r["model"], r["variant"], r["top1"])
    by = {(r["model"], r["variant"]): r for r in rows}
    assert by[("by_index", "fp32")]["dataset"]["class_index"] == "integer-folder-names"
    assert by[("by_name", "fp32")]["dataset"]["class_index"] == "classes-list"
    # the rule is said once per model, and stored in words with every row
    rules = [m for m in logs if "class index from" in m]
    assert rules == ["model by_index: class index from integer folder names (folder '003' is class 3)",
                     "model by_name: class index from position in the classes list ('dog' is class 3)"]
    assert by[("by_name", "int8")]["dataset"]["class_index_rule"] == rules[1].split("class index from ")[1]


@pytest.mark.ort_cpu
@pytest.mark.slow
def test_a_test_only_idx_folder_runs_end_to_end(tmp_path, shared_cache):
    from quantbench.calibration_data import write_idx

    classes = [1, 4, 6, 9]
    positions = {c: i for i, c in enumerate(classes)}
    y = np.repeat(np.array(classes, np.uint8), 15)
    idx = tmp_path / "t10k-only"
    idx.mkdir()
    write_idx(idx / "t10k-images-idx3-ubyte.gz", label_images(y, positions))
    write_idx(idx / "t10k-labels-idx1-ubyte.gz", y)
    model = label_reading_onnx(tmp_path / "m.onnx", positions, n_out=10)
    rows, logs = sweep(tmp_path, shared_cache, f'[[models]]\nname = "{model}"\ndataset = "idx:{idx}"\n',
                       variants=FP32 + INT8)
    assert [r["status"] for r in rows] == ["ok", "ok"], [r.get("error") for r in rows]
    assert all(r["top1"] == 1.0 for r in rows)
    info = rows[0]["dataset"]
    # calibration is a held-out slice of the test images; the rest is evaluated
    assert info["n_calibration"] + info["n_evaluation"] == len(y) and rows[0]["eval_samples"] == info["n_evaluation"]
    assert not [m for m in logs if m.startswith("error: ")]


@pytest.mark.ort_cpu
@pytest.mark.slow
def test_a_partial_preprocess_table_keeps_the_models_other_defaults(tmp_path, shared_cache):
    """`preprocess = { resize = [28, 28] }` on fashion_cnn changes nothing else: mean/std stay the model's, so
    top-1 equals the default's (it fell from 89% to 63% when the table replaced the defaults). Rows record
    the resolved preprocessing."""
    models = ('[[models]]\nname = "fashion_cnn"\nlabel = "default"\n'
              '[[models]]\nname = "fashion_cnn"\nlabel = "resized"\npreprocess = { resize = [28, 28] }\n')
    rows, _ = sweep(tmp_path, shared_cache, models, eval_samples=300)
    by = {r["model"]: r for r in rows}
    assert by["default"]["status"] == by["resized"]["status"] == "ok"
    assert by["resized"]["top1"] == by["default"]["top1"] > 0.8
    pre = by["resized"]["dataset"]["preprocess"]
    assert pre["resize"] == [28, 28] and pre["mean"] == [0.286] and pre["std"] == [0.353] and pre["channels"] == 1
    assert by["default"]["dataset"]["preprocess"] == {**pre, "resize": None}
    assert by["resized"]["fingerprint_parts"]["data"] != by["default"]["fingerprint_parts"]["data"]


def test_a_merged_preprocess_that_does_not_hold_together_is_a_config_error():
    from quantbench.harness.config import ConfigError
    from quantbench.harness.sweep.prepare import resolve_models

    cfg = parse_config({"models": [{"name": "fashion_cnn", "preprocess": {"mean": [0.1, 0.2, 0.3]}}],
                        "variants": [{"name": "fp32"}]})
    with pytest.raises(ConfigError, match=r"model 'fashion_cnn': preprocess.mean has 3 values but channels = 1 "
                                          r"\(give 1\) \(your preprocess table merged over"):
        resolve_models(cfg)
    cfg.models[0].preprocess = {"mean": [0.1, 0.2, 0.3], "std": [0.2, 0.2, 0.2], "channels": 3}
    pm = resolve_models(cfg)[0]
    assert pm.preprocess["channels"] == 3
    assert pm.dataset_info["preprocess"]["mean"] == [0.1, 0.2, 0.3]  # rows of a model that fails to prepare have it


@pytest.mark.ort_cpu
@pytest.mark.slow
def test_a_default_calibration_size_uses_the_images_there_are_and_an_explicit_one_does_not(tmp_path, shared_cache):
    """An npz with 200 training images: INT8 without calib_samples calibrates on all 200 (the default 256 is
    cut, with one note in the log and the row); calib_samples = 300, asked for, fails naming both numbers."""
    data, positions = label_npz(tmp_path / "data.npz", list(range(10)), per_class=20)
    model = label_reading_onnx(tmp_path / "m.onnx", positions, n_out=10)
    variants = ('[[variants]]\nname = "int8-default"\nprecision = "int8"\ncalibration = "minmax"\n'
                '[[variants]]\nname = "int8-300"\nprecision = "int8"\ncalibration = "minmax"\ncalib_samples = 300\n')
    rows, logs = sweep(tmp_path, shared_cache, f'[[models]]\nname = "{model}"\ndataset = "npz:{data}"\n', variants)
    by = {r["variant"]: r for r in rows}
    assert by["int8-default"]["status"] == "ok" and by["int8-default"]["top1"] == 1.0
    assert by["int8-default"]["variant_settings"]["calib_samples"] == 200
    note = "calib_samples not set: the default 256 is more than the 200 calibration images there are; all 200 used"
    assert note in by["int8-default"]["artifact_notes"]
    assert sum(note in m for m in logs) == 1
    assert by["int8-300"]["status"] == "failed"
    assert "calib_samples = 300, but data.npz/train has only 200 calibration images" in by["int8-300"]["error"]


@pytest.mark.ort_cpu
@pytest.mark.slow
def test_sensitivity_says_how_many_images_it_used_and_fits_a_default_calibration_size(tmp_path):
    """Asked for 1000 evaluation and SQNR images where 400 exist, the log says 400; with no calib_samples
    on 200 training images, the study calibrates on those 200 (the default 256 would have failed)."""
    from quantbench.harness.studies.sensitivity import SensitivityOptions, run_study
    from tests.harness.studies.test_sensitivity import _build_data, _build_model

    model = _build_model(tmp_path / "m.onnx")
    data = _build_data(model, tmp_path / "d.npz")  # 200 training, 400 test images
    cfg = parse_config({
        "run": {"output": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"), "eval_samples": 1000,
                "threads": 1, "timeout_s": 300, "report": False},
        "models": [{"name": str(model), "dataset": f"npz:{data}", "preprocess": {"mean": [0.0], "std": [1.0]}}],
        "variants": [{"name": "int8", "calibration": "minmax"}]})
    logs: list[str] = []
    results = run_study(cfg, tmp_path / "out", SensitivityOptions(sqnr_samples=1000, top=1), log=logs.append)
    assert not results[0].error, logs
    assert any("SQNR of each node's models on 400 images" in m for m in logs), logs
    assert any("top-1 of the 1 most sensitive nodes on 400 images" in m for m in logs), logs
    assert any("the default 256 is more than the 200 calibration images" in m for m in logs), logs
    assert results[0].summary["variant_settings"]["calib_samples"] == 200


@pytest.mark.slow  # a whole sweep: 6 s on two quiet cores
@pytest.mark.ort_cpu
def test_sensitivity_that_writes_no_rows_does_not_print_a_rows_path(tmp_path, shared_cache):
    from tests.harness.conftest import run_cli

    cfg = tmp_path / "s.toml"
    cfg.write_text(FAST.format(out=tmp_path / "out", cache=shared_cache, eval_samples=50, timeout_s=60)
                   + f'[[models]]\nname = "fashion_cnn"\ndataset = "npz:{tmp_path / "missing.npz"}"\n'
                   + '[[variants]]\nname = "int8"\nprecision = "int8"\n')
    proc = run_cli("sensitivity", str(cfg), "--sqnr-samples", "8", "--top", "0", cache=shared_cache)
    text = proc.stdout + proc.stderr
    assert "npz file not found" in text and "Traceback" not in text
    assert "rows:" not in text and "no rows written" in text
    assert not (tmp_path / "out" / "sensitivity.jsonl").exists()
