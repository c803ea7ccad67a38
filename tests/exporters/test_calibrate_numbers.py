"""calibrate() on tiny hand-made models: what each method returns, what it refuses, and what it reports
about its own cost, stated with values that can be worked out by hand or by an independent reference.

- "mse" is torch's L2 range search (``histogram_mse.l2_range``, checked against torch in
  test_histogram_mse.py) on the histogram of *all* the values over their exact [min, max]; it cuts a long
  thin tail that MinMax keeps; symmetric makes it (-m, m).
- Percentile without a percentile is ORT's default (99.999), exactly as ORT's own calibrator.
- The cost figures on a simulated clock that moves only when ONNX Runtime runs a model: a calibration run
  costs 3 units, a plain FP32 run 1, so the calibration takes 3x its floor, whatever the machine's load.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantbench.common.onnx_save import save_model
from quantbench.exporters import calibrate as calibrate_module
from quantbench.exporters.calibrate import CalibrationConfig, calibrate
from quantbench.exporters.histogram_mse import l2_range

from .test_calibrate_ranges import Reader, conv_mul_model

pytestmark = pytest.mark.ort_cpu


def _model(path: Path, ops: list[tuple[str, str, str]], n: int, consts: dict[str, float] | None = None) -> Path:
    """x (shape [N, n]) through ``ops`` = [(op_type, input, output)], each taking ``c_<output>`` as a second
    input when ``consts`` names one."""
    consts = consts or {}
    inits = [numpy_helper.from_array(np.array(v, np.float32), f"c_{k}") for k, v in consts.items()]
    nodes = [helper.make_node(op, [a] + ([f"c_{b}"] if b in consts else []), [b], name=b) for op, a, b in ops]
    last = ops[-1][2]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n])],
                              [helper.make_tensor_value_info(last, TensorProto.FLOAT, ["N", n])], inits)
    save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _double(path: Path, n: int) -> Path:
    """y = 2x: the calibrated tensors are x and y."""
    return _model(path, [("Mul", "x", "y")], n, {"y": 2.0})


def _ranges(result) -> dict[str, tuple[float, float]]:
    return {t: tuple(float(v) for v in result.ranges[t].range_value) for t in result.ranges}


def _outlier_data(n: int = 4000) -> np.ndarray:
    rng = np.random.default_rng(7)
    x = rng.normal(0.0, 1.0, (4, n)).astype(np.float32)
    x[2, 17] = 40.0  # one value far beyond the rest
    return x


# ---- what each method returns ------------------------------------------------------------------------------

def test_mse_is_the_l2_search_on_the_histogram_of_all_values(tmp_path):
    x = np.random.default_rng(7).laplace(0.0, 1.0, (4, 4000)).astype(np.float32)  # a long thin tail
    model = _double(tmp_path / "m.onnx", x.shape[1])
    bins = 512
    result = calibrate(model, CalibrationConfig("mse", num_bins=bins), Reader([x[:1], x[1:3], x[3:]]), tmp_path)
    assert result.samples == 4 and result.tensors == 2
    ours = _ranges(result)
    for name, values in (("x", x), ("y", 2 * x)):
        lo, hi = np.float32(values.min()), np.float32(values.max())
        counts, edges = np.histogram(values, bins, range=(lo, hi))
        expected = tuple(float(v) for v in l2_range(counts, edges[0], edges[-1]))
        assert ours[name] == expected, name
        assert float(lo) <= ours[name][0] < 0 < ours[name][1] < 0.95 * float(hi), name  # the upper tail is cut
    minmax = _ranges(calibrate(model, CalibrationConfig("minmax"), Reader([x]), tmp_path, floor=False))
    assert minmax == {"x": (float(x.min()), float(x.max())), "y": (2 * float(x.min()), 2 * float(x.max()))}

    sym = _ranges(calibrate(model, CalibrationConfig("mse", symmetric=True, num_bins=bins), Reader([x]), tmp_path,
                            floor=False))
    for name, (lo, hi) in ours.items():
        m = max(abs(lo), abs(hi))
        assert sym[name] == (-m, m), name


def test_percentile_without_a_percentile_is_orts_default(tmp_path):
    """99.999 % (ORT refuses a percentile above 100): on 200,000 values the two outermost lie beyond it, so the
    range ends inside the largest |x|."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    x = np.random.default_rng(3).standard_normal((1, 200_000)).astype(np.float32)
    model = _double(tmp_path / "m.onnx", x.shape[1])
    ours = _ranges(calibrate(model, CalibrationConfig("percentile", num_bins=2048), Reader([x]), tmp_path, floor=False))
    calibrator = create_calibrator(model, None, augmented_model_path=str(tmp_path / "aug.onnx"),
                                   calibrate_method=CalibrationMethod.Percentile,
                                   extra_options={"num_bins": 2048, "symmetric": False})
    with contextlib.redirect_stdout(io.StringIO()):
        calibrator.collect_data(Reader([x]))
        ref = calibrator.compute_data()
    assert ours == {t: tuple(float(v) for v in ref[t].range_value) for t in ref}
    assert float(x.min()) < ours["x"][0] < ours["x"][1] < float(x.max())


