"""ONNX Runtime CUDA/TensorRT EPs: availability, node-placement audit and options run everywhere; inference
runs where onnxruntime-gpu and a GPU exist (marker ``ort_cuda``)."""
from __future__ import annotations

import importlib.metadata as md
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from quantbench.common.onnx_save import save_model
from quantbench.runtimes import Artifact, RuntimeFailure, create_runtime, get_runtime_class
from quantbench.runtimes.ort_cuda import OrtCudaRuntime, OrtTensorRTRuntime, summarize_ort_profile

from .test_tensorrt import fashion_model, fashion_reader, host_reference, quantize


def _installed(dist: str) -> bool:
    try:
        md.version(dist)
        return True
    except md.PackageNotFoundError:
        return False


@pytest.mark.parametrize("name, provider, install", [
    ("ort-cuda", "CUDAExecutionProvider", ".[ort-gpu] / tox -e ort-cuda"),
    ("ort-trt", "TensorrtExecutionProvider", ".[tensorrt10,ort-gpu] / tox -e tensorrt10")])
def test_unavailable_reason_names_the_cpu_build_and_the_fix(name, provider, install):
    avail = get_runtime_class(name).availability()
    if avail.ok:
        pytest.skip(f"{name} is available here")
    assert "\n" not in str(avail)
    if _installed("onnxruntime") and not _installed("onnxruntime-gpu"):
        assert avail.reason.startswith(f"the installed onnxruntime is the CPU build (no {provider})")
        assert avail.hint.startswith(f"pip uninstall -y onnxruntime && pip install {install}")
    if _installed("onnxruntime") and _installed("onnxruntime-gpu"):
        assert "shadows" in avail.reason
    from quantbench.runtimes.ort_cuda import nvidia_driver_found

    if not nvidia_driver_found():
        assert "no NVIDIA driver/GPU found" in avail.reason


