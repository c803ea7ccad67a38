"""`quantbench run --dump-config` prints the effective config as TOML that loads back to the same config."""
from __future__ import annotations

import pytest

from quantbench.harness.config import dump_toml, load_config, parse_config
from quantbench.harness.config.toml_io import read_toml_text

SWEEP = '''
[run]
output = "out dir/with \\"quotes\\" and \\\\ backslash"
runtimes = "ort-cpu"
batch_sizes = [1, 8]
min_time_s = 0.25
max_time_s = 1e3
interleave_rounds = 0

[runtime_options.ort-cpu]
threads = [1, 2]
graph_optimization = "all"

[[models]]
name = "fashion_cnn"
label = "Fashion CNN · ünïcode\\tand a tab"
weights = "random"
preprocess = { mean = 0.5, std = [0.25] }
dataset = { spec = "fashion-mnist", class_subset = [0, 1, 2] }

[[variants]]
name = "fp32"

[[variants]]
name = "int8"
calibration = ["minmax", "entropy"]
calib_samples = [16, 64]
op_types = [["Conv"], ["Conv", "Gemm"]]
exclude_nodes = []
per_channel = false

[[variants]]
name = "dyn"
mode = "dynamic"
'''


def _cli_dump(capsys, *args: str) -> str:
    from quantbench.harness.cli import main

    assert main(["run", *args, "--dump-config"]) == 0
    return capsys.readouterr().out


def test_dump_config_loads_back_to_the_same_config(tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(SWEEP)
    monkeypatch.chdir(tmp_path)
    text = _cli_dump(capsys, str(sweep))
    cfg = load_config(sweep)
    again = parse_config(read_toml_text(text))
    assert again.to_dict() == cfg.to_dict()
    assert [v.identity() for v in again.variants] == [v.identity() for v in cfg.variants]  # the same cells
    assert [v.settings for v in again.variants] == [v.settings for v in cfg.variants]
    assert dump_toml(again).splitlines()[1:] == text.splitlines()[1:]  # a fixed point (line 0 names the source)
    # a dumped file loads from anywhere: its paths are absolute, its swept tables expand to the same names
    copy = tmp_path / "elsewhere" / "dumped.toml"
    copy.parent.mkdir()
    copy.write_text(text)
    assert load_config(copy).to_dict() == cfg.to_dict()


def test_dump_config_shows_every_key_with_the_overrides_applied(tmp_path, monkeypatch, capsys):
    from dataclasses import fields

    from quantbench.harness.config import RunConfig

    monkeypatch.chdir(tmp_path)
    text = _cli_dump(capsys, "--threads", "3", "--batch-sizes", "1,4", "--eval-samples", "50", "--min-time", "0.5",
                     "--variants", "fp32,int8-minmax", "--no-report")
    run = read_toml_text(text)["run"]
    assert set(run) == {f.name for f in fields(RunConfig)}  # the effective value of every [run] key
    assert (run["threads"], run["batch_sizes"], run["eval_samples"], run["min_time_s"], run["report"]) == (
        3, [1, 4], 50, 0.5, False)
    cfg = parse_config(read_toml_text(text))
    assert [v.name for v in cfg.variants] == ["fp32", "int8-minmax"]
    assert cfg.run == RunConfig(**run)


@pytest.mark.parametrize("value", ["line\nbreak", 'q"uote', "back\\slash", "tab\there", "ünï", "\x7f"])
def test_strings_that_need_escapes_round_trip(value):
    cfg = parse_config({"run": {"output": value}, "models": ["fashion_cnn"], "variants": [{"name": "fp32"}]})
    assert parse_config(read_toml_text(dump_toml(cfg))).run.output == value
