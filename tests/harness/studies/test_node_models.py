"""Per-node models built in memory (harness/studies/node_models.py) are the ones ``quantize_static`` writes, and a
full scan with them measures the same numbers as with one ``quantize_static`` call per model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.harness.studies.test_sensitivity import tiny  # noqa: F401 - the tiny model with one outlier layer

pytestmark = pytest.mark.ort_cpu

ASSETS = Path(__file__).resolve().parents[3] / "exporters" / "assets"


def _fashion_job(workdir: Path, **settings) -> dict:
    """A sensitivity worker job on the shipped Fashion-MNIST CNN (trained weights) and real images."""
    from quantbench.exporters.artifacts import onnx_input_info
    from quantbench.exporters.quantize import QuantSettings

    fp32 = ASSETS / "fashion_cnn.onnx"
    qs = QuantSettings(**{"calibration": "minmax", "calib_samples": 32, "calib_batch": 16, **settings})
    return {"fp32": str(fp32), "settings": qs.to_config(), "data": "fashion-mnist", "calib_data": "fashion-mnist",
            "preprocess": {"channels": 1, "mean": [0.286], "std": [0.353]},
            "input_name": onnx_input_info(fp32)[0], "sqnr_samples": 48, "eval_samples": 48, "batch": 16,
            "threads": 1, "workdir": str(workdir), "progress": str(workdir / "progress.jsonl"), "mode": "sensitivity"}


def _prepared(job: dict) -> tuple[Path, object, list[str]]:
    """The job's workdir after the worker's setup (pre-processed graph, ranges, whole model), its settings and
    every node the whole-model quantizer quantized (pass-through ops included)."""
    from quantbench.harness.studies import node_quant as nq
    from quantbench.harness.studies import sensitivity_worker as sw

    settings = sw._settings(job)
    full = sw._setup(job, settings, sw._Progress(Path(job["progress"])))
    return Path(job["workdir"]), settings, [name for name, _ in nq.quantized_nodes(full)]


def _tiny_job(tiny: dict, workdir: Path, **settings) -> dict:  # noqa: F811 - the pytest fixture imported above
    from quantbench.exporters.quantize import QuantSettings

    qs = QuantSettings(**{"calibration": "minmax", "calib_samples": 64, "calib_batch": 16, **settings})
    return {"fp32": str(tiny["model"]), "settings": qs.to_config(), "data": f"npz:{tiny['data']}",
            "calib_data": f"npz:{tiny['data']}", "preprocess": {"channels": 1, "mean": [0.0], "std": [1.0]},
            "input_name": "input", "sqnr_samples": 64, "eval_samples": 64, "batch": 16, "threads": 1,
            "workdir": str(workdir), "progress": str(workdir / "progress.jsonl"), "mode": "sensitivity"}


def _big_bias(d: Path) -> dict:
    """Two convolutions whose first has tiny weights and a large bias: the quantizer enlarges that weight's
    scale so the int32 bias fits (the adjustment it makes in place on the cached parameters)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from quantbench.common.onnx_save import with_lowest_ir_version

    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for a, n in (
        (rng.standard_normal((3, 1, 3, 3)) * 1e-6, "w1"), (np.array([1.0, -2.0, 3.0]) * 1e3, "b1"),
        (rng.standard_normal((2, 3, 1, 1)), "w2"), (np.zeros(2), "b2"))]
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["logits4d"], name="conv2"),
             helper.make_node("Flatten", ["logits4d"], ["logits"], name="flatten")]
    graph = helper.make_graph(nodes, "big_bias", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                               ["batch", 1, 1, 1])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])], inits)
    model = d / "big_bias.onnx"
    onnx.save(with_lowest_ir_version(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])), model)
    x = rng.uniform(-1, 1, (96, 1, 1)).astype(np.float32)
    np.savez(d / "big_bias.npz", x_train=x[:64], y_train=np.zeros(64, np.int64), x_test=x[64:],
             y_test=np.zeros(32, np.int64))
    return {"model": model, "data": d / "big_bias.npz"}