@pytest.mark.ort_cpu
def test_placement_summary_from_a_real_profile(tmp_path):
    """A real ORT profiling trace (CPU EP here): each kernel counted once, by provider."""
    import onnxruntime as ort

    path = fashion_model(tmp_path / "m.onnx")
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / "p")
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = next(iter(fashion_reader(4, 4)))[0]
    sess.run(None, {"input": x})
    sess.run(None, {"input": x})  # the same nodes again: still counted once
    events = json.loads(Path(sess.end_profiling()).read_text())
    kernels = {e["name"] for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")}
    on_cpu = summarize_ort_profile(events, "CPUExecutionProvider")
    assert on_cpu["nodes_by_provider"] == {"CPUExecutionProvider": len(kernels)} and len(kernels) >= 3
    assert on_cpu["fallback_ops"] == {} and on_cpu["note"].endswith("(all on CPU)")
    as_if_cuda = summarize_ort_profile(events, "CUDAExecutionProvider")
    assert sum(as_if_cuda["fallback_ops"].values()) == len(kernels)
    assert "Gemm" in as_if_cuda["fallback_ops"] and "fell back: " in as_if_cuda["note"]


# ---- on a GPU -------------------------------------------------------------------------------------------------
@pytest.mark.ort_cuda
@pytest.mark.parametrize("options", [{"cudnn_conv_algo_search": "HEURISTIC"}, {"cuda_graph": True},
                                     {"clock": "host"}])
def test_ort_cuda_matches_ort_cpu(tmp_path, options):
    path = fashion_model(tmp_path / "m.onnx")
    batches = [x for x, _, _ in fashion_reader(24, 8)]
    with create_runtime("ort-cuda", "cuda:0", options) as rt:
        rt.activate(Artifact("onnx", "fp32", path), batch=8)
        clock = rt.clock()
        outs = []
        for x in batches:  # with cuda_graph the same device buffers are updated in place
            staged, h2d = clock.time(rt.stage, x)
            out, compute = clock.time(rt.infer, staged)
            host, d2h = clock.time(rt.fetch, out)
            outs.append(host)
            assert min(h2d, compute, d2h) > 0
        used = rt.settings_used()
        report = rt.execution_report()
    assert used["providers"][0] == "CUDAExecutionProvider"
    assert used["clock"] == clock.kind
    if options.get("clock") == "host":
        assert clock.kind == "host-perf_counter_ns"
    for x, out in zip(batches, outs, strict=True):
        np.testing.assert_allclose(out, host_reference(path, x), rtol=1e-3, atol=1e-3)
    assert report["exec_precision"] == "fp32" and "nodes by provider: CUDA" in report["audit_note"]


@pytest.mark.ort_cuda
def test_ort_cuda_int8_qdq_audit_shows_float_compute(tmp_path):
    """The CUDA EP has no QLinearConv: a QDQ model runs DQ -> float Conv -> Q, and the audit must say so."""
    fp32 = fashion_model(tmp_path / "m.onnx")
    int8 = quantize(fp32, tmp_path / "int8.onnx", activation_type="QInt8", symmetric_activation=True)
    x = next(iter(fashion_reader(16, 16)))[0]
    with create_runtime("ort-cuda", "cuda:0") as rt:
        rt.activate(Artifact("onnx", "int8", int8, reference_path=fp32), batch=16)
        out = rt.fetch(rt.infer(rt.stage(x)))
        report = rt.execution_report()
    assert (out.argmax(1) == host_reference(fp32, x).argmax(1)).mean() >= 0.9
    assert report["int8_op_share"] < 0.5 and "Q/DQ" in report["audit_note"]


@pytest.mark.ort_trt
def test_ort_trt_runs_on_tensorrt10(tmp_path):
    path = fashion_model(tmp_path / "m.onnx")
    x = next(iter(fashion_reader(8, 8)))[0]
    with create_runtime("ort-trt", "cuda:0", {"trt_engine_cache_dir": str(tmp_path / "c")}) as rt:
        rt.activate(Artifact("onnx", "fp32", path), batch=8)
        out = rt.fetch(rt.infer(rt.stage(x)))
        report = rt.execution_report()
    np.testing.assert_allclose(out, host_reference(path, x), rtol=1e-2, atol=1e-2)
    assert "Tensorrt" in report["audit_note"]


# ---- GPU-free checks of the fixes from issue 10: a fake onnxruntime-gpu over the real CPU build's options ----
_REAL_ORT = pytest.importorskip("onnxruntime")


class _FakeOrtValue:
    def __init__(self, shape, dtype, cuda):
        self._shape, self.dtype, self.cuda = list(shape), np.dtype(dtype), cuda
        self.ptr = cuda.malloc(int(np.prod(shape)) * self.dtype.itemsize)

    @classmethod
    def ortvalue_from_shape_and_type(cls, shape, dtype, device, index):
        assert device == "cuda"
        return cls(shape, dtype, _FakeOrt.cuda)

    def shape(self):
        return self._shape

    def data_ptr(self):
        return self.ptr


class _FakeBinding:
    def __init__(self):
        self.inputs, self.outputs, self.binds = {}, {}, 0

    def clear_binding_inputs(self): self.inputs.clear()
    def clear_binding_outputs(self): self.outputs.clear()

    def bind_ortvalue_input(self, name, value):
        self.inputs[name] = value
        self.binds += 1

    def bind_ortvalue_output(self, name, value): self.outputs[name] = value
    def bind_output(self, name, device, index): raise AssertionError("outputs must be pre-allocated")


class _FakeSession:
    def __init__(self, path, so, providers, drop=()):
        _FakeOrt.created.append((so, providers))
        _FakeOrt.sessions.append(self)
        self._meta = _REAL_ORT.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.providers = [p for p, _ in providers if p not in drop]  # drop: EPs that fail to load

    def get_providers(self): return self.providers
    def get_provider_options(self): return {}
    def get_inputs(self): return self._meta.get_inputs()
    def get_outputs(self): return self._meta.get_outputs()

    def io_binding(self):
        self.binding = _FakeBinding()
        return self.binding

    def run_with_iobinding(self, binding, run_options=None):
        sync = run_options.get_run_config_entry("disable_synchronize_execution_providers")
        _FakeOrt.cuda.timeline.append(("run", sync))


class _FakeOrt:
    """onnxruntime-gpu as the adapter uses it; SessionOptions/RunOptions are the real CPU build's."""

    cuda = None
    created: list = []  # (SessionOptions, providers with their options) of every session, in order
    sessions: list = []
    __version__ = "1.31.1-fake"

    def __init__(self, cuda):
        _FakeOrt.cuda, _FakeOrt.created, _FakeOrt.sessions = cuda, [], []
        self.drop: set = set()  # providers whose library "fails to load": ORT leaves them out of the session
        self.SessionOptions, self.RunOptions = _REAL_ORT.SessionOptions, _REAL_ORT.RunOptions
        self.OrtValue = _FakeOrtValue
        self.preloaded = []

    def InferenceSession(self, path, so, providers):
        assert self.preloaded, "preload_dlls() must run before the session is created"
        return _FakeSession(path, so, providers, self.drop)

    def preload_dlls(self, cuda=True, cudnn=True, msvc=True, directory=None):
        self.preloaded.append((cuda, cudnn))


@pytest.fixture
def fake_ort_cuda(monkeypatch):
    import importlib.util
    import sys

    from quantbench.runtimes import cuda_mem

    from .test_cuda_mem import FakeCuda

    cuda = FakeCuda()
    fake = _FakeOrt(cuda)
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    monkeypatch.setattr(cuda_mem, "cuda_availability", lambda *a: cuda_mem.Availability(True))
    monkeypatch.setattr(cuda_mem, "load_backend", lambda: cuda)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n == "nvidia" else real_find_spec(n, *a))
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    return fake, cuda


