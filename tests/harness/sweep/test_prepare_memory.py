"""Preparation runs the torch export in a process of its own, so the FP32 reference never holds torch too."""
from __future__ import annotations

import subprocess
import sys

import pytest

from quantbench.exporters.registry import resolve_model

pytestmark = [pytest.mark.torch, pytest.mark.ort_cpu]


def _prepare(tmp_path, source):
    from quantbench.common.worker_protocol import run_worker

    job = {"source": source.to_dict(), "label": "m", "store": str(tmp_path / "artifacts"),
           "reference_dir": str(tmp_path / "reference"), "dataset": "fashion-mnist", "dataset_named": False,
           "calib_dataset": None, "preprocess": source.preprocess, "eval_samples": 64}
    (tmp_path / "artifacts").mkdir()
    outcome = run_worker("quantbench.harness.sweep.prepare_worker", job, timeout_s=600,
                         log_path=tmp_path / "prepare.log")
    return outcome.result if outcome.ok else {"error": outcome.failure()}


@pytest.mark.slow
def test_a_torch_model_is_exported_in_a_child_and_the_preparation_stays_small(tmp_path):
    pytest.importorskip("torch")
    out = _prepare(tmp_path, resolve_model("fashion_cnn", weights="random"))
    assert "error" not in out, out.get("error")
    peaks = out["peak_rss_mb"]
    print(peaks)
    # torch alone takes ~500 MiB; a preparation that imported it could not stay under its export's peak
    assert peaks["export"] > 300 and peaks["preparation"] < peaks["export"]
    assert out["reference"] and out["fp32"]["path"].endswith(".onnx")


def test_an_onnx_file_is_prepared_without_an_export_process(tmp_path):
    from quantbench.exporters.registry import ASSETS

    out = _prepare(tmp_path, resolve_model(str(ASSETS / "fashion_cnn.onnx")))
    assert "error" not in out, out.get("error")
    assert "export" not in out["peak_rss_mb"] and out["peak_rss_mb"]["preparation"] > 0


def test_a_worker_reports_its_own_peak_not_its_parents():
    import numpy as np

    big = np.ones(400 * 2**20, np.uint8)  # this process: 400 MiB more, touched
    code = "from quantbench.common.worker_protocol import peak_rss_mb; print(peak_rss_mb())"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert float(out) < 300, out  # ru_maxrss survives exec: it read this parent's size
    del big
