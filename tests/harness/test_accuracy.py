"""evaluate_outputs on a real runtime: top-k when the plan allows it, a note when not, failure on NaN."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from quantbench.harness.accuracy import NonFiniteOutputs, evaluate_outputs

from .test_prepare import _onnx_28
from .test_user_models import label_npz, label_reading_onnx


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
    np.savez(data, x_test=rng.integers(0, 255, (6, 28, 28), dtype=np.uint8), y_test=np.arange(6) % 3)  # test-only: 1 held out for calibration
    model = _onnx_28(tmp_path / "nan.onnx", "nan")
    with pytest.raises(NonFiniteOutputs, match="non-finite outputs .* for 5 of 5"):
        _run(model, f"npz:{data}", {"top_k": True, "num_classes": 10, "note": ""})
