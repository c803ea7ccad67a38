"""ONNX Runtime CUDA/TensorRT EPs: availability, node-placement audit and options run everywhere; inference
runs where onnxruntime-gpu and a GPU exist (marker ``ort_cuda``)."""
from __future__ import annotations

import importlib.metadata as md
import json
from pathlib import Path

import numpy as np
import pytest

from quantbench.runtimes import Artifact, RuntimeFailure, create_runtime, get_runtime_class
from quantbench.runtimes.ort_cuda import OrtCudaRuntime, OrtTensorRTRuntime, summarize_ort_profile

from .test_tensorrt import fashion_model, fashion_reader, host_reference, quantize


def _installed(dist: str) -> bool:
    try:
        md.version(dist)
        return True
    except md.PackageNotFoundError:
        return False


@pytest.mark.parametrize("name, provider", [("ort-cuda", "CUDAExecutionProvider"),
                                            ("ort-trt", "TensorrtExecutionProvider")])
def test_unavailable_reason_names_the_cpu_build_and_the_fix(name, provider):
    avail = get_runtime_class(name).availability()
    if avail.ok:
        pytest.skip(f"{name} is available here")
    assert "\n" not in str(avail)
    if _installed("onnxruntime") and not _installed("onnxruntime-gpu"):
        assert avail.reason.startswith(f"the installed onnxruntime is the CPU build (no {provider})")
        assert avail.hint == "pip uninstall -y onnxruntime && pip install .[ort-gpu] / tox -e ort-cuda"
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


def test_bad_device_and_options_fail_in_one_line(tmp_path):
    path = fashion_model(tmp_path / "m.onnx")
    with pytest.raises(RuntimeFailure, match="ort-cuda runs on cuda devices .* not 'cpu'"):
        OrtCudaRuntime("cpu").activate(Artifact("onnx", "fp32", path))
    rt = OrtCudaRuntime("cuda:1", {"cudnn_conv_algo_search": "fastest"})
    rt.device_index, rt._stream = 1, None
    with pytest.raises(RuntimeFailure, match="must be EXHAUSTIVE, HEURISTIC or DEFAULT, not 'FASTEST'"):
        rt._provider_options()
    ok = OrtCudaRuntime("cuda:1", {"cudnn_conv_algo_search": "heuristic", "cuda_graph": True})
    ok.device_index, ok._stream = 1, None
    assert ok._provider_options() == [("CUDAExecutionProvider", {"device_id": "1", "cudnn_conv_algo_search": "HEURISTIC",
                                                                 "enable_cuda_graph": "1"})]
    for name in ("ort-cuda", "ort-trt"):
        assert "clock" in get_runtime_class(name).option_names()


def test_tensorrt_ep_options_profile_the_batch(tmp_path):
    path = fashion_model(tmp_path / "m.onnx")
    rt = OrtTensorRTRuntime("cuda:0", {"trt_fp16": True, "trt_engine_cache_dir": str(tmp_path / "c")})
    rt.artifact, rt.batch, rt.device_index, rt._stream = Artifact("onnx", "fp32", path), 8, 0, None
    (trt_name, trt), (cuda_name, cuda) = rt._provider_options()
    assert (trt_name, cuda_name) == ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    assert trt["trt_fp16_enable"] == "True" and trt["trt_int8_enable"] == "False"
    assert trt["trt_engine_cache_path"] == str(tmp_path / "c")
    assert (trt["trt_profile_min_shapes"], trt["trt_profile_opt_shapes"], trt["trt_profile_max_shapes"]) == (
        "input:1x1x28x28", "input:8x1x28x28", "input:8x1x28x28")
    assert not OrtTensorRTRuntime.save_optimized_graph  # compiled TensorRT nodes cannot be serialised


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
    for x, out in zip(batches, outs):
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


@pytest.mark.ort_cuda
def test_ort_trt_runs_when_the_tensorrt_ep_is_listed(tmp_path):
    if not get_runtime_class("ort-trt").availability().ok:
        pytest.skip("onnxruntime-gpu here has no TensorrtExecutionProvider")
    path = fashion_model(tmp_path / "m.onnx")
    x = next(iter(fashion_reader(8, 8)))[0]
    with create_runtime("ort-trt", "cuda:0", {"trt_engine_cache_dir": str(tmp_path / "c")}) as rt:
        rt.activate(Artifact("onnx", "fp32", path), batch=8)
        out = rt.fetch(rt.infer(rt.stage(x)))
        report = rt.execution_report()
    np.testing.assert_allclose(out, host_reference(path, x), rtol=1e-2, atol=1e-2)
    assert "Tensorrt" in report["audit_note"]