@pytest.mark.parametrize("case", ["fashion-per-channel", "fashion-per-tensor-entropy", "tiny-per-tensor-reduced",
                                  "big-bias"])
def test_in_memory_models_are_the_ones_quantize_static_writes(case, tiny, tmp_path) -> None:  # noqa: F811 - the pytest fixture imported above
    import onnx

    from quantbench.harness.studies import node_quant as nq
    from quantbench.harness.studies.node_models import NodeModels, has_qdq

    work = tmp_path / "w"
    work.mkdir()
    job = {"fashion-per-channel": lambda: _fashion_job(work),
           "fashion-per-tensor-entropy": lambda: _fashion_job(work, per_channel=False, calibration="entropy"),
           "tiny-per-tensor-reduced": lambda: _tiny_job(tiny, work, per_channel=False, reduce_range=True),
           "big-bias": lambda: _tiny_job(_big_bias(tmp_path), work)}[case]()
    workdir, settings, nodes = _prepared(job)
    builder = NodeModels(workdir, settings)
    assert len(nodes) >= 2
    for name in nodes:  # every node, in both roles, against a fresh quantize_static file
        for kw in ({"only": [name]}, {"exclude": [name]}):
            built = builder.build(**kw)
            path = nq.quantize(workdir, settings, tmp_path / "ref.onnx", **kw)
            assert onnx.load(str(path)).SerializeToString() == built.SerializeToString(), (name, kw)
            assert has_qdq(built) == nq.has_qdq(path)
    assert builder.matches_quantize_static(only=[nodes[0]])


def _node_events(workdir: Path) -> tuple[dict[str, dict], list[dict]]:
    events = [json.loads(line) for line in (workdir / "progress.jsonl").read_text().splitlines()]
    return {e["node"]: e for e in events if e.get("event") == "node"}, [e for e in events if e["event"] == "builder"]


@pytest.mark.slow
def test_scan_numbers_equal_those_of_quantize_static_models_and_of_parallel_lanes(tmp_path, monkeypatch, capfd) -> None:
    """The worker's scan in memory (one lane, then two lanes at once) and with one quantize_static file per model
    (forced by a builder that does not match) gives the same SQNR per node to the last digit, and says which
    path it took and how many lanes ran."""
    from quantbench.harness.studies import sensitivity_worker as sw
    from quantbench.harness.studies.node_models import NodeModels

    runs = {}
    for path, lanes in (("in-memory", 1), ("two-lanes", 2), ("quantize_static", 2)):
        work = tmp_path / path
        work.mkdir()
        monkeypatch.setattr(sw, "_lanes", lambda threads, nodes, n=lanes: n)
        if path == "quantize_static":
            monkeypatch.setattr(NodeModels, "matches_quantize_static", lambda self, **kw: False)
        job = _fashion_job(work)
        sw.run_sensitivity(job, sw._Progress(Path(job["progress"])))
        runs[path] = _node_events(work)
        assert not list(work.glob("node*.onnx*"))  # no per-node file left behind
    assert [b[0]["in_memory"] for _, b in runs.values()] == [True, True, False]
    assert "differ from quantize_static's" in capfd.readouterr().err
    events = {p: [json.loads(ln) for ln in (tmp_path / p / "progress.jsonl").read_text().splitlines()] for p in runs}
    # quantize_static's fallback writes one file: it runs one lane whatever the cores
    assert [next(e["lanes"] for e in events[p] if e["event"] == "scan") for p in runs] == [1, 2, 1]
    base = runs["in-memory"][0]
    measured = [n for n in base if base[n]["alone"]]
    assert len(measured) == 4  # 2 Conv + 2 Gemm; MaxPool / Flatten quantize nothing alone
    assert all(np.isfinite(base[n]["sqnr_quant_only_db"]) for n in measured)
    for other in ("two-lanes", "quantize_static"):
        nodes = runs[other][0]
        assert sorted(nodes) == sorted(base)
        for n in base:
            for key in ("alone", "sqnr_quant_only_db", "sqnr_float_only_db"):
                assert nodes[n].get(key) == base[n].get(key), (other, n, key)


