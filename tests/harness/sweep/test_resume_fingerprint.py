"""Resume decisions from the fingerprint groups: each input that changes a cell's numbers forces a
re-measurement, naming what changed; what does not change them (the host name) does not."""
from __future__ import annotations

import copy
import types

import pytest

from quantbench.harness.sweep.resume import GROUPS, combine, fingerprint_parts, reuse_decision

ENV = {"host": "node-a", "cpu_model": "Intel(R) Xeon(R) Platinum 8480+", "cpu_flags": ["avx2", "avx512_vnni"],
       "cores_logical": 32, "cores_physical": 16, "gpu": [{"name": "NVIDIA H100 80GB HBM3", "driver": "550.54"}],
       "versions": {"onnxruntime": "1.20.1", "numpy": "2.1.0"}}


def _pm(**over):
    fp32 = types.SimpleNamespace(sha256="f" * 64)
    config = types.SimpleNamespace(labels=None, classes=None)
    pm = types.SimpleNamespace(fp32=fp32, source=None, dataset_info={"fingerprint": "d1"}, config=config,
                               dataset="fashion-mnist", preprocess={"mean": 0.5}, eval_samples=1000,
                               accuracy={"top_k": True, "num_classes": 10, "note": ""}, labels_meaningful=True)
    for k, v in over.items():
        setattr(pm, k, v)
    return pm


def _parts(env=ENV, measure=None, pm=None, artifact="a" * 64, settings=None, runtime="ort-cpu", options=None,
           device="cpu"):
    return fingerprint_parts(measure=measure or {"min_iters": 50}, pm=pm or _pm(), artifact_sha256=artifact,
                             variant_settings=settings or {"calibration": "minmax"}, runtime=runtime,
                             runtime_options=options or {"threads": 2}, device=device, env=env)


def _stored(parts, env=ENV, status="ok"):
    return {"status": status, "schema_version": 3, "fingerprint": combine(parts), "fingerprint_parts": parts,
            "env": env}


def _env(**over):
    env = copy.deepcopy(ENV)
    env.update(over)
    return env


def test_same_inputs_reuse_the_row():
    parts = _parts()
    assert reuse_decision(_stored(parts), _parts(), ENV, retry_failed=False) == (True, "")
    assert combine(parts) == combine(_parts())


@pytest.mark.parametrize("gpu", [
    [{"name": "NVIDIA A100-SXM4-40GB", "driver": "550.54"}],  # another GPU model
    [],                                                         # the GPU is gone
    ENV["gpu"] * 2,                                             # a second GPU
])
def test_a_different_gpu_forces_a_new_measurement(gpu):
    old = _parts()
    new_env = _env(gpu=gpu)
    reuse, why = reuse_decision(_stored(old), _parts(env=new_env), new_env, retry_failed=False)
    assert reuse is False and why == "machine changed"


@pytest.mark.parametrize(("key", "value"), [
    ("cpu_model", "AMD EPYC 7763 64-Core Processor"), ("cpu_flags", ["avx2"]), ("cores_logical", 64),
    ("cores_physical", 32),
])
def test_a_different_cpu_forces_a_new_measurement(key, value):
    new_env = _env(**{key: value})
    reuse, why = reuse_decision(_stored(_parts()), _parts(env=new_env), new_env, retry_failed=False)
    assert reuse is False and why == "machine changed"


def test_the_host_name_alone_does_not():
    twin = _env(host="node-b")
    assert reuse_decision(_stored(_parts()), _parts(env=twin), twin, retry_failed=False) == (True, "")


@pytest.mark.parametrize(("change", "name"), [
    ({"measure": {"min_iters": 100}}, "timing settings"),
    ({"pm": _pm(dataset_info={"fingerprint": "d2"})}, "data"),
    ({"pm": _pm(eval_samples=500)}, "data"),
    ({"pm": _pm(fp32=types.SimpleNamespace(sha256="e" * 64))}, "model weights/ONNX"),
    ({"artifact": "b" * 64}, "variant artifact"),
    ({"settings": {"calibration": "entropy"}}, "quantization settings"),
    ({"options": {"threads": 4}}, "runtime options"),
    ({"device": "cuda:0"}, "runtime options"),
])
def test_each_group_names_what_changed(change, name):
    assert name in GROUPS.values()
    reuse, why = reuse_decision(_stored(_parts()), _parts(**change), ENV, retry_failed=False)
    assert reuse is False and why == f"{name} changed"


def test_version_change_lists_the_packages():
    new_env = _env(versions={"onnxruntime": "1.21.0", "numpy": "2.1.0", "onnx": "1.17.0"})
    reuse, why = reuse_decision(_stored(_parts()), _parts(env=new_env), new_env, retry_failed=False)
    assert reuse is False and why == "package versions (onnx -→1.17.0, onnxruntime 1.20.1→1.21.0) changed"


def test_several_changes_are_listed_in_group_order():
    new_env = _env(gpu=[])
    reuse, why = reuse_decision(_stored(_parts()), _parts(env=new_env, measure={"min_iters": 1}), new_env, False)
    assert reuse is False and why == "timing settings, machine changed"


