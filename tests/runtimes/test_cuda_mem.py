"""runtimes.cuda_mem: device parsing and availability everywhere; memory, streams and events where a GPU is."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from quantbench.runtimes import RuntimeFailure
from quantbench.runtimes.cuda_mem import CudaEventClock, cuda_availability, driver_present, load_backend, parse_cuda_device

HAS_CUDA_PYTHON = importlib.util.find_spec("cuda") is not None and importlib.util.find_spec("cuda.bindings") is not None


def test_parse_cuda_device():
    assert parse_cuda_device("cuda", "x") == 0
    assert parse_cuda_device("cuda:3", "x") == 3
    for bad in ("cpu", "cuda:", "cuda:one", "gpu:0", "cuda:-1"):
        with pytest.raises(RuntimeFailure) as err:
            parse_cuda_device(bad, "tensorrt")
        assert f"not '{bad}'" in str(err.value) and str(err.value).startswith("tensorrt runs on cuda devices")


def test_availability_is_one_line_with_a_reason():
    avail = cuda_availability("tensorrt", "tensorrt")
    if avail.ok:
        assert driver_present()
        return
    assert avail.reason and "\n" not in str(avail)
    if not HAS_CUDA_PYTHON and importlib.util.find_spec("pycuda") is None:
        assert "neither cuda-python nor pycuda" in avail.reason and "pip install .[tensorrt]" in avail.hint
    elif not driver_present():
        assert avail.reason == "no NVIDIA driver/GPU found (libcuda.so.1 cannot be loaded)"


@pytest.mark.skipif(not HAS_CUDA_PYTHON, reason="cuda-python (cuda.bindings) is not installed")
def test_cuda_python_calls_fail_in_one_line_without_a_driver():
    if driver_present():
        pytest.skip("an NVIDIA driver is present")
    backend = load_backend()
    assert backend.name == "cuda-python"
    for call in (backend.device_count, backend.stream_create, lambda: backend.malloc(16)):
        with pytest.raises(RuntimeFailure, match=r"^CUDA error \d+: ") as err:
            call()
        assert "\n" not in str(err.value)


@pytest.mark.skipif(not cuda_availability("tensorrt", "tensorrt").ok, reason="no usable CUDA device here")
def test_round_trip_through_device_memory_with_event_timing():
    cuda = load_backend()
    cuda.set_device(0)
    assert cuda.device_count() >= 1 and cuda.device_name(0) and cuda.compute_capability(0)[0] >= 3
    stream = cuda.stream_create()
    host_in = cuda.pinned_empty((256, 1024), np.float32)
    host_out = cuda.pinned_empty((256, 1024), np.float32)
    host_in[:] = np.random.default_rng(0).standard_normal(host_in.shape, dtype=np.float32)
    dev = cuda.malloc(host_in.nbytes)
    clock = CudaEventClock(cuda, stream)
    try:
        _, h2d = clock.time(cuda.htod_async, dev, host_in, stream)
        _, d2h = clock.time(cuda.dtoh_async, host_out, dev, stream)
        cuda.stream_sync(stream)
        np.testing.assert_array_equal(host_out, host_in)
        assert h2d > 0 and d2h > 0 and clock.kind == "cuda-events"
    finally:
        clock.close()
        cuda.free(dev)
        cuda.free_pinned(host_in)
        cuda.free_pinned(host_out)
        cuda.stream_destroy(stream)