def test_cuda_graph_session_has_no_cpu_fallback_and_fixed_io_buffers(tmp_path, fake_ort_cuda):
    """Issue 10 item 8 (and item 4's preload_dlls): every node on CUDA, I/O allocated and bound once."""
    fake, cuda = fake_ort_cuda
    path = fashion_model(tmp_path / "m.onnx")
    rt = OrtCudaRuntime("cuda:0", {"cuda_graph": True})
    rt.activate(Artifact("onnx", "fp32", path), batch=4)
    (so, providers), = fake.created
    assert [p for p, _ in providers] == ["CUDAExecutionProvider"]
    assert providers[0][1]["enable_cuda_graph"] == "1" and providers[0][1]["user_compute_stream"] == str(0xABC)
    assert so.get_session_config_entry("session.disable_cpu_ep_fallback") == "1"
    assert fake.preloaded == [(True, True)]
    x = np.ones((4, 1, 28, 28), np.float32)
    first = rt.stage(x)
    in_ptr, out_ptr = first.data_ptr(), rt.infer(first).data_ptr()
    for _ in range(3):
        staged = rt.stage(x * 2)
        assert staged.data_ptr() == in_ptr and rt.infer(staged).data_ptr() == out_ptr
    binding = fake.sessions[-1].binding
    assert binding.binds == 1 and binding.outputs["logits"].shape() == [4, 10]  # bound once, output preallocated
    with pytest.raises(RuntimeFailure, match=r"captured batch shape \(4, 1, 28, 28\)"):
        rt.stage(x[:2])
    rt.deactivate()
    plain = OrtCudaRuntime("cuda:0")
    plain.activate(Artifact("onnx", "fp32", path), batch=4)
    so, providers = fake.created[-1]
    assert [p for p, _ in providers] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(RuntimeError, match="does not have configuration"):
        so.get_session_config_entry("session.disable_cpu_ep_fallback")
    plain.deactivate()


def test_ort_cuda_events_bracket_the_enqueued_work(tmp_path, fake_ort_cuda):
    """Issue 10 item 6: copies on the session's stream, the run does not synchronise, events before the wait."""
    from .test_cuda_mem import spans

    fake, cuda = fake_ort_cuda
    rt = OrtCudaRuntime("cuda:0")
    rt.activate(Artifact("onnx", "fp32", fashion_model(tmp_path / "m.onnx")), batch=2)
    clock = rt.clock()
    staged, _ = clock.time(rt.stage, np.ones((2, 1, 28, 28), np.float32))
    out, _ = clock.time(rt.infer, staged)
    host, _ = clock.time(rt.fetch, out)
    assert spans(cuda.timeline, clock) == [["htod"], ["run"], ["dtoh"]]
    assert ("run", "1") in cuda.timeline  # disable_synchronize_execution_providers
    assert host.shape == (2, 10) and clock.kind == "cuda-events"
    used = rt.settings_used()
    assert used["clock"] == "cuda-events" and used["compute_clock"] == "cuda-events" and "tf32" in used
    rt.deactivate()


