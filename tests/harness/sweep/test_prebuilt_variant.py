"""A [[variants]] table with ``onnx = FILE``: a prebuilt artifact (e.g. a QAT export) of the same model."""
from __future__ import annotations

import pytest

from quantbench.harness.config import ConfigError, dump_toml, parse_config

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


def _doc(**variant):
    return {"models": ["fashion_cnn"], "variants": [{"name": "fp32"}, {"name": "q", **variant}]}


@pytest.fixture()
def qfile(tmp_path):
    path = tmp_path / "qat.onnx"
    path.write_bytes(b"checked by the artifact store, not the config")
    return path


def test_onnx_key_makes_a_prebuilt_variant_that_round_trips(qfile):
    cfg = parse_config(_doc(precision="int8", onnx=str(qfile)))
    v = cfg.variants[1]
    assert (v.builder, v.precision, v.onnx, v.quant) == ("prebuilt", "int8", str(qfile), {})
    assert v.identity()["onnx"] == str(qfile)
    assert "onnx" not in cfg.variants[0].identity()  # other variants' cell identities are unchanged
    again = parse_config(tomllib.loads(dump_toml(cfg)))
    assert again.to_dict() == cfg.to_dict() and again.variants[1].onnx == str(qfile)
    explicit = parse_config(_doc(precision="int8", builder="prebuilt", onnx=str(qfile)))
    assert explicit.variants[1].identity() == v.identity()


@pytest.mark.parametrize(("extra", "expected"), [
    ({"precision": "int8", "onnx": "/nonexistent/qat.onnx"}, "variant 'q': onnx file not found: /nonexistent/qat.onnx"),
    ({"precision": "int8", "onnx": 3}, "variant 'q': onnx must be a string, not 3"),
    ({"precision": "int8", "onnx": ""}, "variant 'q': onnx is empty"),
    ({"precision": "int8", "builder": "prebuilt"}, "builder = 'prebuilt' goes with onnx"),
    ({"precision": "int8", "onnx": ["a.onnx", "b.onnx"]}, "onnx cannot be swept"),
])
def test_bad_prebuilt_variants_fail_in_one_line(extra, expected):
    with pytest.raises(ConfigError, match=expected) as err:
        parse_config(_doc(**extra))
    assert "\n" not in str(err.value)


def test_prebuilt_refuses_settings_it_cannot_honour(qfile):
    with pytest.raises(ConfigError, match="needs precision = 'int8' or 'fp16'"):
        parse_config(_doc(onnx=str(qfile)))  # no precision: it would read as fp32
    with pytest.raises(ConfigError, match="calibration does not apply to a prebuilt onnx file"):
        parse_config(_doc(precision="int8", calibration="minmax", onnx=str(qfile)))
    with pytest.raises(ConfigError, match="goes with onnx"):
        parse_config(_doc(precision="int8", builder="trt-calibrate", calibrator="minmax", onnx=str(qfile)))


def test_onnx_path_expands_variables(qfile, monkeypatch):
    monkeypatch.setenv("QAT_DIR", str(qfile.parent))
    cfg = parse_config(_doc(precision="int8", onnx="$QAT_DIR/qat.onnx"))
    assert cfg.variants[1].onnx == "$QAT_DIR/qat.onnx"


@pytest.mark.ort_cpu
@pytest.mark.slow
def test_a_prebuilt_int8_file_is_measured_like_the_built_one(tmp_path, shared_cache):
    """The same QDQ bytes, built by the sweep and handed in as a file, give the same rows; a file of
    another model fails its own variant in one line and nothing else."""
    from quantbench.exporters.artifacts import ArtifactStore, VariantSpec, sha256_file
    from quantbench.exporters.quantize import QuantSettings
    from quantbench.exporters.registry import ASSETS, resolve_model
    from quantbench.harness.results.store import read_rows
    from quantbench.harness.sweep.runner import run_sweep

    src = resolve_model("fashion_cnn")
    settings = {"calibration": "minmax", "calib_samples": 64}
    built = ArtifactStore(shared_cache / "artifacts").build(
        src, VariantSpec("ptq", "int8", QuantSettings.from_dict(settings)), "fashion-mnist", src.preprocess,
        timeout_s=300)
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(built.path.read_bytes())
    out = tmp_path / "out"
    text = f"""
[run]
output = "{out}"
cache_dir = "{shared_cache}"
runtimes = ["ort-cpu"]
batch_sizes = [8]
eval_samples = 300
warmup_iters = 1
min_iters = 3
min_time_s = 0.01
max_time_s = 1.0
interleave_rounds = 0
report = false

[[models]]
name = "fashion_cnn"
dataset = "fashion-mnist"

[[variants]]
name = "ptq"
calibration = "minmax"
calib_samples = 64

[[variants]]
name = "given"
precision = "int8"
onnx = "{mine}"

[[variants]]
name = "wrong-model"
precision = "int8"
onnx = "{ASSETS / 'cifar10_cnn.onnx'}"
"""
    logs: list[str] = []
    run_sweep(parse_config(tomllib.loads(text), "test"), out, log=logs.append)
    rows = {r["variant"]: r for r in read_rows(out / "results.jsonl").rows}
    ptq, given, wrong = rows["ptq"], rows["given"], rows["wrong-model"]
    assert ptq["status"] == given["status"] == "ok"
    assert given["variant_settings"] == {"builder": "prebuilt", "onnx": str(mine)}
    assert given["artifact_sha256"] == sha256_file(mine) == ptq["artifact_sha256"]
    assert given["size_bytes"] == mine.stat().st_size and given["artifact_path"] == str(mine)
    assert given["identical_to"] == "ptq"  # byte-identical files are flagged like any two variants
    assert given["top1"] == ptq["top1"] and given["exec_precision"] == "int8"
    assert wrong["status"] == "failed" and "differ from the model's" in wrong["error"]
    assert "\n" not in wrong["error"]
