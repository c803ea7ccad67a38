"""quantbench.common.worker_protocol: one way to run a contained worker and to say, in one line, how it ended."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from quantbench.common import subproc, worker_protocol
from quantbench.common.worker_protocol import one_line, run_worker

FAKE = "tests.common.fake_worker"
ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, timeout_s: float = 60, **job):
    return run_worker(FAKE, job, timeout_s=timeout_s, log_path=tmp_path / "w.log")


def test_a_result_comes_back_with_the_childs_peak_memory(tmp_path):
    outcome = _run(tmp_path, do="double", x=21, path=tmp_path / "p")  # a Path in the payload travels as text
    assert outcome.ok and outcome.error == "" and outcome.failure() == ""
    assert outcome.result == {"twice": 42, "path": str(tmp_path / "p")}
    assert (tmp_path / "w.job.json").is_file() and (tmp_path / "w.out.json").is_file()
    assert 0 < outcome.peak_rss_mb < 200  # this worker's own peak, not the test process's


def test_the_childs_peak_memory_is_its_own_high_water_mark(tmp_path):
    small = _run(tmp_path, do="grow", mib=1)
    big = _run(tmp_path, do="grow", mib=300)
    assert small.ok and big.ok and big.peak_rss_mb - small.peak_rss_mb > 250


def test_none_is_a_result(tmp_path):
    outcome = _run(tmp_path, do="nothing")
    assert outcome.ok and outcome.result is None


def test_an_exception_in_the_child_is_one_line_and_its_traceback_is_in_the_log(tmp_path):
    outcome = _run(tmp_path, do="raise")
    assert not outcome.ok and outcome.error == "KeyError: 'missing'" and outcome.result is None
    assert outcome.failure() == "KeyError: 'missing'"
    assert outcome.failure("quantization") == "quantization failed: KeyError: 'missing'"
    assert "Traceback" in (tmp_path / "w.log").read_text()
    outcome = _run(tmp_path, do="value")  # a ValueError's message says it all: no type name, first line only
    assert outcome.failure("QAT") == "QAT failed: calib_samples = 9, but there are 3"


def test_a_crash_names_the_signal_the_last_line_and_the_log(tmp_path):
    outcome = _run(tmp_path, do="segv")
    assert not outcome.ok and outcome.process.signal_name == "SIGSEGV"
    log = tmp_path / "w.log"
    assert outcome.failure("export to ONNX") == f"export to ONNX crashed with SIGSEGV: about to crash (log: {log})"
    assert outcome.failure() == f"crashed with SIGSEGV: about to crash (log: {log})"


def test_an_exit_without_a_result(tmp_path):
    outcome = _run(tmp_path, do="exit")
    assert outcome.reason() == "exited with status 3"
    assert outcome.failure("preparation (start-up)") == \
        f"preparation (start-up) exited with status 3: last words (log: {tmp_path / 'w.log'})"


@pytest.mark.slow
def test_a_timeout_says_where_the_worker_was_not_its_last_line(tmp_path):
    outcome = _run(tmp_path, timeout_s=3, do="hang")
    assert not outcome.ok and outcome.process.timed_out and outcome.stage() == "hanging"
    log = tmp_path / "w.log"
    assert outcome.failure() == f"timed out after 3 s (log: {log})"
    assert outcome.failure("QAT", timeout_hint="raise run.timeout_s") == \
        f"QAT timed out after 3 s: raise run.timeout_s (log: {log})"


@pytest.mark.slow
def test_a_result_written_before_a_hang_at_exit_stands(tmp_path):
    outcome = _run(tmp_path, timeout_s=3, do="hang-after-result")
    assert outcome.process.timed_out and outcome.ok and outcome.result == {"measured": True}


def test_a_result_that_cannot_be_encoded_is_the_childs_error(tmp_path, monkeypatch):
    monkeypatch.setenv("QB_FAKE_NAN", "0")  # the worker encodes with allow_nan=False, as the cell worker does
    outcome = _run(tmp_path, do="nan")
    assert not outcome.ok and outcome.error == \
        "the worker's result cannot be written as JSON: Out of range float values are not JSON compliant"
    monkeypatch.setenv("QB_FAKE_NAN", "1")
    outcome = _run(tmp_path, do="nan")
    assert outcome.ok and outcome.result["value"] != outcome.result["value"]  # NaN


def test_an_unreadable_result_file_is_said_so(tmp_path, monkeypatch):
    real = subproc.run_contained

    def scribble(cmd, **kw):
        res = real(cmd, **kw)
        Path(cmd[-1]).write_text("{not json")
        return res

    monkeypatch.setattr(worker_protocol, "run_contained", scribble)
    outcome = _run(tmp_path, do="nothing")
    assert not outcome.ok and outcome.failure("sensitivity worker") == \
        f"sensitivity worker wrote an unreadable result (log: {tmp_path / 'w.log'})"


def test_workers_import_this_checkout(tmp_path):
    """The checkout's root comes first on a child's PYTHONPATH, so ``python -m quantbench…`` runs this code."""
    res = subproc.run_contained(["sh", "-c", 'echo "$PYTHONPATH"'], timeout_s=30, log_path=tmp_path / "env.log",
                                env={**os.environ, "PYTHONPATH": ""})
    first = Path(res.last_line().split(os.pathsep)[0])
    assert (first / "quantbench" / "common" / "subproc.py").resolve() == Path(subproc.__file__).resolve()


@pytest.mark.parametrize("exc, line", [
    (ValueError("bad value\nmore"), "bad value"),
    (KeyError("k"), "KeyError: 'k'"),
    (RuntimeError(""), "RuntimeError"),
    (type("DataError", (ValueError,), {})("no images"), "no images"),
])
def test_one_line(exc, line):
    assert one_line(exc) == line


@pytest.mark.slow
def test_sensitivity_jobs_restart_after_the_node_that_hangs(tmp_path, monkeypatch):
    """The sensitivity parent's restart rule on this protocol: a worker that timed out after finishing nodes
    goes on where it stopped; a node that alone uses up the timeout is recorded as failed, saying so."""
    from quantbench.harness.studies.worker_jobs import run_worker_job

    real = worker_protocol.run_worker
    monkeypatch.setattr(worker_protocol, "run_worker", lambda module, *a, **kw: real(FAKE, *a, **kw))
    messages: list[str] = []
    job = {"do": "nodes", "nodes": ["a", "hang1", "b"]}
    events = run_worker_job(job, tmp_path, "sqnr", 3, messages.append, "node")
    nodes = {e["node"]: e for e in events if e.get("event") == "node"}
    assert nodes["a"]["value"] == 1 and nodes["b"]["value"] == 1
    assert nodes["hang1"]["error"] == f"worker timed out after 3 s (log: {tmp_path / 'sqnr.2.log'})"
    assert messages == [
        "sensitivity worker timed out after 3 s after finishing some nodes: continuing where it stopped",
        "warning: node hang1: worker timed out after 3 s; recorded as failed, continuing with the next node"]


def test_a_sensitivity_job_that_fails_stops_with_its_one_line(tmp_path, monkeypatch):
    from quantbench.harness.studies.worker_jobs import run_worker_job

    real = worker_protocol.run_worker
    monkeypatch.setattr(worker_protocol, "run_worker", lambda module, *a, **kw: real(FAKE, *a, **kw))
    with pytest.raises(ValueError) as err:
        run_worker_job({"do": "value"}, tmp_path, "sqnr", 60, print, "node")
    assert str(err.value) == f"calib_samples = 9, but there are 3 (log: {tmp_path / 'sqnr.1.log'})"
