"""Errors about a value a flag set name that flag, found by the config key the error is about (not by the
wording of its message)."""
from __future__ import annotations

import pytest

from quantbench.harness.cli import main


def _error(capsys, *args: str) -> str:
    assert main(["run", *args, "--dump-config"]) == 2  # checked before anything is dumped or run
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("args, expected", [
    (["--threads", "-3"], "error: --threads: run.threads must be an integer >= 0, not -3"),
    (["--eval-samples", "0"], "error: --eval-samples: run.eval_samples must be an integer >= 1, not 0"),
    (["--min-time", "nan"], "error: --min-time: run.min_time_s must be a finite number, not nan"),
    (["--max-time", "0"], "error: --max-time: run.max_time_s must be a number > 0, not 0"),
    (["--batch-sizes", "8,8"], "error: --batch-sizes: run.batch_sizes lists 8 twice"),
    (["--batch-sizes", "70000"], "error: --batch-sizes: run.batch_sizes must be a list of integers from 1 to 65536"),
    (["--device", ","], "error: --device: run.devices is empty"),
    (["--runtimes", "auto,ort-cpu"], "error: --runtimes: run.runtimes: 'auto' cannot be combined with names"),
    (["-o", " "], "error: --output: run.output is empty"),
    (["--targets", "cpu-x"], "error: --targets: run.targets applies to a Ray cluster only"),
    (["--ray", "a b"], "error: --ray: run.ray must be"),
    (["--weights", "/nonexistent/w.pt"], "error: --weights: model 'fashion_cnn': weights file not found"),
])
def test_an_error_about_a_flag_names_the_flag(capsys, args, expected):
    assert _error(capsys, *args).startswith(expected)


def test_a_rule_across_two_keys_names_the_flag_that_broke_it(capsys):
    # the default sweep's max_time_s is 10
    assert _error(capsys, "--min-time", "12") == (
        "error: --min-time: run.max_time_s (10) is below run.min_time_s (12): the minimum time could never be met "
        "(raise it with --max-time)")
    assert _error(capsys, "--min-time", "12", "--max-time", "11").startswith(
        "error: --max-time: run.max_time_s (11) is below run.min_time_s (12)")


def test_an_error_that_only_mentions_a_flags_word_is_not_blamed_on_it(capsys, tmp_path, monkeypatch):
    """The old mapping matched message text: any error containing "weights" was put on --weights."""
    monkeypatch.chdir(tmp_path)
    line = _error(capsys, "--models", "my-weights.onnx,my-weights.onnx", "--weights", "random")
    assert line.startswith("error: models[0] and models[1] are both shown as") and "--weights" not in line


def test_a_config_error_without_flags_is_unchanged(capsys, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[run]\nthreads = -3\n[[models]]\nname = "fashion_cnn"\n[[variants]]\nname = "fp32"\n')
    assert _error(capsys, str(cfg)) == "error: run.threads must be an integer >= 0, not -3"
