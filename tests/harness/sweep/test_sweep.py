"""Sweep expansion and runtime resolution."""
import pytest

from quantbench.harness.config import ConfigError, parse_config
from quantbench.harness.sweep.plan import expand, resolve_runtimes, runtime_choices


def test_unknown_runtime_suggests_closest():
    with pytest.raises(ConfigError, match="did you mean 'openvino'"):
        resolve_runtimes(["openvin"])


def test_list_options_are_swept_and_labelled():
    choices = runtime_choices("openvino", {"precision": ["default", "f32"], "hint": "latency"}, 2)
    assert [c.label for c in choices] == ["openvino[precision=default]", "openvino[precision=f32]"]
    assert all(c.options["threads"] == 2 and c.options["hint"] == "latency" for c in choices)


def test_unknown_runtime_option_is_an_error():
    # checked once, with the config (harness.config.runtime_options), before any cell is planned
    with pytest.raises(ConfigError, match="did you mean 'threads'"):
        parse_config({"models": ["m"], "variants": [{"name": "fp32"}], "runtime_options": {"ort-cpu": {"thread": 2}}})


def test_cells_and_ids_are_stable_and_distinct():
    cfg = parse_config({"run": {"batch_sizes": [1, 8]}, "models": ["fashion_cnn"],
                        "variants": [{"name": "fp32"}, {"name": "q", "calibration": "minmax"}]})
    cells, notes = expand(cfg, ["ort-cpu"], [{"m": 1}])
    assert len(cells) == 4 and not notes
    ids = [c.cell_id for c in cells]
    assert len(set(ids)) == 4
    again, _ = expand(cfg, ["ort-cpu"], [{"m": 1}])
    assert [c.cell_id for c in again] == ids


def test_requested_device_nobody_serves_is_noted():
    cfg = parse_config({"run": {"devices": ["cuda:0"]}, "models": ["m"], "variants": [{"name": "fp32"}]})
    cells, notes = expand(cfg, ["ort-cpu"], [{}])
    assert cells == [] and "cuda:0" in notes[0]
