"""Per-node sensitivity and the mixed-precision budget search, on a tiny model with one deliberately
sensitive layer (built here) and on the shipped Fashion-MNIST CNN through the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.harness.conftest import run_cli, write_config

pytestmark = pytest.mark.ort_cpu

SENSITIVE = "sensitive_conv"
CLASSES = 4


def _build_model(path: Path) -> Path:
    """input (1x8x8) -> conv_a -> Relu -> sensitive_conv -> Tanh -> Flatten -> classifier.

    ``sensitive_conv``'s output channel 0 is ~500x larger than the others (an outlier-heavy activation):
    quantized per tensor, its 8-bit step wipes out channels 1-3, which alone carry the class (the
    classifier ignores channel 0, which Tanh saturates anyway). Tanh is not quantized by ORT, so that
    activation is quantized only when sensitive_conv itself is.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from quantbench.common.onnx_save import with_lowest_ir_version

    rng = np.random.default_rng(0)
    w_a = (rng.standard_normal((4, 1, 3, 3)) * 0.5).astype(np.float32)
    w_s = (rng.standard_normal((4, 4, 1, 1)) * 0.5).astype(np.float32)
    w_s[0] *= 500.0
    w_c = (rng.standard_normal((4 * 64, CLASSES)) * 0.3).astype(np.float32)
    w_c[:64] = 0.0  # features of channel 0
    inits = [numpy_helper.from_array(a, n) for a, n in ((w_a, "w_a"), (np.zeros(4, np.float32), "b_a"),
                                                        (w_s, "w_s"), (np.zeros(4, np.float32), "b_s"),
                                                        (w_c, "w_c"), (np.zeros(CLASSES, np.float32), "b_c"))]
    nodes = [
        helper.make_node("Conv", ["input", "w_a", "b_a"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["a_relu"], name="relu_a"),
        helper.make_node("Conv", ["a_relu", "w_s", "b_s"], ["s"], name=SENSITIVE),
        helper.make_node("Tanh", ["s"], ["s_tanh"], name="tanh"),
        helper.make_node("Flatten", ["s_tanh"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "w_c", "b_c"], ["logits"], name="classifier"),
    ]
    graph = helper.make_graph(nodes, "sensitive", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                ["batch", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])], inits)
    model = with_lowest_ir_version(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _build_data(model: Path, path: Path) -> Path:
    """Random images labelled by the FP32 model itself, keeping the clearest 30% (FP32 top-1 = 100%)."""
    import onnxruntime as ort

    rng = np.random.default_rng(1)
    x = rng.standard_normal((2000, 1, 8, 8)).astype(np.float32)
    logits = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    top2 = np.sort(logits, axis=1)[:, -2:]
    keep = np.argsort(top2[:, 1] - top2[:, 0])[-600:]
    x, y = x[keep, 0], logits[keep].argmax(axis=1).astype(np.int64)
    np.savez(path, x_train=x[:200], y_train=y[:200], x_test=x[200:], y_test=y[200:])
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("sens-tiny")
    model = _build_model(d / "sensitive.onnx")
    return {"dir": d, "model": model, "data": _build_data(model, d / "data.npz")}


def _config(tiny: dict[str, Path], out: Path, **variant) -> object:
    from quantbench.harness.config import parse_config

    return parse_config({
        "run": {"output": str(out), "cache_dir": str(tiny["dir"] / "cache"), "batch_sizes": [16], "eval_samples": 400,
                "warmup_iters": 2, "min_iters": 5, "min_time_s": 0.01, "max_time_s": 1.0, "io_batches": 2,
                "interleave_rounds": 1, "interleave_iters": 5, "interleave_block_s": 0.01, "threads": 1,
                "timeout_s": 300, "report": False},
        "models": [{"name": str(tiny["model"]), "dataset": f"npz:{tiny['data']}",
                    "preprocess": {"channels": 1, "mean": [0.0], "std": [1.0]}}],
        "variants": [{"name": "int8", "calibration": "minmax", "calib_samples": 200, **variant}],
    })


def _study(tiny, out, opts=None, **variant):
    from quantbench.harness.studies.sensitivity import SensitivityOptions, run_study

    messages: list[str] = []
    results = run_study(_config(tiny, out, **variant), out, opts or SensitivityOptions(sqnr_samples=200, top=3),
                        log=messages.append)
    assert len(results) == 1
    assert not results[0].error, (results[0].error, messages)
    return results[0], messages


@pytest.fixture(scope="module")
def budget_study(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("sens-out")
    study, messages = _study(tiny, out, accuracy_budget=0.5)
    return study, messages, out


@pytest.mark.slow
def test_outlier_layer_ranks_first(budget_study) -> None:
    study, _, _ = budget_study
    ranked = [r["node"] for r in study.rows]
    assert sorted(ranked) == sorted(["conv_a", SENSITIVE, "classifier"])
    first = study.rows[0]
    assert first["node"] == SENSITIVE and first["rank"] == 1
    others = study.rows[1:]
    # Quantizing only the outlier layer costs far more signal than quantizing any other node alone ...
    assert all(first["sqnr_quant_only_db"] + 10 < o["sqnr_quant_only_db"] for o in others)
    # ... and keeping only it in float recovers far more than keeping any other node in float.
    assert all(first["sqnr_float_only_db"] > o["sqnr_float_only_db"] + 10 for o in others)
    # top-1 for the top candidates: quantizing it alone loses accuracy, keeping it alone float does not.
    assert first["top1_fp32"] == 1.0
    assert first["top1_drop_quant_only_pts"] > 5
    assert first["top1_drop_float_only_pts"] <= 0.5
    # The other order agrees on the outlier layer.
    from quantbench.harness.studies.sensitivity import rank_nodes

    assert rank_nodes([dict(r) for r in study.rows], "quantized-only")[0]["node"] == SENSITIVE
    s = study.summary
    assert s["nodes"] == 3 and s["kind"] == "sensitivity_summary" and s["top1_drop_int8_pts"] > 5
    assert "flatten" not in ranked and "tanh" not in ranked  # not quantized (Tanh is not in ORT's QDQ op list)


@pytest.mark.slow
def test_budget_search_keeps_the_sensitive_layer_float(budget_study) -> None:
    study, _, out = budget_study
    b = study.budget
    assert b["met"] is True, b["message"]
    assert b["exclude_nodes"] == [SENSITIVE]
    steps = [s for s in study.budget_steps if s["step"] is not None]
    assert [s["step"] for s in steps] == [0, 1]
    assert steps[0]["meets_budget"] is False and steps[0]["drop_pts"] > 0.5
    assert steps[1]["chosen"] is True and steps[1]["nodes_float"] == [SENSITIVE]
    assert steps[1]["drop_pts"] <= 0.5
    for s in steps:  # measured on the runtime as cells: latency and what ran
        assert s["status"] == "ok" and s["compute_p50_ms"] > 0 and s["exec_precision"]
    assert "met" in b["message"] and "NOT" not in b["message"]
    # Rows on disk: one per node, the summary, the FP32 reference, two steps and the outcome.
    rows = [json.loads(ln) for ln in (out / "sensitivity.jsonl").read_text().splitlines()]
    kinds = [r["kind"] for r in rows]
    assert kinds.count("sensitivity") == 3 and kinds.count("budget_step") == 3 and kinds.count("budget") == 1
    assert not (out / "sensitivity-work").exists() or not any((out / "sensitivity-work").iterdir())


@pytest.mark.slow
def test_impossible_budget_reports_not_met_with_best(tiny, tmp_path) -> None:
    from quantbench.harness.studies.sensitivity import SensitivityOptions

    study, messages = _study(tiny, tmp_path / "out", SensitivityOptions(sqnr_samples=100, top=0, max_float=0),
                             accuracy_budget=0.5)
    b = study.budget
    assert b["met"] is False and b["status"] == "ok"
    assert b["chosen_step"] == 0 and b["top1"] is not None and b["drop_pts"] > 0.5
    assert "NOT met" in b["message"] and "best found" in b["message"]
    assert any("NOT met" in m for m in messages)
    assert [s["chosen"] for s in study.budget_steps if s["step"] is not None] == [True]


@pytest.mark.slow
def test_sqnr_does_not_depend_on_the_evaluation_batch(tiny, tmp_path) -> None:
    """The batch the per-node models run at is an incidental knob: same ranking, same SQNR (within ORT's rounding)."""
    from quantbench.calibration_data import BatchReader, Preprocess, open_source
    from quantbench.exporters.quantize import QuantSettings
    from quantbench.harness.studies import node_quant as nq

    qs = QuantSettings(calib_samples=200)
    src = open_source(f"npz:{tiny['data']}")
    pre = Preprocess.from_dict({"channels": 1, "mean": [0.0], "std": [1.0]})
    reader = BatchReader(src.calibration, pre, src.calibration.select(200), 32, "input")
    nq.prepare_graph(tiny["model"], qs, reader, tmp_path)
    x = np.concatenate([b[0] for b in BatchReader(src.evaluation, pre, src.evaluation.select(150), 50, "input")])
    full = nq.quantize(tmp_path, qs, tmp_path / "full.onnx")
    names = [n for n, _ in nq.candidate_nodes(qs, full)]
    scores = {}
    for batch in (1, 7, 64):
        ref = nq.run_outputs(tiny["model"], x, batch, threads=1)
        scores[batch] = {n: nq.sqnr_db(ref, nq.run_outputs(nq.quantize(tmp_path, qs, tmp_path / "n.onnx", only=[n]),
                                                           x, batch, threads=1)) for n in names}
    for batch in (7, 64):
        assert sorted(names, key=scores[batch].get) == sorted(names, key=scores[1].get)
        for n in names:
            assert scores[batch][n] == pytest.approx(scores[1][n], abs=0.2)


def test_rank_orders() -> None:
    from quantbench.harness.studies.sensitivity import rank_nodes

    nodes = [{"node": "a", "sqnr_quant_only_db": 20.0, "sqnr_float_only_db": 30.0},
             {"node": "b", "sqnr_quant_only_db": 30.0, "sqnr_float_only_db": 40.0},
             {"node": "c", "sqnr_quant_only_db": None, "sqnr_float_only_db": 10.0},
             {"node": "d", "error": "boom"}]
    assert [n["node"] for n in rank_nodes([dict(n) for n in nodes], "float-only")] == ["b", "a", "c", "d"]
    ranked = rank_nodes([dict(n) for n in nodes], "quantized-only")
    assert [n["node"] for n in ranked] == ["a", "b", "c", "d"]
    assert [n["rank"] for n in ranked] == [1, 2, 3, None]


def test_sqnr_definition() -> None:
    from quantbench.harness.studies.node_quant import sqnr_db

    ref = np.array([[3.0, 4.0]])
    assert sqnr_db(ref, ref) is None  # no noise
    assert sqnr_db(ref, ref + np.array([[0.3, 0.4]])) == pytest.approx(20.0)  # noise power 1/100 of the signal


@pytest.mark.slow
def test_cli_sensitivity_on_fashion_cnn(tmp_path, shared_cache) -> None:
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "s.toml", out, '[[variants]]\nname = "int8-minmax"\ncalibration = "minmax"\n'
                                                 'calib_samples = 64\n', eval_samples=200)
    res = run_cli("sensitivity", str(cfg), "--sqnr-samples", "64", "--top", "1", cache=shared_cache)
    assert res.returncode == 0, res.stderr + res.stdout
    assert "per-node sensitivity" in res.stdout and "Traceback" not in res.stderr
    rows = [json.loads(ln) for ln in (out / "sensitivity.jsonl").read_text().splitlines()]
    nodes = [r for r in rows if r["kind"] == "sensitivity"]
    assert sorted(r["rank"] for r in nodes) == [1, 2, 3, 4]  # 2 Conv + 2 Gemm
    assert {r["op_type"] for r in nodes} == {"Conv", "Gemm"}
    assert all(r["sqnr_samples"] == 64 and r["sqnr_quant_only_db"] > 0 for r in nodes)
    top = next(r for r in nodes if r["rank"] == 1)
    assert top["top1_quant_only"] is not None and top["top1_fp32"] is not None
    assert all(r["top1_quant_only"] is None for r in nodes if r["rank"] > 1)
    summary = next(r for r in rows if r["kind"] == "sensitivity_summary")
    assert summary["eval_samples"] == 200 and summary["status"] == "ok"


@pytest.mark.parametrize(("args", "expected"), [
    (["--variant", "nope"], "--variant: unknown variant(s) nope"),
    (["--sqnr-samples", "0"], "--sqnr-samples must be >= 1"),
    (["--rank-by", "nope"], "--rank-by must be one of float-only, quantized-only"),
    (["--runtime", "nope", "--budget", "1"], "--runtime"),
])
def test_cli_sensitivity_bad_input_is_one_line(tmp_path, shared_cache, args, expected) -> None:
    cfg = write_config(tmp_path / "s.toml", tmp_path / "out", '[[variants]]\nname = "int8"\ncalib_samples = 16\n',
                       eval_samples=50)
    res = run_cli("sensitivity", str(cfg), "--sqnr-samples", "16", "--top", "0", *args, cache=shared_cache)
    assert res.returncode == 2 and res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr  # one line: no traceback, no second message
    assert lines[0].startswith("error: ") and expected in lines[0]


@pytest.mark.slow
def test_cli_sensitivity_says_a_failed_studys_error_once(tmp_path, shared_cache) -> None:
    """Unreadable calibration data fails the study: its one-line error is printed once (it was printed twice: as
    the study failed and again in the closing summary), the exit is 1 and no rows file is claimed."""
    data = tmp_path / "data"
    for label in ("a", "b"):
        (data / label).mkdir(parents=True)
        (data / label / "x.jpg").write_text("not a JPEG")
    models = f'[[models]]\nname = "cifar10_cnn"\ndataset = "folder:{data}"\n'
    cfg = write_config(tmp_path / "s.toml", tmp_path / "out", '[[variants]]\nname = "int8-minmax"\n', models=models)
    res = run_cli("sensitivity", str(cfg), "--sqnr-samples", "16", cache=shared_cache)
    assert res.returncode == 1, res.stderr
    text = res.stdout + res.stderr
    assert text.count("cannot identify image file") == 1, text
    assert "no rows written" in text and "Traceback" not in text


@pytest.mark.slow
def test_run_refuses_to_build_a_budget_variant_as_plain_int8(tmp_path, shared_cache) -> None:
    """`quantbench run` must not measure a plain INT8 model under a variant that promises a budget."""
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "r.toml", out, '[[variants]]\nname = "fp32"\nprecision = "fp32"\n\n'
                                                 '[[variants]]\nname = "int8-budget"\ncalib_samples = 16\n'
                                                 'accuracy_budget = 0.5\n', eval_samples=50)
    res = run_cli("run", str(cfg), cache=shared_cache)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    rows = [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()]
    budget = [r for r in rows if r["variant"] == "int8-budget"]
    assert budget and all(r["status"] == "failed" and "quantbench sensitivity" in r["error"] for r in budget)
    assert all(r["status"] == "ok" for r in rows if r["variant"] == "fp32")


