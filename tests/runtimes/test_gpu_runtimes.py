"""GPU runtimes: the GPU-free parts run everywhere; the rest runs where a GPU and the runtime exist."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quantbench.runtimes import Artifact, RuntimeFailure, create_runtime, get_runtime_class
from quantbench.runtimes.trt_calibrator import CalibrationFeed
from quantbench.runtimes.trt_plan import (
    TRT11_CALIBRATOR_REMOVED,
    PrecisionPlan,
    choose_precision_path,
    engine_cache_key,
)

from .test_ort_cpu import tiny_model

FP32 = Artifact("onnx", "fp32", Path("/m/fp32.onnx"))
FP16 = Artifact("onnx", "fp16", Path("/m/fp16.onnx"), reference_path=Path("/m/fp32.onnx"))
INT8 = Artifact("onnx", "int8", Path("/m/int8.onnx"), reference_path=Path("/m/fp32.onnx"))
CALIB = Artifact("trt-calibrate", "int8", Path("/m/fp32.onnx"), settings={"calibrator": "minmax"})


def test_tensorrt10_precision_paths():
    assert choose_precision_path(10, FP32).flags == ()
    fp16 = choose_precision_path(10, FP16)
    assert fp16.flags == ("FP16",) and fp16.onnx_path == "/m/fp32.onnx" and not fp16.strongly_typed
    int8 = choose_precision_path(10, INT8)
    assert "INT8" in int8.flags and int8.onnx_path == "/m/int8.onnx" and int8.calibrator is None
    cal = choose_precision_path(10, CALIB)
    assert cal.calibrator == "minmax" and "INT8" in cal.flags and cal.onnx_path == "/m/fp32.onnx"


def test_tensorrt11_is_strongly_typed_and_refuses_calibrators():
    for art in (FP32, FP16, INT8):
        plan = choose_precision_path(11, art)
        assert plan.strongly_typed and plan.flags == () and plan.onnx_path == str(art.path)
    with pytest.raises(ValueError) as err:
        choose_precision_path(11, CALIB)
    assert str(err.value) == TRT11_CALIBRATOR_REMOVED and "tensorrt10" in str(err.value)
    with pytest.raises(ValueError, match="unknown TensorRT calibrator"):
        choose_precision_path(10, Artifact("trt-calibrate", "int8", Path("x"), settings={"calibrator": "percentile"}))


def test_engine_cache_key_changes_with_everything_that_changes_the_engine():
    plan = PrecisionPlan("/a.onnx", False, ("FP16",))
    base = dict(model_bytes_sha256="abc", plan=plan, options={"workspace_mb": 1024}, trt_version="10.9",
                gpu_name="H100", compute_capability=(9, 0), batch=1)
    key = engine_cache_key(**base)
    assert key == engine_cache_key(**{**base, "plan": PrecisionPlan("/moved/a.onnx", False, ("FP16",))})
    for change in ({"model_bytes_sha256": "abd"}, {"plan": PrecisionPlan("/a.onnx", False, ())},
                   {"options": {"workspace_mb": 2048}}, {"trt_version": "11.0"}, {"gpu_name": "H200"},
                   {"compute_capability": (8, 9)}, {"batch": 8}):
        assert engine_cache_key(**{**base, **change}) != key, change


class _Reader:
    """A reader over real arrays, in the shape of calibration_data.BatchReader."""

    def __init__(self, x: np.ndarray, batch: int) -> None:
        self.x, self.batch_size, self.i = x, batch, 0

    def get_next(self):
        if self.i >= len(self.x):
            return None
        out = {"input": self.x[self.i:self.i + self.batch_size]}
        self.i += self.batch_size
        return out

    def rewind(self):
        self.i = 0


def test_calibration_feed_batches_pads_and_caches(tmp_path):
    x = np.arange(10 * 2 * 3, dtype=np.float32).reshape(10, 2, 3)
    copied = []

    def to_device(arr):
        copied.append(arr.copy())
        return 1000 + len(copied)

    feed = CalibrationFeed(_Reader(x, 4), 4, tmp_path / "calib.cache", to_device)
    ptrs = [feed.get_batch(["input"]) for _ in range(4)]
    assert ptrs[:3] == [[1001], [1002], [1003]] and ptrs[3] is None
    assert [c.shape for c in copied] == [(4, 2, 3)] * 3
    np.testing.assert_array_equal(copied[2][:2], x[8:10])
    np.testing.assert_array_equal(copied[2][2], x[9])  # padded with the last real sample
    assert feed.read_cache() is None
    feed.write_cache(memoryview(b"TRT-calibration-table"))
    again = CalibrationFeed(_Reader(x, 4), 4, tmp_path / "calib.cache", to_device)
    assert again.read_cache() == b"TRT-calibration-table"


@pytest.mark.parametrize("name", ["ort-cuda", "ort-trt", "tensorrt"])
def test_unavailable_gpu_runtimes_say_why(name):
    avail = get_runtime_class(name).availability()
    if avail.ok:
        pytest.skip(f"{name} is available here")
    assert avail.reason and "\n" not in str(avail)
    assert "pip install" in avail.hint or "GPU" in str(avail) or "driver" in str(avail)


@pytest.mark.ort_cuda
def test_ort_cuda_matches_cpu(tmp_path):
    tiny_model(tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    art = Artifact("onnx", "fp32", tmp_path / "m.onnx")
    with create_runtime("ort-cpu") as cpu:
        cpu.activate(art)
        ref = cpu.fetch(cpu.infer(cpu.stage(x)))
    with create_runtime("ort-cuda", "cuda:0", {"cudnn_conv_algo_search": "HEURISTIC"}) as gpu:
        gpu.activate(art, batch=4)
        out = gpu.fetch(gpu.infer(gpu.stage(x)))
        assert "CUDAExecutionProvider" in gpu.settings_used()["providers"]
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-3)


@pytest.mark.tensorrt
def test_tensorrt_builds_caches_and_matches_cpu(tmp_path):
    tiny_model(tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    art = Artifact("onnx", "fp32", tmp_path / "m.onnx")
    with create_runtime("ort-cpu") as cpu:
        cpu.activate(art)
        ref = cpu.fetch(cpu.infer(cpu.stage(x)))
    for expected_cache in ("miss", "hit"):
        with create_runtime("tensorrt", "cuda:0", {"cache_dir": str(tmp_path / "engines")}) as rt:
            rt.activate(art, batch=2)
            clock = rt.clock()
            staged, h2d = clock.time(rt.stage, x)
            out, compute = clock.time(rt.infer, staged)
            host, d2h = clock.time(rt.fetch, out)
            assert rt.settings_used()["engine_cache"] == expected_cache
            assert min(h2d, compute, d2h) > 0 and clock.kind == "cuda-events"
        np.testing.assert_allclose(host, ref, rtol=1e-2, atol=1e-2)
    with pytest.raises(RuntimeFailure):
        create_runtime("tensorrt", "cpu").activate(art)


def test_cuda_python_backend_without_a_driver_says_so():
    """Runs where cuda-python is installed on a machine without an NVIDIA driver."""
    pytest.importorskip("cuda.bindings", reason="cuda-python is not installed (pip install .[tensorrt])")
    from quantbench.runtimes.cuda_mem import cuda_availability, driver_present, load_backend

    if driver_present():
        pytest.skip("an NVIDIA driver is present")
    avail = cuda_availability("tensorrt", "tensorrt")
    assert not avail.ok and "no NVIDIA driver" in avail.reason
    with pytest.raises(RuntimeFailure, match="CUDA error"):
        load_backend().device_count()