def test_failed_rows_are_retried_only_when_asked_and_rows_without_fingerprint_are_measured():
    parts = _parts()
    failed = _stored(parts, status="failed")
    assert reuse_decision(failed, parts, ENV, retry_failed=True) == (False, "")
    assert reuse_decision(failed, parts, ENV, retry_failed=False) == (True, "")
    assert reuse_decision(None, parts, ENV, retry_failed=False) == (False, "")
    assert reuse_decision(_stored(parts), parts, ENV, retry_failed=True) == (True, "")  # ok rows are kept
    old = {"status": "ok", "schema_version": 1}
    assert reuse_decision(old, parts, ENV, retry_failed=False) == (
        False, "the stored row has no fingerprint (schema version 1)")


def test_weights_labels_and_calibration_data_content_change_the_decision(tmp_path):
    weights, labels = tmp_path / "w.pt", tmp_path / "labels.txt"
    weights.write_bytes(b"weights v1")
    labels.write_text("cat\ndog\n")
    source = types.SimpleNamespace(weights_file=lambda: weights)
    config = types.SimpleNamespace(labels=str(labels), classes=["cat", "dog"])
    info = {"name": "folder", "images": 10, "calibration": {"fingerprint": "c1"}}

    def parts():
        return _parts(pm=_pm(source=source, config=config, dataset_info=dict(info)))

    stored = _stored(parts())
    assert reuse_decision(stored, parts(), ENV, False) == (True, "")
    weights.write_bytes(b"weights v2")
    assert reuse_decision(stored, parts(), ENV, False) == (False, "model weights/ONNX changed")
    stored = _stored(parts())
    labels.write_text("cat\nbird\n")
    assert reuse_decision(stored, parts(), ENV, False) == (False, "data changed")
    stored = _stored(parts())
    info["calibration"] = {"fingerprint": "c2"}  # other calibration images
    assert reuse_decision(stored, parts(), ENV, False) == (False, "data changed")
    stored = _stored(parts())
    info["images"] = 11  # no content fingerprint: the description itself counts
    assert reuse_decision(stored, parts(), ENV, False) == (False, "data changed")
    stored = _stored(parts())
    config.classes = ["dog", "cat"]
    assert reuse_decision(stored, parts(), ENV, False) == (False, "data changed")
    stored = _stored(parts())
    weights.unlink()  # a weights file that went away is a change, not a crash
    assert reuse_decision(stored, parts(), ENV, False) == (False, "model weights/ONNX changed")


@pytest.mark.parametrize(("change", "name"), [
    ({"pm": _pm(preprocess={"mean": 0.4})}, "data"),
    ({"pm": _pm(dataset="digits")}, "data"),
    ({"pm": _pm(accuracy={"top_k": False, "num_classes": 10, "note": "x"})}, "data"),
    ({"pm": _pm(labels_meaningful=False)}, "data"),
    ({"runtime": "openvino"}, "runtime options"),
])
def test_more_inputs_of_each_group(change, name):
    reuse, why = reuse_decision(_stored(_parts()), _parts(**change), ENV, retry_failed=False)
    assert reuse is False and why == f"{name} changed"


def test_runtime_side_calibration_and_precomputed_model_content_are_used():
    base = fingerprint_parts(measure={}, pm=_pm(), artifact_sha256=None, variant_settings={}, runtime="tensorrt",
                             runtime_options={}, device="cuda:0", env=ENV, calibration={"samples": 64})
    other = dict(base, data=fingerprint_parts(measure={}, pm=_pm(), artifact_sha256=None, variant_settings={},
                                              runtime="tensorrt", runtime_options={}, device="cuda:0", env=ENV,
                                              calibration={"samples": 128})["data"])
    assert other["data"] != base["data"]
    given = fingerprint_parts(measure={}, pm=_pm(), artifact_sha256=None, variant_settings={}, runtime="tensorrt",
                              runtime_options={}, device="cuda:0", env=ENV, model={"fp32_sha256": "x"})
    assert given["model"] != base["model"]


def test_key_order_does_not_matter_and_paths_hash_as_text(tmp_path):
    a = _parts(measure={"min_iters": 50, "warmup_iters": 10}, options={"threads": 2, "cache": tmp_path})
    b = _parts(measure={"warmup_iters": 10, "min_iters": 50}, options={"cache": tmp_path, "threads": 2})
    assert a == b


def test_fingerprints_are_stable_across_releases():
    """Stored rows are reused after an upgrade only if the same inputs hash the same: a change here makes
    every stored result be measured again, so it must be deliberate (update these values with it)."""
    parts = _parts()
    assert parts == {
        "timing": "064d9bbe5e3899ba", "data": "8037dd42bbd7ba3b", "model": "5a7c7853d3740473",
        "variant": "659184ac818227a8", "quant": "01d14e45f2c30af2", "runtime": "a2eafa464aa2a6f8",
        "versions": "eac769c4be99a52d", "machine": "22347882a70b52f8"}
    assert combine(parts) == "8c8a0aeead77173d"
