"""The Python API: ``import quantbench`` is light, benchmark/run/read_results return real rows."""
from __future__ import annotations

import importlib.util
import logging
import os
import re
import subprocess
import sys

import pytest

from tests.harness.conftest import ROOT

FAST = {"eval_samples": 100, "warmup_iters": 2, "min_iters": 10, "min_time_s": 0.05, "max_time_s": 2.0,
        "io_batches": 2}


def _python(code: str, cwd, cache) -> subprocess.CompletedProcess:
    env = dict(os.environ, QUANTBENCH_CACHE=str(cache),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def test_import_is_light_and_lists_the_api(tmp_path, shared_cache):
    proc = _python("import sys, quantbench\n"
                   "heavy = [m for m in ('numpy', 'pandas', 'rich', 'onnx', 'onnxruntime', 'torch')"
                   " if m in sys.modules]\n"
                   "print(heavy)\n"
                   "print(sorted(n for n in quantbench.__all__ if not callable(getattr(quantbench, n))))\n",
                   tmp_path, shared_cache)
    assert proc.returncode == 0, proc.stderr
    heavy, non_callables = proc.stdout.splitlines()
    assert heavy == "[]"
    assert non_callables == "['__version__']"
    import quantbench

    for name in ("benchmark", "run", "read_results", "load_config", "SweepConfig", "ConfigError", "RunError"):
        assert name in dir(quantbench) and getattr(quantbench, name).__doc__
    with pytest.raises(AttributeError):
        quantbench.no_such_thing  # noqa: B018 - the attribute access is what raises


def _readme_python_api() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "README's Python API section has no python snippet"
    return "\n".join(blocks)


@pytest.mark.ort_cpu
@pytest.mark.slow
def test_readme_snippet_runs(tmp_path, shared_cache):
    code = _readme_python_api()
    code += ("\nassert list(df['variant']) == ['fp32', 'int8-minmax'], df['variant']\n"
             "assert (df['status'] == 'ok').all(), df[['status', 'error']]\n"
             "assert df['top1'].between(0.5, 1).all() and df['compute_p50_ms'].gt(0).all()\n"
             "assert len(same) == 2 and set(same['cell_id']) == set(df['cell_id'])\n"
             "print('SNIPPET-OK')\n")
    proc = _python(code, tmp_path, shared_cache)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SNIPPET-OK" in proc.stdout and "int8-minmax" in proc.stdout
    assert (tmp_path / "api-results" / "results.jsonl").is_file()
    # library messages reach the user's logging setup as plain text, never as rich markup
    assert "INFO:quantbench:" in proc.stderr
    assert not re.search(r"\[/?(red|yellow|green|dim|bold)", proc.stdout + proc.stderr)


def test_bad_arguments_raise_before_anything_runs(tmp_path):
    import quantbench

    out = tmp_path / "out"
    cases = [
        (dict(threads=-1), "run.threads must be an integer >= 0"),
        (dict(min_time_s=float("nan")), "run.min_time_s must be a finite number"),
        (dict(batch_sizes=[1, 1]), "run.batch_sizes lists 1 twice"),
        (dict(variants=["int8-nope"]), "unknown variant 'int8-nope'"),
        (dict(variants=[{"name": "q", "per_channel": "false"}]), "variant 'q': per_channel must be true or false"),
        (dict(batch_size=[1]), "unknown key 'batch_size' in [run]; did you mean 'batch_sizes'?"),
        (dict(runtime_options={"ort-cpu": {"thread": 1}}), "unknown option 'thread' in [runtime_options.ort-cpu]"),
    ]
    for kwargs, expected in cases:
        with pytest.raises(quantbench.ConfigError) as err:
            quantbench.benchmark("fashion_cnn", output=out, **kwargs)
        assert expected in str(err.value)
    with pytest.raises(quantbench.ConfigError, match="module:pkg.mod:fn"):
        quantbench.benchmark(object(), output=out)
    with pytest.raises(quantbench.ConfigError, match="weights file not found"):
        quantbench.benchmark({"name": "fashion_cnn", "weights": str(tmp_path / "nope.pt")}, output=out)
    assert not out.exists()


@pytest.mark.ort_cpu
@pytest.mark.slow
def test_run_dict_then_config_object_reuses_rows(tmp_path, shared_cache, caplog):
    import quantbench

    out = tmp_path / "out"
    doc = {"run": {"runtimes": ["ort-cpu"], "report": False, "cache_dir": str(shared_cache), **FAST},
           "models": ["fashion_cnn"], "variants": [{"name": "fp32"}]}
    caplog.set_level(logging.INFO, logger="quantbench")
    first = quantbench.run(doc, out)
    assert list(first["status"]) == ["ok"] and first.attrs["quantbench"]["ran"] == 1
    assert first.attrs["quantbench"]["results"] == str(out / "results.jsonl")
    assert first.attrs["quantbench"]["report"] is None and not (out / "report.html").exists()
    doc["run"]["report"] = True
    cfg = quantbench.parse_config(doc)
    assert isinstance(cfg, quantbench.SweepConfig)
    again = quantbench.run(cfg, out)
    assert again.attrs["quantbench"]["ran"] == 0 and again.attrs["quantbench"]["already"] == 1
    if importlib.util.find_spec("plotly"):  # report = true writes OUTPUT/report.html, as the CLI does
        assert again.attrs["quantbench"]["report"] == str(out / "report.html")
        assert "fashion_cnn" in (out / "report.html").read_text()
    else:
        assert again.attrs["quantbench"]["report"] is None
    assert list(again["cell_id"]) == list(first["cell_id"]) and list(again["run_id"]) == list(first["run_id"])
    assert list(quantbench.read_results(out)["cell_id"]) == list(first["cell_id"])
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("quantbench")]
    assert any("already in" in m for m in messages)
    assert not any(re.search(r"\[/?(red|yellow|green|dim|bold)", m) for m in messages)


def test_the_report_is_written_one_way_and_never_fails_a_finished_run(tmp_path):
    """``write_report`` writes what ``quantbench.run``, ``quantbench run`` and ``quantbench sensitivity`` write:
    the HTML page beside the rows, or one warning saying why not (the rows stay)."""
    from quantbench.harness.api import write_report

    said: list[str] = []
    results = tmp_path / "results.jsonl"
    results.write_text("")  # no rows: nothing to report
    assert write_report(results, said.append) is None
    assert len(said) == 1 and said[0].startswith("warning: report.html not written: "), said
    assert not (tmp_path / "report.html").exists() and results.read_text() == ""
    if importlib.util.find_spec("plotly") is None:
        return
    said.clear()
    study = tmp_path / "sensitivity.jsonl"
    study.write_text("")
    assert write_report(study, said.append) == str(tmp_path / "sensitivity.html")  # a study's rows: its own page
    assert said == [f"report: {tmp_path / 'sensitivity.html'}"] and (tmp_path / "sensitivity.html").is_file()