def test_gpu_runtimes_say_which_driver_they_need(monkeypatch):
    """For `quantbench devices`: one line per GPU runtime, naming the driver branch. Issue 18 item 6:
    TensorRT's Linux prerequisites ask r535+ on CUDA 12 (CUDA 12 itself runs on R525+)."""
    from quantbench.runtimes import cuda_mem, ort_cuda, tensorrt_rt

    monkeypatch.setattr(cuda_mem, "installed_cuda_major", lambda dists: None)  # nothing installed: every build
    monkeypatch.setattr(tensorrt_rt, "installed_cuda_major", lambda dists: None)
    monkeypatch.setattr(ort_cuda, "onnxruntime_gpu_cuda_major", lambda: None)
    lines = {name: get_runtime_class(name).requirements() for name in ("ort-cuda", "ort-trt", "tensorrt")}
    assert all("\n" not in line for line in lines.values())
    assert lines["ort-cuda"].startswith("CUDA 12: NVIDIA driver R525+")
    assert "CUDA 13: NVIDIA driver R580+" in lines["ort-cuda"]
    for name in ("ort-trt", "tensorrt"):
        assert lines[name].startswith("CUDA 12: NVIDIA driver R535+") and "R580+" in lines[name], lines[name]
    assert "tox -e tensorrt10" in lines["ort-trt"]  # the TensorRT EP links TensorRT 10
    monkeypatch.setattr(tensorrt_rt, "installed_cuda_major", lambda dists: 12)
    assert get_runtime_class("tensorrt").requirements() == "CUDA 12 build installed: needs NVIDIA driver R535+"


# ---- issue 18: what ort-trt needs, what is timed and copied how -----------------------------------------------
@pytest.fixture
def gpu_ort_listing_everything(monkeypatch):
    """An onnxruntime-gpu that lists the TensorRT and CUDA EPs (as every PyPI wheel does) on a machine with a
    driver; returns the list of sonames the loader was asked for, and the set it cannot load."""
    import importlib.machinery
    import sys
    import types

    from quantbench.runtimes import ort_cuda, trt_libs

    fake = types.ModuleType("onnxruntime")
    fake.__spec__ = importlib.machinery.ModuleSpec("onnxruntime", None)
    fake.get_available_providers = lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                            "CPUExecutionProvider"]
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    monkeypatch.setattr(ort_cuda, "nvidia_driver_found", lambda: True)
    asked, unloadable = [], {"libnvinfer.so.10", "libnvonnxparser.so.10"}

    def cdll(name, *a, **k):
        asked.append(name)
        if Path(name).name in unloadable:
            raise OSError(f"{name}: cannot open shared object file: No such file or directory")
        return object()

    monkeypatch.setattr(trt_libs.ctypes, "CDLL", cdll)
    monkeypatch.setattr(trt_libs, "library_files", lambda prefix="libnvinfer.so": [])
    monkeypatch.setattr(trt_libs, "stub_install", lambda: None)
    return asked, unloadable


def test_ort_trt_is_available_only_where_tensorrt10_loads(gpu_ort_listing_everything, monkeypatch):
    """Issue 18 item 2: the TensorRT EP is listed everywhere; without libnvinfer.so.10 it cannot load."""
    from quantbench.runtimes import trt_libs

    asked, unloadable = gpu_ort_listing_everything
    assert get_runtime_class("ort-cuda").availability().ok  # the CUDA EP needs no TensorRT
    avail = get_runtime_class("ort-trt").availability()
    assert not avail.ok and "libnvinfer.so.10, libnvonnxparser.so.10 cannot be loaded" in avail.reason
    assert "libnvinfer.so.10" in asked and "--extra-index-url https://pypi.nvidia.com" in avail.hint
    assert "tox -e tensorrt10" in avail.hint
    # TensorRT 11 installed instead: named, since the EP does not link it
    monkeypatch.setattr(trt_libs, "library_files",
                        lambda prefix="libnvinfer.so": [Path("/site/tensorrt_libs/libnvinfer.so.11")])
    assert "found libnvinfer.so.11, which it does not link" in get_runtime_class("ort-trt").availability().reason
    unloadable.clear()  # TensorRT 10 loads
    assert get_runtime_class("ort-trt").availability().ok


