"""The benchmark scripts the README quotes still run (they import the package's internals, which move)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from quantbench.exporters.registry import ASSETS

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
pytestmark = pytest.mark.ort_cpu


def _script(name: str):
    sys.path.insert(0, str(BENCHMARKS))  # the scripts import each other as plain modules
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_calibration_pieces_prints_every_piece_against_the_floor(capsys):
    assert _script("calibration_pieces").main([str(ASSETS / "fashion_cnn.onnx"), "--images", "4", "--group", "2"]) == 0
    out = capsys.readouterr().out
    for piece in ("floor", "pass 1", "forward alone (read blocked)", "forward alone (NCHW copies)", "counting alone",
                  "pass 2 (forward + counting)"):
        assert piece in out, out
    assert "(1.00 x)" in out  # the floor over itself


@pytest.mark.slow
def test_calibration_memory_reports_ratio_interval_and_memory(capsys):
    code = _script("calibration_memory").main([str(ASSETS / "fashion_cnn.onnx"), "--images", "16", "--methods",
                                              "minmax", "--eval-samples", "8", "--repeat", "2"])
    out = capsys.readouterr().out
    summary = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    rows = summary["rows"]
    assert [r["method"] for r in rows] == ["minmax", "minmax"] and code == 0, out
    for r in rows:
        assert r["calib_time_ratio"] == pytest.approx(r["calib_time_s"] / r["calib_floor_s"], rel=1e-2)
        lo, hi = r["calib_time_ratio_ci95"]
        assert lo <= r["calib_time_ratio"] <= hi and f"[{lo:.2f}-{hi:.2f}]" in out
        assert {"sweep", "quantization", "cell"} <= set(r["peak_rss_mib"])
    assert "calibration / floor over 2 runs" in out