def test_calibrate_prints_nothing_on_stdout(tmp_path, capfd):
    """stdout belongs to the caller (``quantbench ... --json`` and the worker protocol); ORT's progress lines
    go elsewhere."""
    x = _outlier_data(500)
    model = _double(tmp_path / "m.onnx", x.shape[1])
    for method in ("entropy", "percentile", "distribution"):
        calibrate(model, CalibrationConfig(method, num_bins=512), Reader([x]), tmp_path, floor=False)
    assert capfd.readouterr().out == ""


# ---- what it refuses, in one line --------------------------------------------------------------------------

def test_num_bins_limits(tmp_path):
    x = _outlier_data(300)
    model = _double(tmp_path / "m.onnx", x.shape[1])
    for bins in (2, 65535):  # both ends are accepted
        r = calibrate(model, CalibrationConfig("percentile", num_bins=bins, percentile=99.0), Reader([x]), tmp_path,
                      floor=False)
        assert sorted(r.ranges) == ["x", "y"]
    for bins in (1, 65536, None):
        with pytest.raises(ValueError, match=rf"^num_bins must be in \[2, 65535\] for percentile calibration, "
                                             rf"not {bins}$"):
            calibrate(model, CalibrationConfig("percentile", num_bins=bins), Reader([x]), tmp_path)
    # MinMax has no bins
    assert calibrate(model, CalibrationConfig("minmax", num_bins=1), Reader([x]), tmp_path, floor=False).samples == 4


def test_no_tensor_of_the_op_types_is_one_line(tmp_path):
    model = conv_mul_model(tmp_path / "m.onnx")
    with pytest.raises(ValueError, match=r"^no float tensor to calibrate for op types \['Gemm', 'MatMul'\]$"):
        calibrate(model, CalibrationConfig("minmax", op_types=("Gemm", "MatMul")), Reader([np.ones((1, 1, 1, 2),
                                                                                                    np.float32)]),
                  tmp_path)
    # the op types choose the tensors: Mul's input and output only
    r = calibrate(model, CalibrationConfig("minmax", op_types=("Mul",)), Reader([np.ones((1, 1, 1, 2), np.float32)]),
                  tmp_path, floor=False)
    assert sorted(r.ranges) == ["y", "z"] and r.tensors == 2