def test_devices_names_every_missing_part_of_ort_trt(gpu_ort_listing_everything, monkeypatch):
    """Issue 18 item 2: no GPU *and* no TensorRT 10 *and* a CPU build are all named, not only the first."""
    import sys

    from quantbench.runtimes import ort_cuda

    monkeypatch.setattr(ort_cuda, "nvidia_driver_found", lambda: False)
    sys.modules["onnxruntime"].get_available_providers = lambda: ["CPUExecutionProvider"]
    monkeypatch.setattr(ort_cuda, "_dist_installed", lambda dist: dist == "onnxruntime")
    avail = get_runtime_class("ort-trt").availability()
    reason = avail.reason.split("; ")
    assert reason[0] == "the installed onnxruntime is the CPU build (no TensorrtExecutionProvider)"
    assert reason[1] == "no NVIDIA driver/GPU found"
    assert reason[2].startswith("the TensorRT EP links TensorRT 10 and libnvinfer.so.10")
    assert "run on a machine with an NVIDIA GPU and driver" in avail.hint


def test_quantbench_devices_prints_every_missing_part(tmp_path):
    """The real machine: `quantbench devices` lists each missing part of each GPU runtime on its row."""
    import os
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", "import sys; from quantbench.harness.cli import main; sys.exit(main())",
                          "devices"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={**os.environ, "COLUMNS": "2000"})
    assert res.returncode == 0, res.stderr
    text = " ".join(res.stdout.replace("│", " ").split())  # the table's wrapped cells, joined
    for name in ("ort-trt", "tensorrt"):
        avail = get_runtime_class(name).availability()
        if avail.ok:
            continue
        for part in avail.reason.split("; "):
            assert " ".join(part.split()) in text, (name, part)


def test_a_stub_tensorrt_install_is_named_with_nvidia_index_hint(monkeypatch):
    """Issue 18 item 3: PyPI's tensorrt-cu13-libs 11.4 is a stub without libraries."""
    from quantbench.runtimes import trt_libs

    monkeypatch.setattr(trt_libs, "_installed", lambda dist: "11.4.0" if dist == "tensorrt-cu13-libs" else None)
    monkeypatch.setattr(trt_libs.md, "files", lambda dist: [])
    monkeypatch.setattr(trt_libs, "_package_dirs", lambda: [])
    stub = trt_libs.stub_install()
    assert stub and stub.startswith("tensorrt-cu13-libs 11.4.0 installed without TensorRT's libraries")
    avail = get_runtime_class("tensorrt").availability()
    assert not avail.ok and stub in avail.reason
    assert "pip install --extra-index-url https://pypi.nvidia.com .[tensorrt]" in avail.hint


def test_a_session_that_drops_the_tensorrt_ep_fails_the_cell(tmp_path, fake_ort_cuda, monkeypatch):
    """Issue 18 item 2: ORT falls back to CUDA/CPU when the TensorRT EP cannot load; that session must not
    be measured under the ort-trt name."""
    fake, _ = fake_ort_cuda
    monkeypatch.setenv("QUANTBENCH_CACHE", str(tmp_path / "qb"))
    fake.drop = {"TensorrtExecutionProvider"}
    rt = OrtTensorRTRuntime("cuda:0")
    with pytest.raises(RuntimeFailure) as err:
        rt.activate(Artifact("onnx", "fp32", fashion_model(tmp_path / "m.onnx")), batch=2)
    msg = str(err.value)
    assert msg.startswith("ort-trt: TensorrtExecutionProvider failed to initialise, the session fell back to "
                          "['CUDAExecutionProvider', 'CPUExecutionProvider']")
    assert "libnvinfer.so.10" in msg and "not run on another provider" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("name, options, host_compute", [
    ("ort-cuda", {}, False), ("ort-cuda", {"cuda_graph": True}, True), ("ort-trt", {}, True)])
