"""Config parsing and validation."""
from __future__ import annotations

import pytest

from quantbench.harness.config import ConfigError, dump_toml, load_config, parse_config

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib


def test_embedded_default_is_the_fashion_cnn_sweep():
    cfg = load_config(None)
    assert [m.name for m in cfg.models] == ["fashion_cnn"]
    assert [v.name for v in cfg.variants] == ["fp32", "fp16", "int8-minmax", "int8-entropy", "int8-percentile"]
    methods = [v.quant.get("calibration") for v in cfg.variants if v.precision == "int8"]
    assert methods == ["minmax", "entropy", "percentile"]


def test_dump_config_round_trips():
    cfg = load_config(None)
    again = parse_config(tomllib.loads(dump_toml(cfg)))
    assert again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize("doc, expected", [
    ({"run": {"batch_size": [1]}, "models": ["m"], "variants": [{"name": "fp32"}]}, "did you mean 'batch_sizes'"),
    ({"runn": {}}, "did you mean 'run'"),
    ({"models": ["m"], "variants": [{"name": "a", "calibraton": "minmax"}]}, "did you mean 'calibration'"),
    ({"models": ["m"], "variants": [{"name": "a", "precision": "int4"}]}, "precision must be fp32, fp16 or int8"),
    ({"models": ["m"], "variants": [{"name": "a"}, {"name": "a"}]}, "duplicate variant"),
    ({"models": [], "variants": [{"name": "a"}]}, "no [[models]]"),
    ({"run": {"min_iters": "ten"}, "models": ["m"], "variants": [{"name": "a"}]}, "run.min_iters must be"),
    ({"run": {"batch_sizes": [0]}, "models": ["m"], "variants": [{"name": "a"}]}, "run.batch_sizes must be a list of integers >= 1"),
    ({"models": ["m"], "variants": [{"name": "a", "builder": "trt-calibrate"}]}, "needs calibrator"),
])
def test_bad_configs_name_the_problem(doc, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\nx=1")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)


def test_int8_precision_inferred_from_quant_keys():
    cfg = parse_config({"models": ["m"], "variants": [{"name": "q", "calibration": "entropy", "num_bins": 512}]})
    assert cfg.variants[0].precision == "int8"
    assert cfg.variants[0].quant == {"calibration": "entropy", "num_bins": 512}