def test_non_finite_activations_name_the_tensor_and_count_the_others(tmp_path):
    x = np.array([[0.0, 1.0, 4.0]], np.float32)  # log(0) = -inf
    one = _model(tmp_path / "one.onnx", [("Log", "x", "y")], 3)
    with pytest.raises(ValueError, match=r"^activation 'y' has non-finite values \(min -inf, max 1\.38\d*\) "
                                         r"on the calibration data$"):
        calibrate(one, CalibrationConfig("minmax"), Reader([x]), tmp_path)
    two = _model(tmp_path / "two.onnx", [("Log", "x", "y"), ("Neg", "y", "z")], 3)
    with pytest.raises(ValueError, match=r"^activation 'y' has non-finite values \(min -inf, max 1\.38\d*\) "
                                         r"on the calibration data \(and 1 more\)$"):
        calibrate(two, CalibrationConfig("minmax"), Reader([x]), tmp_path)
    three = _model(tmp_path / "three.onnx", [("Log", "x", "y"), ("Mul", "y", "z"), ("Neg", "z", "zz")], 3, {"z": 2.0})
    with pytest.raises(ValueError, match=r"^activation 'y' has non-finite values \(min -inf, max 1\.38\d*\) "
                                         r"on the calibration data \(and 2 more\)$"):
        calibrate(three, CalibrationConfig("entropy", num_bins=128), Reader([x]), tmp_path)
    # +inf as the maximum: 1 / 0
    up = _model(tmp_path / "up.onnx", [("Reciprocal", "x", "y")], 3)
    with pytest.raises(ValueError, match=r"^activation 'y' has non-finite values \(min 0\.25, max inf\) "
                                         r"on the calibration data$"):
        calibrate(up, CalibrationConfig("minmax"), Reader([x]), tmp_path)


# ---- what it reports about its cost: a simulated clock ----------------------------------------------------

CALIBRATION_RUN, PLAIN_RUN, FIRST_PLAIN_RUN = 3.0, 1.0, 10.0


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0  # not 0: a start time that drops out of a difference must not matter

    def perf_counter(self) -> float:
        return self.now

    def __getattr__(self, name: str):  # anything else from the time module, unchanged
        import time

        return getattr(time, name)


@pytest.fixture
def clock(monkeypatch):
    """A clock that moves only when ONNX Runtime runs a model: CALIBRATION_RUN per run of the calibration's
    own models, PLAIN_RUN per run of the FP32 model file itself (the floor), FIRST_PLAIN_RUN for the first
    run of a session of it (which allocates and plans: no forward time)."""
    import onnxruntime as ort

    c = _Clock()
    real = ort.InferenceSession

    class Timed(real):
        def __init__(self, path_or_bytes, *args, **kwargs):
            super().__init__(path_or_bytes, *args, **kwargs)
            self._cost = PLAIN_RUN if str(path_or_bytes) == c.plain else CALIBRATION_RUN
            self._first = self._cost == PLAIN_RUN

        def run(self, *args, **kwargs):
            out = super().run(*args, **kwargs)
            c.now += FIRST_PLAIN_RUN if self._first else self._cost
            self._first = False
            return out

        def run_with_iobinding(self, *args, **kwargs):
            out = super().run_with_iobinding(*args, **kwargs)
            c.now += self._cost
            return out

    monkeypatch.setattr(ort, "InferenceSession", Timed)
    monkeypatch.setattr(calibrate_module, "time", c)
    return c