@pytest.mark.slow
def test_budget_is_selected_on_one_half_of_the_images_and_reported_on_the_other(budget_study) -> None:
    study, _, _ = budget_study
    b = study.budget
    steps = [s for s in study.budget_steps if s["step"] is not None]
    halves = steps[-1]["holdout"]
    assert halves["select"]["n"] + halves["report"]["n"] == 400 and abs(halves["select"]["n"] - 200) <= CLASSES
    for s in steps:  # the decision used the selection half's loss
        assert s["drop_pts"] == pytest.approx(-s["holdout"]["select"]["delta_top1"] * 100)
    # the outcome is the chosen step on the half the search never looked at, with its interval
    assert b["report_n"] == halves["report"]["n"] and b["top1"] == halves["report"]["top1"]
    lo, hi = b["drop_ci95_pts"]
    assert lo <= b["drop_pts"] <= hi and b["budget_check"] in ("within", "not significantly beyond", "beyond")
    assert "selected on" in b["evaluated_on"] and "reported on the other" in b["evaluated_on"]
    assert "rule: top-1 loss vs FP32 on the selection half" in b["message"] and "held-out images" in b["message"]


def test_held_out_check_reads_the_interval_against_the_budget() -> None:
    from quantbench.harness.studies.mixed_precision import held_out_report

    def step(delta, lo, hi):
        half = {"n": 500, "top1": 0.9, "top1_ci95": [0.87, 0.92], "delta_top1": delta, "delta_top1_ci95": [lo, hi],
                "delta_top1_p": 0.5}
        return {"holdout": {"seed": 0, "select": half, "report": half}, "drop_pts": -delta * 100}

    assert held_out_report(step(-0.002, -0.006, 0.002), 1.0)["budget_check"] == "within"
    assert held_out_report(step(-0.009, -0.016, -0.002), 1.0)["budget_check"] == "not significantly beyond"
    assert held_out_report(step(-0.03, -0.04, -0.02), 1.0)["budget_check"] == "beyond"
    assert held_out_report(None, 1.0)["budget_check"] is None


