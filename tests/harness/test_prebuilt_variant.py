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