def test_compute_is_host_timed_when_the_run_waits_for_the_gpu(tmp_path, fake_ort_cuda, monkeypatch, name, options,
                                                              host_compute):
    """Issue 18 item 4: CUDA-graph replay (ORT without PR #28686) and the TensorRT EP synchronise the stream
    inside the run, so an end event would include that wait: compute is then timed on the host, labelled."""
    fake, cuda = fake_ort_cuda
    monkeypatch.setenv("QUANTBENCH_CACHE", str(tmp_path / "qb"))
    cuda.elapsed_ms = 1000.0  # every event pair says 1 s: a host-timed call cannot
    rt = get_runtime_class(name)("cuda:0", options)
    rt.activate(Artifact("onnx", "fp32", fashion_model(tmp_path / "m.onnx")), batch=2)
    clock = rt.clock()
    staged, h2d = clock.time(rt.stage, np.ones((2, 1, 28, 28), np.float32))
    out, compute = clock.time(rt.infer, staged)
    _, d2h = clock.time(rt.fetch, out)
    assert h2d == d2h == 1_000_000_000  # copies: events
    assert (compute != 1_000_000_000) == host_compute
    used = rt.settings_used()
    assert used["compute_clock"] == ("host-perf_counter_ns" if host_compute else "cuda-events")
    assert used["clock"] == clock.kind == ("cuda-events; compute: host-perf_counter_ns" if host_compute
                                           else "cuda-events")
    assert (used["compute_clock_note"] is not None) == host_compute
    rt.deactivate()


def test_cuda_graph_events_once_onnxruntime_replays_asynchronously(tmp_path, fake_ort_cuda, monkeypatch):
    from quantbench.runtimes import ort_cuda

    monkeypatch.setattr(ort_cuda, "ORT_ASYNC_GRAPH_REPLAY", (1, 31))  # the fake is 1.31.1
    rt = OrtCudaRuntime("cuda:0", {"cuda_graph": True})
    rt.activate(Artifact("onnx", "fp32", fashion_model(tmp_path / "m.onnx")), batch=2)
    assert rt.clock().kind == "cuda-events" and rt.settings_used()["compute_clock"] == "cuda-events"
    rt.deactivate()


def test_ort_cuda_copies_go_through_pinned_buffers_freed_on_deactivate(tmp_path, fake_ort_cuda):
    """Issue 18 item 5: a copy to pageable memory returns only once done, inflating d2h; one pinned buffer
    per bound shape for each direction, reused, and freed when the shape changes or the runtime deactivates."""
    fake, cuda = fake_ort_cuda
    rt = OrtCudaRuntime("cuda:0")
    rt.activate(Artifact("onnx", "fp32", fashion_model(tmp_path / "m.onnx")), batch=4)
    clock = rt.clock()
    for batch in (4, 4, 2):
        staged, _ = clock.time(rt.stage, np.ones((batch, 1, 28, 28), np.float32))
        out, _ = clock.time(rt.infer, staged)
        host, _ = clock.time(rt.fetch, out)
        assert host.shape == (batch, 10) and host.dtype == np.float32
    assert [c[0] for c in cuda.copies] == ["htod", "dtoh"] * 3
    assert all(pinned for _, _, pinned in cuda.copies), cuda.copies
    assert len({addr for _, addr, _ in cuda.copies[:4]}) == 2  # the same two buffers for the same shape
    used = rt.settings_used()
    assert used["h2d_host_memory"] == used["d2h_host_memory"] == "pinned"
    rt.deactivate()
    assert cuda.pinned_live == set() and len(cuda.freed_pinned) == 4  # 2 for batch 4, 2 for batch 2


