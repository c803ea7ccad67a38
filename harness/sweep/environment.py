"""Device / environment fingerprint attached to every result row."""
from __future__ import annotations

import functools
import importlib.metadata as md
import os
import platform
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGES = ("numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "torch", "torchvision",
            "tensorrt", "cuda-python", "pycuda")
# CPU features that change quantized/low-precision performance.
INTERESTING_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512vnni", "avx512_bf16", "amx_bf16", "amx_int8",
                     "avx_vnni", "fma", "f16c", "avx512_fp16")


def _cpu_info() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line and not flags:
                flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    return model, [f for f in INTERESTING_FLAGS if f in flags]


def _gpus() -> list[dict[str, str]]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return gpus


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that matter, read from metadata (nothing is imported)."""
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return versions


def git_revision() -> str:
    """The quantbench checkout's git revision (with -dirty), or "" outside a checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=12"],
                             capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() if rev.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


@functools.lru_cache(maxsize=1)
def fingerprint() -> dict[str, Any]:
    """Hardware and software this run is measured on."""
    import psutil

    model, flags = _cpu_info()
    return {
        "host": socket.gethostname(),
        "cpu_model": model,
        "cpu_flags": flags,
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": _gpus(),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "versions": package_versions(),
        "git_rev": git_revision(),
    }
