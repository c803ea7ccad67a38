"""Subset tasks: ``class_subset`` keeps some classes of a data source, ``restrict_outputs`` scores among them only."""
from __future__ import annotations

import json

import numpy as np
import pytest

from quantbench.calibration_data import DataError, open_source
from quantbench.harness.measure.accuracy import evaluate_outputs


class _Fixed:
    """A stand-in runtime that returns fixed logits, batch by batch (evaluate_outputs only calls these)."""

    def __init__(self, logits: np.ndarray) -> None:
        self.logits, self.at = logits, 0

    def stage(self, x):
        return x

    def infer(self, x):
        out = self.logits[self.at:self.at + len(x)]
        self.at += len(x)
        return out

    def fetch(self, y):
        return y


def test_restricted_top1_and_agreement_take_the_argmax_over_the_task_classes_only():
    # Label 3 or 5 (a cat/dog task); the model's overall argmax is class 0 on the first two images.
    logits = np.array([[9, 0, 0, 2, 0, 1, 0, 0, 0, 0],
                       [9, 0, 0, 1, 0, 2, 0, 0, 0, 0],
                       [0, 0, 0, 5, 0, 1, 0, 0, 0, 0]], np.float32)
    labels = np.array([3, 5, 5])
    reader = [(np.zeros((3, 1)), labels, 3)]
    plan = {"top_k": True, "num_classes": 10, "note": ""}
    free = evaluate_outputs(_Fixed(logits), reader, None, plan)
    task = evaluate_outputs(_Fixed(logits), reader, None, {**plan, "restrict": [3, 5]})
    assert free["top1"] == 0.0 and "restricted_outputs" not in free
    assert task["top1"] == pytest.approx(2 / 3) and task["top5"] == 1.0 and task["restricted_outputs"] == [3, 5]
    # Against a reference whose overall argmax is 0 everywhere but whose task argmax matches: full agreement.
    ref = logits.copy()
    again = evaluate_outputs(_Fixed(logits), reader, ref, {**plan, "restrict": [3, 5]})
    assert again["agreement_top1"] == 1.0


def _npz(path, n=60):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (n, 4, 4), dtype=np.uint8)
    y = np.arange(n) % 3
    np.savez(path, x_train=x, y_train=y, x_test=x[: n // 2], y_test=y[: n // 2])
    return f"npz:{path}"


def test_class_subset_keeps_those_classes_in_both_splits_with_their_indices(tmp_path):
    spec = _npz(tmp_path / "d.npz")
    whole = open_source(spec)
    sub = open_source({"spec": spec, "class_subset": [2, 0]})
    assert set(sub.calibration.labels.tolist()) == {0, 2} and set(sub.evaluation.labels.tolist()) == {0, 2}
    assert len(sub.evaluation) == 20 and sub.num_classes == whole.num_classes
    assert sub.describe()["class_subset"] == [0, 2] and sub.fingerprint != whole.fingerprint
    with pytest.raises(DataError, match=r"class_subset names class\(es\) \[7\]"):
        open_source({"spec": spec, "class_subset": [0, 7]})
    for bad in ([], [1, 1], [-1], ["cat"], 3):
        with pytest.raises(DataError, match="class_subset must be"):
            open_source({"spec": spec, "class_subset": bad})
    with pytest.raises(DataError, match="restrict_outputs must be true or false"):
        open_source({"spec": spec, "restrict_outputs": "yes"})


@pytest.mark.slow
@pytest.mark.ort_cpu
def test_a_sweep_scores_a_subset_task_and_rows_say_so(tmp_path):
    from quantbench.harness.cli import main

    cfg = tmp_path / "c.toml"
    models = ""
    for label, extra in (("all-outputs", ""), ("task", ", restrict_outputs = true")):
        models += (f'[[models]]\nname = "fashion_cnn"\nlabel = "{label}"\n'
                   f'dataset = {{ spec = "fashion-mnist-subset", class_subset = [0, 6]{extra} }}\n')
    cfg.write_text(f'[run]\noutput = "{tmp_path / "out"}"\nruntimes = ["ort-cpu"]\nbatch_sizes = [32]\n'
                   'min_iters = 2\nmin_time_s = 0.0\ninterleave_rounds = 0\n' + models
                   + '[[variants]]\nname = "fp32"\nprecision = "fp32"\n')
    assert main(["run", str(cfg), "--no-report"]) == 0
    rows = {r["model"]: r for r in map(json.loads, (tmp_path / "out" / "results.jsonl").read_text().splitlines())}
    task, free = rows["task"], rows["all-outputs"]
    assert task["restricted_outputs"] == [0, 6] and task["dataset"]["restrict_outputs"] == [0, 6]
    assert free.get("restricted_outputs") is None and free["dataset"]["class_subset"] == [0, 6]
    assert task["eval_samples"] == free["eval_samples"] and task["top5"] == 1.0
    assert task["top1"] >= free["top1"]  # T-shirt vs shirt: wrong guesses outside the two classes no longer count


@pytest.mark.parametrize("table, message", [
    ('{ spec = "digits", class_subset = "0,1" }', "class_subset must be a non-empty list of class indices"),
    ('{ spec = "digits", restrict_outputs = 1 }', "restrict_outputs must be true or false"),
    ('{ spec = "digits", restrict_output = true }', "did you mean 'restrict_outputs'"),
])
def test_config_checks_the_subset_keys_before_anything_runs(tmp_path, table, message):
    from quantbench.harness.config import ConfigError, load_config

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[[models]]\nname = "fashion_cnn"\ndataset = {table}\n[[variants]]\nname = "fp32"\n')
    with pytest.raises(ConfigError, match=message):
        load_config(cfg)