# ---- options as they reach ONNX Runtime (the fake records every session's options) ---------------------------
def test_bad_device_and_options_fail_in_one_line(tmp_path, fake_ort_cuda):
    fake, _ = fake_ort_cuda
    path = fashion_model(tmp_path / "m.onnx")
    with pytest.raises(RuntimeFailure, match="ort-cuda runs on cuda devices .* not 'cpu'"):
        OrtCudaRuntime("cpu").activate(Artifact("onnx", "fp32", path))
    with pytest.raises(RuntimeFailure, match="must be EXHAUSTIVE, HEURISTIC or DEFAULT, not 'FASTEST'") as err:
        OrtCudaRuntime("cuda:1", {"cudnn_conv_algo_search": "fastest"}).activate(Artifact("onnx", "fp32", path))
    assert "\n" not in str(err.value) and fake.created == []  # refused before any session
    ok = OrtCudaRuntime("cuda:1", {"cudnn_conv_algo_search": "heuristic", "cuda_graph": True})
    ok.activate(Artifact("onnx", "fp32", path), batch=2)
    (_, providers), = fake.created
    assert providers == [("CUDAExecutionProvider", {"device_id": "1", "cudnn_conv_algo_search": "HEURISTIC",
                                                    "enable_cuda_graph": "1", "user_compute_stream": str(0xABC)})]
    ok.deactivate()
    for name in ("ort-cuda", "ort-trt"):
        assert "clock" in get_runtime_class(name).option_names()


def test_tensorrt_ep_options_profile_the_batch(tmp_path, fake_ort_cuda):
    fake, _ = fake_ort_cuda
    path = fashion_model(tmp_path / "m.onnx")
    rt = OrtTensorRTRuntime("cuda:0", {"trt_fp16": True, "trt_engine_cache_dir": str(tmp_path / "c")})
    rt.activate(Artifact("onnx", "fp32", path), batch=8)
    (so, providers), = fake.created
    (trt_name, trt), (cuda_name, _), (cpu_name, _) = providers
    assert (trt_name, cuda_name, cpu_name) == ("TensorrtExecutionProvider", "CUDAExecutionProvider",
                                               "CPUExecutionProvider")
    assert trt["trt_fp16_enable"] == "True" and trt["trt_int8_enable"] == "False"
    assert trt["trt_engine_cache_path"] == str(tmp_path / "c")
    assert (trt["trt_profile_min_shapes"], trt["trt_profile_opt_shapes"], trt["trt_profile_max_shapes"]) == (
        "input:1x1x28x28", "input:8x1x28x28", "input:8x1x28x28")
    # Issue 10 item 1: ORT cannot serialise TensorRT-compiled nodes, so ort-trt never asks for an optimized graph
    assert not so.optimized_model_filepath
    rt.deactivate()
    cuda = OrtCudaRuntime("cuda:0")
    cuda.activate(Artifact("onnx", "fp32", path), batch=8)
    assert fake.created[-1][0].optimized_model_filepath  # the CUDA EP's int8 audit reads it
    cuda.deactivate()


def test_ort_trt_cache_folder_is_created_and_follows_quantbench_cache(tmp_path, fake_ort_cuda, monkeypatch):
    """Issue 10 item 10: the TensorRT EP does not create the folder (or its parents) itself."""
    fake, _ = fake_ort_cuda
    monkeypatch.setenv("QUANTBENCH_CACHE", str(tmp_path / "qb"))
    path = fashion_model(tmp_path / "m.onnx")
    for options, folder in (({}, tmp_path / "qb" / "ort-trt"),
                            ({"trt_engine_cache_dir": str(tmp_path / "deep" / "er" / "cache")},
                             tmp_path / "deep" / "er" / "cache")):
        rt = OrtTensorRTRuntime("cuda:0", options)
        rt.activate(Artifact("onnx", "fp32", path), batch=2)
        assert fake.created[-1][1][0][1]["trt_engine_cache_path"] == str(folder) and folder.is_dir()
        rt.deactivate()


def test_ort_trt_static_batch_gets_no_conflicting_profile(tmp_path, fake_ort_cuda, monkeypatch):
    """Issue 10 item 10: a profile from batch 1 contradicts a model whose batch is fixed."""
    fake, _ = fake_ort_cuda
    monkeypatch.setenv("QUANTBENCH_CACHE", str(tmp_path / "qb"))
    model = onnx.load(str(fashion_model(tmp_path / "m.onnx")))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 8
    save_model(model, tmp_path / "static.onnx")
    rt = OrtTensorRTRuntime("cuda:0")
    rt.activate(Artifact("onnx", "fp32", tmp_path / "static.onnx"), batch=8)
    assert not any(k.startswith("trt_profile") for k in fake.created[-1][1][0][1])
    rt.deactivate()