class _CountedReader(Reader):
    """A reader that says how many samples it holds (as BatchReader does, by its ``indices``)."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        super().__init__(batches)
        self.indices = list(range(sum(len(b) for b in batches)))


@pytest.mark.parametrize(("method", "passes"), [("minmax", 1), ("entropy", 2), ("mse", 2)])
def test_time_floor_and_ratio_on_a_simulated_clock(tmp_path, clock, method, passes):
    x = _outlier_data(300)
    n = len(x)
    model = _double(tmp_path / "m.onnx", x.shape[1])
    clock.plain = str(model)
    seen = []
    config = CalibrationConfig(method, num_bins=None if method == "minmax" else 256)
    result = calibrate(model, config, _CountedReader([x[:3], x[3:]]), tmp_path, progress=lambda *a: seen.append(a))
    assert result.samples == n
    # each pass: n calibration runs; the floor's probe runs (the warm-up included) are not charged to it
    assert result.pass_s[:passes] == [CALIBRATION_RUN * n] * passes
    assert result.pass_s[passes:] == ([0.0] if passes == 2 else [])  # the threshold search runs no model
    assert result.time_s == CALIBRATION_RUN * n * passes
    # fewer samples than FLOOR_PROBES: each is probed once per pass; the floor is a plain run per sample and pass
    # (the first plain run, which allocates, is not one)
    assert result.floor_probes == n * passes
    assert result.floor_s == PLAIN_RUN * n * passes
    assert result.time_ratio == CALIBRATION_RUN / PLAIN_RUN
    # pass 2's numpy binning runs no model: none of this clock's time (MinMax has no pass 2)
    assert result.count_s == (0.0 if passes == 2 else None)
    assert seen == [(k, passes, i, n, PLAIN_RUN) for k in range(1, passes + 1) for i in range(1, n + 1)]


def test_without_the_floor_nothing_is_probed(tmp_path, clock):
    x = _outlier_data(300)
    model = _double(tmp_path / "m.onnx", x.shape[1])
    clock.plain = str(model)
    seen = []
    result = calibrate(model, CalibrationConfig("entropy", num_bins=256), Reader([x]), tmp_path,
                       progress=lambda *a: seen.append(a), floor=False)
    assert result.floor_s is None and result.floor_probes == 0 and result.time_ratio is None
    assert result.pass_s[:2] == [CALIBRATION_RUN * 4] * 2
    # a reader that does not say how many samples it holds: no total in the progress
    assert seen == [(k, 2, i, None, None) for k in (1, 2) for i in range(1, 5)]


# ---- what the ranges carry, and data that changes between the passes --------------------------------------

@pytest.mark.parametrize(("method", "kind"), [("minmax", "MinMax"), ("entropy", "Entropy"),
                                              ("percentile", "Percentile"), ("distribution", "Distribution"),
                                              ("mse", "MinMax")])
def test_ranges_carry_the_method_quantize_static_is_called_with(tmp_path, method, kind):
    """ORT's quantize_static refuses a calibration cache written under another method; "mse" ranges reach it
    as plain ranges (MinMax)."""
    from onnxruntime.quantization import CalibrationMethod

    from quantbench.exporters.quantize import QuantSettings, static_quant_kwargs

    x = _outlier_data(300)
    model = _double(tmp_path / "m.onnx", x.shape[1])
    result = calibrate(model, CalibrationConfig(method, num_bins=None if method == "minmax" else 512), Reader([x]),
                       tmp_path, floor=False)
    assert result.ranges.calibration_method == getattr(CalibrationMethod, kind)
    assert result.bytes_per_sample == 4 * 300  # y = 2x: one sample's 300 float32 activations, for every method
    wanted = static_quant_kwargs(QuantSettings(calibration=method), tmp_path / "cache.json")["calibrate_method"]
    assert result.ranges.calibration_method == wanted


class _DriftingReader(Reader):
    """Its second pass reads other data than its first (a reader with random augmentation, say)."""

    def rewind(self) -> None:
        super().rewind()
        self.batches = [b * 2 for b in self.batches] if getattr(self, "_read_once", False) else self.batches
        self._read_once = True


def test_pass_2_reads_pass_1s_samples_back_so_a_drifting_reader_cannot_split_them(tmp_path):
    """Pass 2 bins the very samples pass 1 read (kept on disk between the passes): a reader whose second pass would
    give other data (random augmentation, say) gives the thresholds of its first pass's data."""
    x = _outlier_data(300)
    model = _double(tmp_path / "m.onnx", x.shape[1])
    config = CalibrationConfig("entropy", num_bins=512)
    drifting = calibrate(model, config, _DriftingReader([x]), tmp_path, floor=False)
    steady = calibrate(model, config, Reader([x]), tmp_path, floor=False)
    assert {t: tuple(r.range_value) for t, r in drifting.ranges.items()} == \
        {t: tuple(r.range_value) for t, r in steady.ranges.items()}
    assert not list(tmp_path.glob("calib_samples*")), "the spool is removed"


def test_a_spool_that_cannot_be_written_leaves_the_thresholds_unchanged(tmp_path, monkeypatch):
    """A full disk while pass 1 keeps its samples: pass 2 reads the reader again, with the same thresholds."""
    import pickle

    x = _outlier_data(300)
    model = _double(tmp_path / "m.onnx", x.shape[1])
    config = CalibrationConfig("entropy", num_bins=512)
    kept = calibrate(model, config, Reader([x]), tmp_path, floor=False)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pickle, "dump", full_disk)
    reread = calibrate(model, config, Reader([x]), tmp_path, floor=False)
    assert {t: tuple(r.range_value) for t, r in reread.ranges.items()} == \
        {t: tuple(r.range_value) for t, r in kept.ranges.items()}
    assert not list(tmp_path.glob("calib_samples*"))


