"""Progress you can read while waiting: workers' events reach the CLI's display and the API's log records."""
from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time

import pytest

from quantbench.common import progress as pg


def test_reporter_writes_events_throttled_but_never_drops_a_phase_end(tmp_path):
    path = tmp_path / "p.jsonl"
    report = pg.Reporter(path, min_interval_s=3600, what="m/v")
    for i in range(1, 101):
        report("calibration", step=1, steps=2, done=i, total=100)
    report("calibration", step=2, steps=2, done=100, total=100)
    events = [json.loads(line) for line in path.read_text().splitlines()]
    # the first event, and the last of each pass only when it ends the phase (pass 2 of 2)
    assert [(e["step"], e["done"]) for e in events] == [(1, 1), (2, 100)]
    assert all(e["what"] == "m/v" and e["phase"] == "calibration" for e in events)


def test_reporter_without_a_file_does_nothing(monkeypatch):
    monkeypatch.delenv(pg.ENV, raising=False)
    pg.Reporter()("export", force=True)  # no file, no error


def test_calibration_adapter_gives_eta_and_floor_eta(tmp_path):
    path = tmp_path / "p.jsonl"
    fn = pg.Reporter(path, min_interval_s=0).calibration()
    time.sleep(0.05)
    fn(1, 2, 50, 100, 0.01)  # a quarter of 2 x 100 samples run; 150 left at a 10 ms floor
    (event,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert event["floor_eta_s"] == 1.5
    assert event["eta_s"] > 0
    text = pg.describe(event)
    assert "calibration pass 1/2: 50/100 images" in text and "ETA" in text and "floor 2s" in text


def test_watch_hands_a_child_process_events_to_the_sink_and_restores_the_environment(monkeypatch):
    monkeypatch.delenv(pg.ENV, raising=False)
    seen = []
    code = ("from quantbench.common.progress import Reporter; r = Reporter(min_interval_s=0); "
            "[r('scan', done=i, total=3, unit='nodes') for i in range(1, 4)]")
    with pg.watch(seen.append, interval_s=0.05) as path:
        assert os.environ[pg.ENV] == str(path)
        with pg.labelled("net/int8"):
            subprocess.run([sys.executable, "-c", code], check=True)
    assert pg.ENV not in os.environ and not path.exists()
    assert [(e["what"], e["done"]) for e in seen] == [("net/int8", 1), ("net/int8", 2), ("net/int8", 3)]
    assert pg.describe(seen[-1]) .startswith("net/int8: sensitivity scan: 3/3 nodes")


def test_log_sink_records_a_phase_start_and_end(caplog):
    sink = pg.log_sink(every_s=3600)
    with caplog.at_level(logging.INFO, logger="quantbench.progress"):
        for i in range(1, 11):
            sink({"phase": "reference", "what": "m", "done": i, "total": 10, "unit": "images", "eta_s": 10 - i})
    msgs = [r.getMessage() for r in caplog.records if r.name == "quantbench.progress"]
    assert msgs == ["m: FP32 reference: 1/10 images, ETA 9s", "m: FP32 reference: 10/10 images"]
    assert caplog.records[-1].progress["done"] == 10


def test_cli_sink_prints_plain_lines_when_not_a_terminal():
    from rich.console import Console
    from rich.progress import Progress

    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    with Progress(console=console, transient=True) as bar:
        sink = pg.rich_sink(bar, console, every_s=3600)
        sink({"phase": "export", "what": "resnet50", "elapsed_s": 0})
        sink({"phase": "calibration", "step": 1, "steps": 1, "done": 5, "total": 5, "unit": "images"})
    lines = out.getvalue().splitlines()
    assert "resnet50: export to ONNX (0s)" in lines and "calibration: 5/5 images" in lines


def test_cli_sink_on_a_terminal_drives_one_transient_task():
    from rich.console import Console
    from rich.progress import Progress

    console = Console(file=io.StringIO(), force_terminal=True, width=200)
    with Progress(console=console, transient=True) as bar:
        sink = pg.rich_sink(bar, console)
        sink({"phase": "scan", "done": 2, "total": 54, "unit": "nodes", "eta_s": 100})
        (task,) = bar.tasks
        assert task.visible and task.completed == 2 and task.total == 54 and "2/54 nodes" in task.description
        sink({"phase": "scan", "done": 54, "total": 54, "unit": "nodes"})
        assert not bar.tasks[0].visible


def test_duration():
    assert [pg.duration(s) for s in (None, 4.4, 65, 3725)] == ["?", "4s", "1m05s", "1h02m"]


@pytest.mark.slow
@pytest.mark.ort_cpu
def test_the_api_gets_progress_as_log_records(tmp_path, caplog):
    import quantbench

    config = {"run": {"output": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"), "runtimes": ["ort-cpu"],
                      "batch_sizes": [1], "eval_samples": 40,
                      "warmup_iters": 1, "min_iters": 3, "min_time_s": 0.01, "max_time_s": 1.0, "interleave_rounds": 0,
                      "report": False},
              "models": [{"name": "fashion_cnn"}],
              "variants": [{"name": "int8", "calibration": "entropy", "calib_samples": 32}]}
    with caplog.at_level(logging.INFO, logger="quantbench.progress"):
        quantbench.run(config)
    events = [r.progress for r in caplog.records if r.name == "quantbench.progress"]
    phases = {e["phase"] for e in events}
    assert {"reference", "calibration"} <= phases
    calib = [e for e in events if e["phase"] == "calibration"]
    assert calib[-1]["step"] == calib[-1]["steps"] == 2 and calib[-1]["done"] == calib[-1]["total"] == 32
    assert all(e["what"] == "fashion_cnn/int8" for e in calib)
    assert pg.ENV not in os.environ