@pytest.mark.slow
def test_per_node_and_whole_model_top1_changes_carry_paired_intervals(budget_study) -> None:
    from rich.console import Console

    from quantbench.reports.console_sensitivity import render_console

    study, _, _ = budget_study
    first = study.rows[0]  # the outlier layer: quantizing it alone costs > 5 points on 400 images
    lo, hi = first["top1_drop_quant_only_ci95_pts"]
    assert lo <= first["top1_drop_quant_only_pts"] <= hi and lo > 0 and first["top1_drop_quant_only_p"] < 0.05
    lo, hi = study.summary["top1_drop_int8_ci95_pts"]
    assert lo <= study.summary["top1_drop_int8_pts"] <= hi
    console = Console(record=True, width=250, color_system=None)
    render_console([study], console)
    text = console.export_text()
    assert f"{-first['top1_drop_quant_only_pts']:+.2f} ±" in text and "exact McNemar p ≥ 0.05" in text


@pytest.mark.slow
def test_ctrl_c_keeps_finished_nodes_and_a_rerun_resumes_from_them(tmp_path, shared_cache) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.harness.conftest import ROOT

    out = tmp_path / "out"
    cfg = write_config(tmp_path / "s.toml", out, '[[variants]]\nname = "int8-minmax"\ncalibration = "minmax"\n'
                                                 'calib_samples = 64\n', eval_samples=200)
    args = ["sensitivity", str(cfg), "--sqnr-samples", "10000", "--top", "0", "--no-report"]
    env = dict(os.environ, QUANTBENCH_CACHE=str(shared_cache),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, "-m", "quantbench.harness.cli", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    finished: list[dict] = []
    while time.monotonic() < deadline and not finished and proc.poll() is None:
        for progress in out.glob("sensitivity-work/*/sqnr.progress.jsonl"):
            finished = [json.loads(ln) for ln in progress.read_text().splitlines()
                        if ln.endswith("}") and '"event": "node"' in ln]
        time.sleep(0.05)
    assert finished, "no node finished"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    (line,) = err.strip().splitlines()
    (work,) = (out / "sensitivity-work").iterdir()
    kept = [json.loads(ln) for ln in (work / "sqnr.progress.jsonl").read_text().splitlines() if '"node"' in ln
            and '"event": "node"' in ln]
    measured = [e for e in kept if e.get("alone", True)]  # not the pass-through ops (MaxPool …)
    assert 1 <= len(measured) < 4, "interrupted after the first node and before the last"
    assert line == (f"error: interrupted: {len(kept)} node(s) done so far are kept in {work}; rerun the same "
                    "command to resume from them")
    assert not (out / "sensitivity.jsonl").exists()

    again = run_cli(*args, cache=shared_cache)
    assert again.returncode == 0, again.stderr + again.stdout
    assert f"resuming: {len(kept)} node(s) already done in {work}" in again.stdout
    rows = {r["node"]: r for r in map(json.loads, (out / "sensitivity.jsonl").read_text().splitlines())
            if r["kind"] == "sensitivity"}
    assert len(rows) == 4
    for event in measured:  # taken from the interrupted run, not measured again
        assert rows[event["node"]]["node_seconds"] == event["seconds"]
    assert not (out / "sensitivity-work").exists()  # the work folder is removed once the study is written


def test_interrupted_message_says_only_what_is_true(tmp_path) -> None:
    from quantbench.harness.studies.sensitivity import interrupted_message

    assert interrupted_message(tmp_path, None, 0) == "interrupted before any node was measured; nothing was written"
    assert interrupted_message(tmp_path, tmp_path / "w", 0) == \
        "interrupted before any node was measured; nothing was written"
    assert interrupted_message(tmp_path, None, 2) == \
        f"interrupted: the rows of 2 finished study(ies) are in {tmp_path / 'sensitivity.jsonl'}"
