"""Device memory, streams and events for the GPU adapters, over NVIDIA's ``cuda-python`` or pycuda.

One small module, so an adapter does not care which package is installed: ``cuda.bindings``
(cuda-python 12.6+/13), the older ``cuda.cudart`` layout, or ``pycuda`` where that is what the
machine has. Everything is imported lazily; :func:`cuda_availability` says in one line why CUDA
cannot be used here.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import time
from typing import Any, Callable

import numpy as np

from .base import Availability, Clock, RuntimeFailure, RuntimeUnavailable


def driver_present() -> bool:
    """Whether the NVIDIA driver library (libcuda) can be loaded."""
    for name in ("libcuda.so.1", ctypes.util.find_library("cuda") or ""):
        if not name:
            continue
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def parse_cuda_device(device: str, runtime: str) -> int:
    """The index N of ``cuda`` / ``cuda:N``; raise RuntimeFailure (one line) for anything else."""
    if device == "cuda":
        return 0
    head, _, index = device.partition(":")
    if head != "cuda" or not index.isdigit():
        raise RuntimeFailure(f"{runtime} runs on cuda devices ('cuda:0', 'cuda:1', ...), not '{device}'")
    return int(index)


# Oldest Linux driver branch each CUDA major runs on (CUDA minor-version compatibility).
MIN_DRIVER = {12: "525", 13: "580"}
# TensorRT asks more than CUDA itself: its Linux prerequisites list r535+ for the CUDA 12 builds.
TENSORRT_MIN_DRIVER = {12: "535", 13: "580"}


def installed_cuda_major(dists: dict[int, tuple[str, ...]]) -> int | None:
    """The CUDA major of the first installed distribution in ``dists`` ({major: names}), or None."""
    import importlib.metadata as md

    for major, names in sorted(dists.items()):
        for name in names:
            try:
                md.version(name)
                return major
            except md.PackageNotFoundError:
                continue
    return None


def driver_requirement(major: int | None, installs: dict[int, str], floor: dict[int, str] | None = None) -> str:
    """One line: the NVIDIA driver the installed CUDA ``major`` build needs, or what each build needs.

    ``floor``: the driver branches by CUDA major when the runtime needs more than CUDA (TensorRT).
    """
    floor = floor or MIN_DRIVER
    if major in floor:
        return f"CUDA {major} build installed: needs NVIDIA driver R{floor[major]}+"
    return "; ".join(f"CUDA {m}: NVIDIA driver R{floor[m]}+ (pip install {installs[m]})"
                     for m in sorted(installs) if m in floor)


def _binding_module() -> str | None:
    if importlib.util.find_spec("cuda") is not None:
        try:
            if importlib.util.find_spec("cuda.bindings") is not None:
                return "cuda.bindings"
        except ModuleNotFoundError:
            pass
        try:
            if importlib.util.find_spec("cuda.cudart") is not None:
                return "cuda.cudart"
        except ModuleNotFoundError:
            pass
    if importlib.util.find_spec("pycuda") is not None:
        return "pycuda"
    return None


def cuda_availability(extra: str, tox_env: str) -> Availability:
    """Why CUDA cannot be used from Python here, or ok."""
    if _binding_module() is None:
        return Availability(False, "neither cuda-python nor pycuda is installed",
                            f"pip install .[{extra}] / tox -e {tox_env}")
    if not driver_present():
        return Availability(False, "no NVIDIA driver/GPU found (libcuda.so.1 cannot be loaded)",
                            "run on a machine with an NVIDIA GPU and driver")
    try:
        if load_backend().device_count() < 1:
            return Availability(False, "the NVIDIA driver reports no CUDA device", "check nvidia-smi")
    except RuntimeFailure as exc:
        return Availability(False, f"CUDA initialisation failed: {exc}", "check the driver and CUDA versions")
    return Availability(True)


class CudaBackend:
    """The handful of CUDA runtime calls the adapters need."""

    name = "?"

    def device_count(self) -> int: ...
    def set_device(self, index: int) -> None: ...
    def device_name(self, index: int) -> str: ...
    def compute_capability(self, index: int) -> tuple[int, int]: ...
    def malloc(self, nbytes: int) -> int: ...
    def free(self, ptr: int) -> None: ...
    def pinned_empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray: ...
    def free_pinned(self, array: np.ndarray) -> None: ...
    def htod_async(self, dptr: int, host: np.ndarray, stream: Any) -> None: ...
    def dtoh_async(self, host: np.ndarray, dptr: int, stream: Any) -> None: ...
    def stream_create(self) -> Any: ...
    def stream_handle(self, stream: Any) -> int: ...
    def stream_sync(self, stream: Any) -> None: ...
    def event_create(self) -> Any: ...
    def event_record(self, event: Any, stream: Any) -> None: ...
    def event_elapsed_ms(self, start: Any, end: Any) -> float: ...
    def stream_destroy(self, stream: Any) -> None: ...
    def event_destroy(self, event: Any) -> None: ...
    def driver_version(self) -> str: ...


class _CudaPython(CudaBackend):
    """cuda-python: every call returns ``(error, *values)``."""

    name = "cuda-python"

    def __init__(self, layout: str) -> None:
        if layout == "cuda.bindings":
            from cuda.bindings import runtime as cudart
        else:
            from cuda import cudart  # type: ignore[no-redef]
        self.rt = cudart
        self._pinned: dict[int, int] = {}  # array data address -> cudaMallocHost pointer
        try:
            from cuda.bindings.utils import get_cuda_native_handle

            self._native_handle: Callable[[Any], int] | None = get_cuda_native_handle
        except ImportError:
            self._native_handle = None

    def _check(self, result: Any) -> Any:
        err, *values = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            _, msg = self.rt.cudaGetErrorString(err)
            raise RuntimeFailure(f"CUDA error {int(err)}: {msg.decode() if isinstance(msg, bytes) else msg}")
        return values[0] if len(values) == 1 else values

    def device_count(self) -> int:
        return int(self._check(self.rt.cudaGetDeviceCount()))

    def set_device(self, index: int) -> None:
        self._check(self.rt.cudaSetDevice(index))

    def device_name(self, index: int) -> str:
        props = self._check(self.rt.cudaGetDeviceProperties(index))
        name = props.name
        return (name.decode() if isinstance(name, bytes) else str(name)).rstrip("\x00")

    def compute_capability(self, index: int) -> tuple[int, int]:
        props = self._check(self.rt.cudaGetDeviceProperties(index))
        return int(props.major), int(props.minor)

    def malloc(self, nbytes: int) -> int:
        return int(self._check(self.rt.cudaMalloc(max(1, nbytes))))

    def free(self, ptr: int) -> None:
        self._check(self.rt.cudaFree(ptr))

    def pinned_empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        ptr = int(self._check(self.rt.cudaMallocHost(max(1, nbytes))))
        buf = (ctypes.c_byte * max(1, nbytes)).from_address(ptr)
        arr = np.frombuffer(buf, dtype=dtype, count=int(np.prod(shape))).reshape(shape)
        self._pinned[arr.ctypes.data] = ptr
        return arr

    def free_pinned(self, array: np.ndarray) -> None:
        """Free one buffer from :meth:`pinned_empty` (the array must not be used afterwards)."""
        ptr = self._pinned.pop(array.ctypes.data, None)
        if ptr is not None:
            self._check(self.rt.cudaFreeHost(ptr))

    def htod_async(self, dptr: int, host: np.ndarray, stream: Any) -> None:
        self._check(self.rt.cudaMemcpyAsync(dptr, host.ctypes.data, host.nbytes,
                                            self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))

    def dtoh_async(self, host: np.ndarray, dptr: int, stream: Any) -> None:
        self._check(self.rt.cudaMemcpyAsync(host.ctypes.data, dptr, host.nbytes,
                                            self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))

    def stream_create(self) -> Any:
        return self._check(self.rt.cudaStreamCreate())

    def stream_handle(self, stream: Any) -> int:
        # cuda-bindings 12.9+/13 deprecate int(handle) for get_cuda_native_handle; older ones only have int().
        if self._native_handle is not None:
            return int(self._native_handle(stream))
        return int(stream)

    def stream_sync(self, stream: Any) -> None:
        self._check(self.rt.cudaStreamSynchronize(stream))

    def event_create(self) -> Any:
        return self._check(self.rt.cudaEventCreate())

    def event_record(self, event: Any, stream: Any) -> None:
        self._check(self.rt.cudaEventRecord(event, stream))

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        self._check(self.rt.cudaEventSynchronize(end))
        return float(self._check(self.rt.cudaEventElapsedTime(start, end)))

    def stream_destroy(self, stream: Any) -> None:
        self._check(self.rt.cudaStreamDestroy(stream))

    def event_destroy(self, event: Any) -> None:
        self._check(self.rt.cudaEventDestroy(event))

    def driver_version(self) -> str:
        v = int(self._check(self.rt.cudaDriverGetVersion()))
        return f"{v // 1000}.{v % 1000 // 10}"


class _PyCuda(CudaBackend):
    """pycuda with its primary context."""

    name = "pycuda"

    def __init__(self) -> None:
        import pycuda.autoinit  # noqa: F401 - creates the context
        import pycuda.driver as drv

        self.drv = drv
        self._allocs: dict[int, Any] = {}

    def device_count(self) -> int:
        return self.drv.Device.count()

    def set_device(self, index: int) -> None:
        if index != 0:
            raise RuntimeFailure("the pycuda backend uses device 0 (pycuda.autoinit); install cuda-python for others")

    def device_name(self, index: int) -> str:
        return self.drv.Device(index).name()

    def compute_capability(self, index: int) -> tuple[int, int]:
        return self.drv.Device(index).compute_capability()

    def malloc(self, nbytes: int) -> int:
        alloc = self.drv.mem_alloc(max(1, nbytes))
        self._allocs[int(alloc)] = alloc
        return int(alloc)

    def free(self, ptr: int) -> None:
        alloc = self._allocs.pop(ptr, None)
        if alloc is not None:
            alloc.free()

    def pinned_empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return self.drv.pagelocked_empty(shape, dtype)

    def free_pinned(self, array: np.ndarray) -> None:
        base = getattr(array, "base", None)
        if base is not None and hasattr(base, "free"):
            base.free()

    def htod_async(self, dptr: int, host: np.ndarray, stream: Any) -> None:
        self.drv.memcpy_htod_async(dptr, host, stream)

    def dtoh_async(self, host: np.ndarray, dptr: int, stream: Any) -> None:
        self.drv.memcpy_dtoh_async(host, dptr, stream)

    def stream_create(self) -> Any:
        return self.drv.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def stream_sync(self, stream: Any) -> None:
        stream.synchronize()

    def event_create(self) -> Any:
        return self.drv.Event()

    def event_record(self, event: Any, stream: Any) -> None:
        event.record(stream)

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        end.synchronize()
        return float(start.time_till(end))

    def stream_destroy(self, stream: Any) -> None:
        pass  # pycuda frees streams and events when they are garbage-collected

    def event_destroy(self, event: Any) -> None:
        pass

    def driver_version(self) -> str:
        v = self.drv.get_driver_version()
        return f"{v // 1000}.{v % 1000 // 10}"


_BACKEND: CudaBackend | None = None


def load_backend() -> CudaBackend:
    """The process-wide CUDA backend; raises RuntimeUnavailable when none can be loaded."""
    global _BACKEND
    if _BACKEND is None:
        layout = _binding_module()
        if layout is None:
            raise RuntimeUnavailable("neither cuda-python nor pycuda is installed")
        try:
            _BACKEND = _PyCuda() if layout == "pycuda" else _CudaPython(layout)
        except ImportError as exc:
            raise RuntimeUnavailable(f"{layout} failed to import: {exc}") from None
    return _BACKEND


class CudaEventClock(Clock):
    """Times GPU work with two CUDA events recorded on the adapter's stream (trtexec's H2D / compute / D2H).

    The events must bracket only the enqueued work: an adapter calls :meth:`begin` right before it
    enqueues and :meth:`end` right after, and only then waits for the stream (``complete``). An end
    event recorded after the host has waited would time the wait and the Python overhead, not the
    GPU. Outside :meth:`time` (warm-up, accuracy) ``begin``/``end`` do nothing, so the same adapter
    code serves both. A function that marks nothing is timed from before to after the call.
    """

    kind = "cuda-events"

    def __init__(self, backend: CudaBackend, stream: Any, host_timed_label: str | None = None) -> None:
        self.backend, self.stream = backend, stream
        self.start, self.stop = backend.event_create(), backend.event_create()
        self._armed = self._began = self._ended = self._host = False
        if host_timed_label:  # some calls are timed on the host (see host_timed); the row's clock says which
            self.kind = f"cuda-events; {host_timed_label}: host-perf_counter_ns"

    def close(self) -> None:
        """Destroy the two events (the adapter calls this when it deactivates)."""
        for event in (self.start, self.stop):
            self.backend.event_destroy(event)

    def begin(self) -> None:
        """Record the start event now, right before the adapter enqueues its work (inside :meth:`time`)."""
        if self._armed and not self._ended:
            self.backend.event_record(self.start, self.stream)
            self._began = True

    def end(self) -> None:
        """Record the end event now, right after the work is enqueued and before any host wait."""
        if self._armed and not self._ended:
            if not self._began:
                self.begin()
            self.backend.event_record(self.stop, self.stream)
            self._ended = True

    def host_timed(self) -> None:
        """Time the current call on the host instead: the adapter calls this when the library it drives
        waits for the GPU itself before returning (ONNX Runtime's CUDA-graph replay synchronises the
        stream), so an end event could only be recorded after that wait and would time it too."""
        if self._armed:
            self._host = True

    def time(self, fn: Callable[..., Any], *args: Any) -> tuple[Any, int]:
        self._armed, self._began, self._ended, self._host = True, False, False, False
        self.backend.event_record(self.start, self.stream)  # re-recorded by begin() when the adapter marks it
        t0 = time.perf_counter_ns()
        try:
            out = fn(*args)
        finally:
            self._armed = False
        t1 = time.perf_counter_ns()
        if self._host:
            return out, t1 - t0
        if not self._ended:
            self.backend.event_record(self.stop, self.stream)
        return out, int(self.backend.event_elapsed_ms(self.start, self.stop) * 1e6)


def begin(clock: Clock | None) -> None:
    """Start the timed span (when ``clock`` is a :class:`CudaEventClock`), right before the adapter enqueues."""
    if isinstance(clock, CudaEventClock):
        clock.begin()


def host_timed(clock: Clock | None) -> None:
    """Mark the current timed call as host-timed (when ``clock`` is a :class:`CudaEventClock`)."""
    if isinstance(clock, CudaEventClock):
        clock.host_timed()


def complete(backend: CudaBackend, stream: Any, clock: Clock | None) -> None:
    """End the timed span (when ``clock`` is a :class:`CudaEventClock`), then wait for the stream."""
    if isinstance(clock, CudaEventClock):
        clock.end()
    backend.stream_sync(stream)
