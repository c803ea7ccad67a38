"""The other CLI commands: --dump-config, devices, export, models, report; module:callable models."""
from __future__ import annotations

import textwrap

import pytest

from quantbench.harness.config import load_config
from tests.harness.conftest import run_cli, write_config


def test_dump_config_is_loadable_toml(tmp_path, shared_cache):
    proc = run_cli("run", "--dump-config", "--batch-sizes", "4", "--runtimes", "ort-cpu", cache=shared_cache)
    assert proc.returncode == 0
    dumped = tmp_path / "dumped.toml"
    dumped.write_text(proc.stdout)
    cfg = load_config(dumped)
    assert cfg.run.batch_sizes == [4] and cfg.run.runtimes == ["ort-cpu"]
    assert [v.name for v in cfg.variants][:2] == ["fp32", "fp16"]


@pytest.mark.slow
def test_devices_explains_every_runtime(shared_cache):
    proc = run_cli("devices", cache=shared_cache)
    assert proc.returncode == 0
    for name in ("ort-cpu", "ort-cuda", "ort-trt", "openvino", "tensorrt", "torch"):
        assert name in proc.stdout
    assert "cpu:" in proc.stdout and "gpu:" in proc.stdout
    if "unavailable" in proc.stdout:
        assert "pip install .[" in proc.stdout  # the exact install hint, not swallowed as markup


def test_models_lists_registry(shared_cache):
    proc = run_cli("models", "resnet*", cache=shared_cache)
    assert proc.stdout.split() == ["resnet18", "resnet50"]


@pytest.mark.torch
@pytest.mark.ort_cpu
@pytest.mark.slow
def test_module_callable_model_runs_and_exports(tmp_path, shared_cache):
    pkg = tmp_path / "mymodels.py"
    pkg.write_text(textwrap.dedent("""
        import torch
        def tiny():
            return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                       torch.nn.Linear(4 * 26 * 26, 10))
    """))
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.toml", out, '[[variants]]\nname = "fp32"\nprecision = "fp32"\n',
                       eval_samples=50, models='[[models]]\nname = "module:mymodels:tiny"\nweights = "random"\n')
    env_path = f"{tmp_path}"
    import os

    os.environ["PYTHONPATH"] = env_path + os.pathsep + os.environ.get("PYTHONPATH", "")
    try:
        proc = run_cli("run", str(cfg), cache=shared_cache)
    finally:
        os.environ["PYTHONPATH"] = os.environ["PYTHONPATH"].split(os.pathsep, 1)[1]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from quantbench.harness.results.store import read_rows

    row = read_rows(out / "results.jsonl").rows[0]
    assert row["status"] == "ok" and row["weights"] == "random-init"
    assert row["top1"] is None and row["agreement_top1"] == 1.0  # random weights: no accuracy claim
    assert row["param_count"] == 4 * 9 + 4 + 4 * 26 * 26 * 10 + 10


@pytest.mark.ort_cpu
@pytest.mark.slow
def test_export_csv_and_report_from_a_real_run(tmp_path, shared_cache):
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.toml", out, '[[variants]]\nname = "fp32"\nprecision = "fp32"\n', eval_samples=50)
    assert run_cli("run", str(cfg), cache=shared_cache).returncode == 0
    exported = run_cli("export", str(out / "results.jsonl"), "-o", str(tmp_path / "r.csv"), cache=shared_cache)
    assert exported.returncode == 0
    assert "compute_p50_ms" in (tmp_path / "r.csv").read_text().splitlines()[0]
    bad = run_cli("export", str(out / "results.jsonl"), "-o", str(tmp_path / "r.xlsx"), cache=shared_cache)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    md = run_cli("report", str(out / "results.jsonl"), "--format", "md", cache=shared_cache)
    assert md.returncode == 0 and "| fp32 |" in md.stdout


def test_every_option_is_documented_in_help(shared_cache):
    import argparse

    from quantbench.harness.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in [("quantbench", parser), *subparsers.choices.items()]:
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help and action.help != argparse.SUPPRESS, f"{name}: {action.option_strings or action.dest}"
    proc = run_cli("run", "--help", cache=shared_cache)
    assert proc.returncode == 0
    for flag in ("--output", "--runtimes", "--device", "--batch-sizes", "--models", "--variants", "--weights",
                 "--eval-samples", "--min-time", "--max-time", "--threads", "--retry-failed", "--no-report",
                 "--dump-config"):
        assert flag in proc.stdout
    top = run_cli("--help", cache=shared_cache)
    assert top.returncode == 0 and all(c in top.stdout for c in ("run", "devices", "report", "export", "models"))
    version = run_cli("--version", cache=shared_cache)
    assert version.returncode == 0 and version.stdout.startswith("quantbench ")


def test_usage_errors_are_one_line(shared_cache):
    for args in (["bogus"], ["run", "--eval-samples", "ten"], ["run", "--no-such-flag"]):
        proc = run_cli(*args, cache=shared_cache)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        assert "--help" in lines[0]


def test_overrides_reach_the_dumped_config(shared_cache):
    proc = run_cli("run", "--dump-config", "--min-time", "0.5", "--max-time", "3", "--threads", "2",
                   "--eval-samples", "300", "--device", "cpu", cache=shared_cache)
    assert proc.returncode == 0, proc.stderr
    from quantbench.harness.config import parse_config

    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover
        import tomli as tomllib
    cfg = parse_config(tomllib.loads(proc.stdout))
    assert (cfg.run.min_time_s, cfg.run.max_time_s, cfg.run.threads, cfg.run.eval_samples, cfg.run.devices) == (
        0.5, 3.0, 2, 300, ["cpu"])


def test_console_prints_colon_words_literally(capsys):
    """A model named like ``pkg.mod:boom`` followed by a colon must not turn into an emoji."""
    from quantbench.harness.cli import _console

    _console().print("model crashers:boom: failed", markup=False)
    assert "crashers:boom: failed" in capsys.readouterr().out
