"""What a machine can serve, as Ray custom resources (``quantbench devices --ray-resources``).

A quantbench node advertises:

- ``quantbench-slot``: cells it runs at once (1: a cell has the machine to itself; each cell task
  takes ``1 / run.cells_per_node`` of it);
- ``<runtime>@<device>`` for each runtime usable here and each device it sees (``ort-cpu@cpu``,
  ``ort-cuda@cuda:0``, ``openvino@CPU``);
- ``cpu-<model>`` (the CPU model, e.g. ``cpu-intel-xeon-platinum-8480``) and ``cpu-<flag>`` for each
  ISA extension that changes low-precision speed (``cpu-avx512-vnni``, ``cpu-amx-int8``);
- ``gpu-<name>`` per NVIDIA GPU name, counted (``gpu-H100-80GB-HBM3``) and its short form when it
  differs (``gpu-H100``).

``cpu-<model>`` and the full ``gpu-<name>`` are the node's device *kinds*: a fleet sweep without
``run.targets`` measures every cell once per kind found in the cluster.
"""
from __future__ import annotations

import re
from typing import Any

from quantbench.common.row_keys import HOST_DEVICES, is_host_device  # noqa: F401 - HOST_DEVICES: re-exported

SLOT = "quantbench-slot"
_VENDOR = re.compile(r"\b(nvidia|intel|amd)\b", re.IGNORECASE)
_NOISE = re.compile(r"\((r|tm)\)|\bcpu\b|\bprocessor\b|@.*$|\bwith\b.*$", re.IGNORECASE)
# GPU name tokens that describe a variant of a chip, not the chip (memory size, form factor).
_VARIANT_TOKEN = re.compile(r"^(\d+(gb|g)|sxm\d*|pcie|hbm\d*e?|nvl|mig.*|dgx.*|max-q)$", re.IGNORECASE)


def _slug(text: str, lower: bool) -> str:
    text = re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-.")
    text = re.sub(r"-{2,}", "-", text)
    return text.lower() if lower else text


def cpu_kind(model: str) -> str:
    """``Intel(R) Xeon(R) Platinum 8480+`` -> ``cpu-intel-xeon-platinum-8480``."""
    return "cpu-" + (_slug(_NOISE.sub(" ", model), lower=True) or "unknown")


def cpu_flag(flag: str) -> str:
    """``avx512_vnni`` / ``avx512vnni`` -> ``cpu-avx512-vnni``."""
    flag = flag.lower().replace("avx512vnni", "avx512_vnni")
    return "cpu-" + flag.replace("_", "-")


def gpu_kinds(name: str) -> list[str]:
    """``NVIDIA H100 80GB HBM3`` -> ``["gpu-H100-80GB-HBM3", "gpu-H100"]`` (full name first)."""
    bare = _VENDOR.sub(" ", name).strip() or name
    tokens = [t for t in re.split(r"[\s\-_/]+", bare) if t]
    full = "gpu-" + (_slug(" ".join(tokens), lower=False) or "unknown")
    short_tokens: list[str] = []
    for t in tokens:
        if _VARIANT_TOKEN.match(t):
            break
        short_tokens.append(t)
    short = "gpu-" + _slug(" ".join(short_tokens), lower=False) if short_tokens else full
    return [full] if short == full else [full, short]


def runtime_resource(runtime: str, device: str) -> str:
    """``ort-cpu``, ``cpu`` -> ``ort-cpu@cpu``: this node can run that runtime on that device."""
    return f"{runtime}@{device}"


def split_runtime_resource(name: str, runtimes: list[str]) -> tuple[str, str] | None:
    """``ort-cuda@cuda:0`` -> ``("ort-cuda", "cuda:0")`` when the runtime is known, else None."""
    runtime, sep, device = name.partition("@")
    return (runtime, device) if sep and device and runtime in runtimes else None


def device_kind(env: dict[str, Any], device: str) -> str:
    """The kind resource of ``device`` on the machine described by ``env`` (an environment fingerprint).

    A GPU device ``cuda:N`` is the N-th GPU's full name; devices with no NVIDIA GPU behind them
    (OpenVINO's integrated ``GPU``) count as the CPU's kind.
    """
    if not is_host_device(device) and env.get("gpu"):
        return gpu_kinds(_gpu_name(env, device))[0]
    return cpu_kind(str(env.get("cpu_model") or "unknown"))


def _gpu_name(env: dict[str, Any], device: str) -> str:
    """The name of the GPU behind ``cuda:N`` (the N-th; the last when there are fewer) in ``env``."""
    gpus = env["gpu"]
    idx = device.partition(":")[2]
    return str(gpus[min(int(idx) if idx.isdigit() else 0, len(gpus) - 1)].get("name") or "unknown")


def target_covers(env: dict[str, Any] | None, device: str, target: str) -> bool:
    """Whether a cell on ``device`` belongs to ``target`` on a node described by ``env``.

    ``gpu-…`` targets take the devices of a GPU of that name, ``cpu-…`` targets (a CPU model or ISA
    flag) the devices that run on the CPU, any other resource (``rack-3``) every device of its nodes.
    """
    if not target.startswith(("cpu-", "gpu-")):
        return True
    if env is None:  # the node did not describe itself: go by the device's name
        return is_host_device(device) == target.startswith("cpu-")
    kind = device_kind(env, device)
    if target.startswith("cpu-"):
        return kind.startswith("cpu-")
    if not kind.startswith("gpu-"):
        return False
    return target in gpu_kinds(_gpu_name(env, device))


def node_resources(slots: int = 1) -> dict[str, float]:
    """The resources this machine should advertise: the JSON for ``ray start --resources``."""
    from quantbench.harness.sweep.environment import fingerprint
    from quantbench.runtimes import get_runtime_class, list_runtimes

    env = fingerprint()
    res: dict[str, float] = {SLOT: float(slots), cpu_kind(str(env.get("cpu_model") or "unknown")): 1.0}
    for flag in env.get("cpu_flags") or []:
        res[cpu_flag(flag)] = 1.0
    for gpu in env.get("gpu") or []:
        for kind in gpu_kinds(str(gpu.get("name") or "unknown")):
            res[kind] = res.get(kind, 0.0) + 1.0
    for name in list_runtimes():
        try:
            cls = get_runtime_class(name)
            if not cls.availability().ok:
                continue
            devices = cls.devices()
        except Exception:  # noqa: BLE001 - a broken runtime is simply not advertised
            continue
        for device in devices:
            res[runtime_resource(name, device)] = 1.0
    return {k: (int(v) if float(v).is_integer() else v) for k, v in res.items()}
