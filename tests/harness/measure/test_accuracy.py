"""evaluate_outputs on a real runtime: top-k when the plan allows it, a note when not, failure on NaN."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quantbench.harness.measure.accuracy import NonFiniteOutputs, evaluate_outputs
from tests.harness.sweep.test_prepare import _onnx_28
from tests.harness.test_user_models import label_npz, label_reading_onnx


def _run(model: Path, data_spec: str, plan, reference=None, batch: int = 4):
    from quantbench.calibration_data import BatchReader, Preprocess, open_source
    from quantbench.runtimes import Artifact, create_runtime

    split = open_source(data_spec).evaluation
    reader = BatchReader(split, Preprocess.from_dict({"channels": 1}), split.select(None), batch, "input",
                         pad_last=True)
    rt = create_runtime("ort-cpu", "cpu", {"threads": 1})
    rt.activate(Artifact(format="onnx", precision="fp32", path=model), batch=batch)
    try:
        return evaluate_outputs(rt, reader, reference, plan)
    finally:
        rt.deactivate()


@pytest.mark.ort_cpu
def test_top_k_on_a_subset_and_the_note_when_the_plan_says_no(tmp_path):
    data, positions = label_npz(tmp_path / "d.npz", [2, 500, 998], per_class=5)
    model = label_reading_onnx(tmp_path / "m.onnx", positions, n_out=1000)
    row = _run(model, f"npz:{data}", {"top_k": True, "num_classes": 1000, "note": ""})
    assert row["top1"] == 1.0 and row["top5"] == 1.0 and row["accuracy_note"] == ""
    assert row["eval_samples"] == 15  # the padded last batch is not counted
    note = "the first output 'logits' has shape (N, 2, 500), not (N, classes) logits"
    row = _run(model, f"npz:{data}", {"top_k": False, "num_classes": 1000, "note": note})
    assert row["top1"] is None and row["top5"] is None and row["accuracy_note"] == note


@pytest.mark.ort_cpu
def test_agreement_and_error_against_the_reference(tmp_path):
    data, positions = label_npz(tmp_path / "d.npz", [0, 1, 2], per_class=4)
    model = label_reading_onnx(tmp_path / "m.onnx", positions, n_out=3)
    plan = {"top_k": True, "num_classes": 3, "note": ""}
    same = _run(model, f"npz:{data}", plan)
    assert same["top1"] == 1.0
    # A reference that disagrees on every sample whose label is 0 (4 of 12) and is off by 0.5 everywhere.
    from quantbench.calibration_data import open_source

    labels = open_source(f"npz:{data}").evaluation.labels
    onehot = np.eye(3, dtype=np.float32)[labels]
    pixel = (1 - 0.0) / 1.0  # scale 1/255, mean 0, std 1: the bright pixel reads 1.0
    ref = onehot * pixel + 0.5
    ref[labels == 0] = np.array([0.5, 2.0, 0.5], np.float32)
    row = _run(model, f"npz:{data}", plan, reference=ref.reshape(len(ref), 1, 3))  # any (N, ...) shape
    assert row["agreement_top1"] == pytest.approx(8 / 12, abs=1e-6)
    assert row["max_abs_err"] == pytest.approx(2.0) and row["mean_abs_err"] > 0.5


@pytest.mark.ort_cpu
def test_non_finite_outputs_fail_the_cell(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    # test-only: 1 held out for calibration
    np.savez(data, x_test=rng.integers(0, 255, (6, 28, 28), dtype=np.uint8), y_test=np.arange(6) % 3)
    model = _onnx_28(tmp_path / "nan.onnx", "nan")
    with pytest.raises(NonFiniteOutputs, match="non-finite outputs .* for 5 of 5"):
        _run(model, f"npz:{data}", {"top_k": True, "num_classes": 10, "note": ""})


def _gemm_onnx(path: Path, w: np.ndarray, side: int) -> Path:
    """A real ONNX classifier: logits = flattened image @ w.T (input (N, 1, side, side))."""
    import onnx
    from onnx import TensorProto, helper

    from quantbench.common.onnx_save import with_lowest_ir_version

    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["f"]), helper.make_node("Gemm", ["f", "w"], ["logits"], transB=1)],
        "planted", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, side, side])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", w.shape[0]])],
        [helper.make_tensor("w", TensorProto.FLOAT, list(w.shape), w.ravel())])
    onnx.save(with_lowest_ir_version(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])), path)
    return path


def planted_models(tmp_path: Path, n: int = 2000, classes: int = 10, every: int = 20) -> tuple[Path, Path, Path]:
    """(data, fp32 model, variant model): the variant gets exactly every ``every``-th image wrong.

    Each 8×8 image lights pixel ``label``; the flipped images also light pixel 16 + label, which the
    variant reads as strong evidence for the next class and the FP32 model ignores.
    """
    side = 8
    y = np.arange(n, dtype=np.int64) % classes
    x = np.zeros((n, side * side), np.uint8)
    x[np.arange(n), y] = 255
    flipped = np.arange(n) % every == every - 1
    x[np.flatnonzero(flipped), 16 + y[flipped]] = 255
    data = tmp_path / "planted.npz"
    np.savez(data, x_test=x.reshape(n, side, side), y_test=y, x_train=x.reshape(n, side, side), y_train=y)
    w = np.zeros((classes, side * side), np.float32)
    w[np.arange(classes), np.arange(classes)] = 1.0
    fp32 = _gemm_onnx(tmp_path / "clean.onnx", w, side)
    w[(np.arange(classes) + 1) % classes, 16 + np.arange(classes)] = 2.0
    return data, fp32, _gemm_onnx(tmp_path / "variant.onnx", w, side)


@pytest.mark.ort_cpu
@pytest.mark.slow  # a sweep of four cells on 2,000 images (~45 s on a shared 2-core machine)
def test_a_planted_five_percent_loss_is_significant_and_an_identical_file_is_not(tmp_path, shared_cache):
    """End to end through a sweep: the rows carry the paired comparison with FP32 on the same images."""
    from tests.harness.test_user_models import sweep

    data, fp32, variant = planted_models(tmp_path)
    same = tmp_path / "same.onnx"
    same.write_bytes(fp32.read_bytes())  # an "INT8" file byte-identical to FP32
    twin = tmp_path / "twin.onnx"
    twin.write_bytes(variant.read_bytes())
    variants = ('[[variants]]\nname = "fp32"\nprecision = "fp32"\n'
                f'[[variants]]\nname = "planted"\nprecision = "int8"\nonnx = "{variant}"\n'
                f'[[variants]]\nname = "twin"\nprecision = "int8"\nonnx = "{twin}"\n'
                f'[[variants]]\nname = "same"\nprecision = "int8"\nonnx = "{same}"\n')
    rows, _ = sweep(tmp_path, shared_cache, f'[[models]]\nname = "{fp32}"\ndataset = "npz:{data}"\n', variants)
    by = {r["variant"]: r for r in rows}
    assert all(r["status"] == "ok" for r in rows), [r.get("error") for r in rows]
    planted = by["planted"]
    assert planted["eval_samples"] == 2000 and planted["top1"] == pytest.approx(0.95)
    assert (planted["fp32_only_correct"], planted["variant_only_correct"]) == (100, 0)
    assert planted["delta_top1"] == pytest.approx(-0.05) and planted["delta_top1_p"] < 1e-20
    lo, hi = planted["delta_top1_ci95"]
    assert lo < -0.05 < hi < 0  # significant, with the right sign, and covering the truth
    lo, hi = planted["top1_ci95"]
    assert lo < 0.95 < hi and planted["agreement_ci95"][0] < 0.95 < planted["agreement_ci95"][1]
    assert {k: by["twin"][k] for k in ("delta_top1", "delta_top1_ci95", "delta_top1_p")} == {
        k: planted[k] for k in ("delta_top1", "delta_top1_ci95", "delta_top1_p")}
    for name in ("same", "fp32"):
        assert by[name]["delta_top1"] == 0 and by[name]["delta_top1_p"] == 1.0
        assert by[name]["delta_top1_ci95"][0] < 0 < by[name]["delta_top1_ci95"][1]
    # the report ranks the byte-identical pair alike in every accuracy column: never one "best" over its twin
    from quantbench.reports.model import build_report
    from quantbench.reports.tables import best_cells, comparison_groups

    (group,) = comparison_groups(build_report([tmp_path / "out" / "results.jsonl"])).values()
    names = [r["variant"] for r in group]
    for key, (chosen, _) in best_cells(group).items():
        if key in ("top1", "delta", "agreement"):
            assert ("planted" in {names[i] for i in chosen}) == ("twin" in {names[i] for i in chosen}), key