def test_data_that_changes_between_the_passes_is_refused_naming_the_tensor(tmp_path, monkeypatch):
    """Without the spool (more samples than SPOOL_BYTES, or no disk space) pass 2 reads the reader again: data
    that changed is refused, naming the tensor."""
    from quantbench.exporters import calibrate as cal

    monkeypatch.setattr(cal, "SPOOL_BYTES", 0)
    x = _outlier_data(300)
    model = _double(tmp_path / "m.onnx", x.shape[1])
    with pytest.raises(ValueError, match=r"^activation 'x' left the range measured in pass 1: calibration passes "
                                         r"disagree \(non-deterministic model\?\)$"):
        calibrate(model, CalibrationConfig("entropy", num_bins=512), _DriftingReader([x]), tmp_path, floor=False)


def test_the_floor_is_measured_on_a_spread_of_samples(tmp_path, clock):
    """FLOOR_PROBES (24) probes per pass: of 50 samples every 50 // 24 = 2nd; the others cost the pass nothing."""
    rng = np.random.default_rng(5)
    batches = [rng.normal(0, 1, (10, 8)).astype(np.float32) for _ in range(5)]
    model = _double(tmp_path / "m.onnx", 8)
    clock.plain = str(model)
    result = calibrate(model, CalibrationConfig("minmax"), _CountedReader(batches), tmp_path)
    assert result.samples == 50 and result.floor_probes == 25
    assert result.pass_s == [CALIBRATION_RUN * 50]
    assert result.floor_s == PLAIN_RUN * 50 and result.time_ratio == CALIBRATION_RUN / PLAIN_RUN


def test_minmax_without_the_floor_probes_nothing(tmp_path, clock):
    x = _outlier_data(300)
    model = _double(tmp_path / "m.onnx", x.shape[1])
    clock.plain = str(model)
    result = calibrate(model, CalibrationConfig("minmax"), Reader([x]), tmp_path, floor=False)
    assert result.floor_s is None and result.floor_probes == 0 and result.time_ratio is None
    assert result.pass_s == [CALIBRATION_RUN * 4]


def test_an_empty_reader_is_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"^calibration reader produced no batches$"):
        calibrate(_double(tmp_path / "m.onnx", 3), CalibrationConfig("minmax"), Reader([]), tmp_path)


@pytest.mark.parametrize("symmetric", [True, False])
def test_percentile_of_a_relu_output_equals_orts_own_calibrator(tmp_path, symmetric):
    """A Relu's output is binned like any tensor, |x| for symmetric Percentile (where its histogram cannot be
    derived from its input's): here min|x| = 0 and max|x| lies on the positive side, so both share a range."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    rng = np.random.default_rng(11)
    x = np.concatenate([rng.uniform(-3, 5, 5000), [0.0, 5.0]]).astype(np.float32)[None, :]
    model = _model(tmp_path / "relu.onnx", [("Relu", "x", "y")], x.shape[1])
    # 60 %: a threshold inside the bulk, where |x| and |max(x, 0)| differ (their tails above 3 are alike)
    ours = _ranges(calibrate(model, CalibrationConfig("percentile", symmetric=symmetric, num_bins=2048,
                                                      percentile=60.0), Reader([x]), tmp_path, floor=False))
    calibrator = create_calibrator(model, None, augmented_model_path=str(tmp_path / "aug.onnx"),
                                   calibrate_method=CalibrationMethod.Percentile,
                                   extra_options={"num_bins": 2048, "symmetric": symmetric, "percentile": 60.0})
    with contextlib.redirect_stdout(io.StringIO()):
        calibrator.collect_data(Reader([x]))
        ref = calibrator.compute_data()
    assert ours == {t: tuple(float(v) for v in ref[t].range_value) for t in ref}
