"""Every calibration records its floor (the FP32 forward time of its passes) and its time over that floor."""
from __future__ import annotations

import numpy as np
import pytest

from quantbench.calibration_data import BatchReader, Preprocess, open_source
from quantbench.exporters.calibrate import CalibrationConfig, calibrate
from quantbench.exporters.quantize import calibration_cost
from quantbench.exporters.registry import ASSETS, resolve_model

pytestmark = pytest.mark.ort_cpu

MODEL = ASSETS / "fashion_cnn.onnx"
N = 48


def _reader(batch: int = 16) -> BatchReader:
    source = resolve_model("fashion_cnn")
    split = open_source("fashion-mnist").calibration
    return BatchReader(split, Preprocess.from_dict(source.preprocess), split.select(N, seed=0), batch, "input")


@pytest.mark.parametrize(("method", "passes"), [("minmax", 1), ("entropy", 2)])
def test_floor_and_ratio_are_recorded_and_consistent(tmp_path, method, passes):
    seen = []
    result = calibrate(MODEL, CalibrationConfig(method, num_bins=512 if method != "minmax" else None),
                       _reader(), tmp_path, progress=lambda *a: seen.append(a))
    assert result.floor_s is not None and result.floor_s > 0
    assert 0 < result.floor_probes <= passes * N
    assert result.time_s == pytest.approx(sum(result.pass_s))
    assert result.time_ratio == pytest.approx(result.time_s / result.floor_s)
    # progress: every sample of every pass, with the total known from the reader
    assert [(k, n, done, total) for k, n, done, total, _ in seen] == \
        [(k, passes, i, N) for k in range(1, passes + 1) for i in range(1, N + 1)]
    assert seen[-1][4] is not None  # the floor per sample, for an ETA
    # the ratio's interval: the calibration time over the ends of the floor's interval, around the ratio
    lo, hi = result.floor_ci95
    assert lo <= result.floor_s <= hi
    assert result.time_ratio_ci95 == pytest.approx((result.time_s / hi, result.time_s / lo))
    assert result.time_ratio_ci95[0] <= result.time_ratio <= result.time_ratio_ci95[1]
    cost = calibration_cost(result)
    assert set(cost) == {"time_s", "floor_s", "time_ratio", "time_ratio_ci95", "floor_probes", "count_s"}
    assert (cost["count_s"] is None) == (passes == 1)
    assert cost["time_ratio"] == pytest.approx(cost["time_s"] / cost["floor_s"], rel=1e-3)
    assert cost["time_ratio_ci95"] == pytest.approx(list(result.time_ratio_ci95), rel=1e-3)


def test_the_floor_interval_narrows_with_more_probes_and_holds_their_mean():
    """The floor is the mean of probe runs: its interval is about that mean, and more probes of the same spread
    give a narrower one (a bootstrap of the mean, not of single runs)."""
    from quantbench.exporters.calibrate import _Floor

    rng = np.random.default_rng(1)
    few, many = object.__new__(_Floor), object.__new__(_Floor)
    few.times = list(0.010 + rng.gamma(2.0, 0.001, 12))
    many.times = list(0.010 + rng.gamma(2.0, 0.001, 200))
    for fl in (few, many):
        lo, hi = fl.per_sample_ci95()
        assert lo < fl.per_sample < hi
        assert min(fl.times) < lo and hi < max(fl.times)  # the mean's interval, not the runs' spread
    width = {k: fl.per_sample_ci95()[1] - fl.per_sample_ci95()[0] for k, fl in (("few", few), ("many", many))}
    assert width["many"] < width["few"] / 2
    one = object.__new__(_Floor)
    one.times = [0.01]
    assert one.per_sample_ci95() is None


def test_floor_can_be_left_out(tmp_path):
    result = calibrate(MODEL, CalibrationConfig("minmax"), _reader(), tmp_path, floor=False)
    assert result.floor_s is None and result.time_ratio is None and result.floor_probes == 0
    assert calibration_cost(result)["time_ratio"] is None


def test_floor_does_not_change_the_ranges(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = calibrate(MODEL, CalibrationConfig("minmax"), _reader(), tmp_path / "a")
    b = calibrate(MODEL, CalibrationConfig("minmax"), _reader(), tmp_path / "b", floor=False)
    def values(r):
        return {k: tuple(float(x) for x in v.range_value) for k, v in r.ranges.items()}

    assert values(a) == values(b)


def test_built_artifact_and_row_carry_the_floor(tmp_path):
    from quantbench.exporters.artifacts import ArtifactStore, VariantSpec
    from quantbench.exporters.quantize import QuantSettings
    from quantbench.harness.sweep.runner import calibration_cost as row_fields

    source = resolve_model("fashion_cnn")
    built = ArtifactStore(tmp_path).build(source, VariantSpec("int8", "int8", QuantSettings(calib_samples=32)),
                                          "fashion-mnist", source.preprocess)
    row = row_fields(built.calibration)
    assert row["calib_floor_s"] > 0 and row["calib_time_s"] > 0
    assert row["calib_time_ratio"] == pytest.approx(row["calib_time_s"] / row["calib_floor_s"], rel=1e-3)
    lo, hi = row["calib_time_ratio_ci95"]
    assert lo <= row["calib_time_ratio"] <= hi
    assert row_fields(None) == {"calib_time_s": None, "calib_floor_s": None, "calib_time_ratio": None,
                                "calib_time_ratio_ci95": None}


def test_report_table_shows_calibration_over_floor():
    from quantbench.reports.model import Report
    from quantbench.reports.tables import COLUMNS, comparison_groups

    assert "calib × floor" in [c[1] for c in COLUMNS]
    row = {"model": "m", "variant": "int8", "precision": "int8", "runtime": "ort-cpu", "device": "cpu", "batch": 1,
           "status": "ok", "calib_time_s": 6.0, "calib_floor_s": 4.0, "calib_time_ratio": 1.5}
    (rows,) = comparison_groups(Report(rows=[row])).values()
    assert rows[0]["calib_ratio"] == 1.5
