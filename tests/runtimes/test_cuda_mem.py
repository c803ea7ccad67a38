"""runtimes.cuda_mem: device parsing and availability everywhere; memory, streams and events where a GPU is."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from quantbench.runtimes import RuntimeFailure
from quantbench.runtimes.cuda_mem import (
    CudaEventClock,
    complete,
    cuda_availability,
    driver_present,
    load_backend,
    parse_cuda_device,
)

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


# The only test of real device memory and event timing: one copy per GPU environment's marker, so `-m tensorrt`
# and `-m ort_cuda` (what those tox envs run) collect it and QUANTBENCH_REQUIRE turns a missing GPU into a failure.
@pytest.mark.parametrize("env", [pytest.param("tensorrt", marks=pytest.mark.tensorrt),
                                 pytest.param("ort-cuda", marks=pytest.mark.ort_cuda)])
def test_round_trip_through_device_memory_with_event_timing(env):
    avail = cuda_availability("tensorrt" if env == "tensorrt" else "ort-gpu", env)
    assert avail.ok, f"{env} is available but CUDA from Python is not: {avail}"  # cuda-python ships in both extras
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


# ---- a fake CUDA backend: records the order of calls, so event placement is checked without a GPU ----------
class FakeCuda:
    """Stands in for :class:`CudaBackend`: host memory as "device" memory, a timeline of every call."""

    name = "fake"

    def __init__(self) -> None:
        self.timeline: list[tuple] = []
        self.mem: dict[int, np.ndarray] = {}
        self.freed_pinned: list[int] = []
        self.pinned_live: set[int] = set()
        self.copies: list[tuple[str, int, bool]] = []  # (direction, host address, from/to live pinned memory)
        self.elapsed_ms = 0.5  # what every event pair reports
        self._next = 0x1000

    def _addr(self) -> int:
        self._next += 0x1000
        return self._next

    def set_device(self, index): self.timeline.append(("set_device", index))
    def device_name(self, index): return "Fake GPU"
    def compute_capability(self, index): return (9, 0)

    def malloc(self, nbytes):
        ptr = self._addr()
        self.mem[ptr] = np.zeros(max(1, nbytes), np.uint8)
        return ptr

    def free(self, ptr): self.mem.pop(ptr)

    def pinned_empty(self, shape, dtype):
        arr = np.zeros(shape, dtype)
        self.pinned_live.add(arr.ctypes.data)
        return arr

    def free_pinned(self, array):
        """Like cudaFreeHost: the memory is gone; poisoned here so a later use shows in the numbers."""
        self.freed_pinned.append(array.ctypes.data)
        self.pinned_live.discard(array.ctypes.data)
        array.reshape(-1).view(np.uint8)[:] = 0xFF  # NaN for floats

    def htod_async(self, dptr, host, stream):
        self.timeline.append(("htod", stream))
        self.copies.append(("htod", host.ctypes.data, host.ctypes.data in self.pinned_live))
        self.mem[dptr][:host.nbytes] = np.frombuffer(host.tobytes(), np.uint8)

    def dtoh_async(self, host, dptr, stream):
        self.timeline.append(("dtoh", stream))
        self.copies.append(("dtoh", host.ctypes.data, host.ctypes.data in self.pinned_live))
        host.reshape(-1).view(np.uint8)[:] = self.mem[dptr][:host.nbytes]

    def stream_create(self): return "stream"
    def stream_handle(self, stream): return 0xABC
    def stream_sync(self, stream): self.timeline.append(("sync", stream))
    def stream_destroy(self, stream): pass

    def event_create(self):
        self._next += 1
        return f"event{self._next}"

    def event_record(self, event, stream): self.timeline.append(("record", event))
    def event_elapsed_ms(self, start, end): return self.elapsed_ms
    def event_destroy(self, event): pass


def spans(timeline: list[tuple], clock: CudaEventClock) -> list[list[str]]:
    """What was enqueued between the last start record and the end record of each timed call."""
    out, current = [], None
    for entry in timeline:
        if entry == ("record", clock.start):
            current = []
        elif entry == ("record", clock.stop):
            out.append(current)
            current = None
        elif current is not None:
            current.append(entry[0])
    return out


def test_event_clock_records_end_before_the_host_waits():
    """An adapter marks begin/end around what it enqueues; the wait comes after the end event."""
    cuda = FakeCuda()
    clock = CudaEventClock(cuda, "stream")
    host = np.arange(4, dtype=np.float32)
    dev = cuda.malloc(host.nbytes)

    def stage(x):
        x = x * 2  # host work before the enqueue: not timed
        clock.begin()
        cuda.htod_async(dev, x, "stream")
        complete(cuda, "stream", clock)

    _, ns = clock.time(stage, host)
    assert ns == 500_000 and spans(cuda.timeline, clock) == [["htod"]]
    assert cuda.timeline[-1] == ("sync", "stream")  # the wait, after the end event
    cuda.timeline.clear()
    stage(host)  # outside clock.time: no events, just the wait
    assert cuda.timeline == [("htod", "stream"), ("sync", "stream")]
    _, ns = clock.time(lambda: cuda.htod_async(dev, host, "stream"))  # unmarked: timed around the call
    assert spans(cuda.timeline, clock) == [["htod"]]


class _FakeCudart:
    """The few cuda.bindings.runtime calls _CudaPython's pinned memory uses, over real host memory."""

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    def __init__(self) -> None:
        import ctypes

        self.buffers: dict[int, object] = {}
        self.freed: list[int] = []
        self._ctypes = ctypes

    def cudaMallocHost(self, nbytes):
        buf = (self._ctypes.c_byte * nbytes)()
        ptr = self._ctypes.addressof(buf)
        self.buffers[ptr] = buf
        return 0, ptr

    def cudaFreeHost(self, ptr):
        self.freed.append(ptr)
        return (0,)

    def cudaGetErrorString(self, err):
        return 0, b"fake"


@pytest.mark.skipif(not HAS_CUDA_PYTHON, reason="cuda-python (cuda.bindings) is not installed")
def test_free_pinned_frees_that_buffer_only():
    """Issue 10 item 2: freeing one runtime's pinned buffers must leave another live runtime's alone."""
    from quantbench.runtimes.cuda_mem import _CudaPython

    backend = _CudaPython("cuda.bindings")
    backend.rt = fake = _FakeCudart()
    mine = backend.pinned_empty((4, 8), np.float32)
    theirs = backend.pinned_empty((2, 3), np.float16)
    theirs[:] = 7
    backend.free_pinned(mine)
    assert fake.freed == [mine.ctypes.data]
    assert (theirs == 7).all() and theirs.ctypes.data in backend._pinned
    backend.free_pinned(mine)  # twice: nothing more freed
    assert fake.freed == [mine.ctypes.data]
    assert not hasattr(backend, "release_pinned")  # no process-wide "free everything"


@pytest.mark.skipif(not HAS_CUDA_PYTHON, reason="cuda-python (cuda.bindings) is not installed")
def test_stream_handle_uses_the_native_handle_accessor(monkeypatch):
    """cuda-bindings 12.9+/13 replace int(handle) by cuda.bindings.utils.get_cuda_native_handle."""
    from cuda.bindings import runtime as cudart

    from quantbench.runtimes.cuda_mem import _CudaPython

    calls = []
    backend = _CudaPython("cuda.bindings")
    real = backend._native_handle
    assert real is not None
    backend._native_handle = lambda s: calls.append(s) or real(s)
    stream = cudart.cudaStream_t(0x1234)
    assert backend.stream_handle(stream) == 0x1234 and calls == [stream]