def test_a_builder_that_breaks_falls_back_to_quantize_static_files(tmp_path, monkeypatch, capfd) -> None:
    """An ORT whose quantizer internals moved (the in-memory build raises) still gets its scan, from files."""
    from quantbench.harness.studies import sensitivity_worker as sw
    from quantbench.harness.studies.node_models import NodeModels

    def broken(self, **kw):
        raise AttributeError("module 'qdq_quantizer' has no attribute 'quantize_onnx_initializer'")

    monkeypatch.setattr(NodeModels, "build", broken)
    job = _fashion_job(tmp_path)
    workdir, settings, nodes = _prepared(job)
    build, in_memory = sw._node_builder(workdir, settings, nodes[0])
    assert in_memory is False
    assert "failed (AttributeError: module 'qdq_quantizer'" in capfd.readouterr().err
    assert Path(build(only=[nodes[0]])).is_file()


def test_lanes_only_where_cores_are_idle(monkeypatch) -> None:
    """One lane with ORT's default threads (it takes every core) or one node; else as many lanes of ``threads``
    cores as the cores others leave idle, at most four."""
    from quantbench.harness.measure import interference
    from quantbench.harness.studies import sensitivity_worker as sw

    def busy(other: float) -> None:
        monkeypatch.setattr(interference, "between", lambda before, after: {"other_cpu_frac": other})

    monkeypatch.setattr(sw.os, "cpu_count", lambda: 8)
    busy(0.0)
    assert sw._lanes(0, 50, window_s=0) == 1
    assert sw._lanes(2, 1, window_s=0) == 1
    assert sw._lanes(2, 50, window_s=0) == 4
    assert sw._lanes(1, 50, window_s=0) == 4  # at most four
    assert sw._lanes(2, 3, window_s=0) == 3
    busy(3.5)  # 4.5 cores idle
    assert sw._lanes(2, 50, window_s=0) == 2
    busy(7.2)
    assert sw._lanes(1, 50, window_s=0) == 1
    busy(None)  # /proc/stat unreadable
    assert sw._lanes(1, 50, window_s=0) == 1


@pytest.mark.slow
def test_per_node_top1_is_the_same_from_in_memory_models_and_quantize_static_files(tmp_path, monkeypatch) -> None:
    """The accuracy mode builds its per-node models in memory too; its top-1 per node equals that of one
    quantize_static file per model (forced by a builder that does not match), image for image."""
    from quantbench.harness.studies import sensitivity_worker as sw
    from quantbench.harness.studies.node_models import NodeModels

    runs = {}
    for path in ("in-memory", "quantize_static"):
        work = tmp_path / path
        work.mkdir()
        if path == "quantize_static":
            monkeypatch.setattr(NodeModels, "matches_quantize_static", lambda self, **kw: False)
        job = _fashion_job(work)
        workdir, settings, nodes = _prepared(job)
        job.update(mode="accuracy", nodes=nodes)  # every quantized node, the pass-through ones included
        sw.run_accuracy(job, sw._Progress(Path(job["progress"])))
        assert not list(work.glob("node*.onnx*"))  # no per-node file left behind
        events = [json.loads(ln) for ln in (work / "progress.jsonl").read_text().splitlines()]
        runs[path] = {e["node"]: e for e in events if e.get("event") == "accuracy"}
        assert len(runs[path]) == len(nodes) and not any("error" in e for e in runs[path].values())
    assert runs["in-memory"] == runs["quantize_static"]
    assert all(0 < e["top1_quant_only"] <= 1 and e["paired_float_only"] for e in runs["in-memory"].values())
