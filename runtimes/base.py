"""The one interface every runtime adapter implements.

Modelled on Polygraphy's runners: the public methods check state and call an ``_*_impl`` method
that the adapter overrides. Adapters only *do* work; the harness times them (through the
:class:`Clock` an adapter hands out, so a GPU adapter can time with CUDA events without the
harness knowing). Heavy packages are imported inside the adapter's methods, never at module
import time, so ``import runtimes`` works on any machine.
"""
from __future__ import annotations

import importlib.util
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np


class RuntimeUnavailable(RuntimeError):
    """The runtime's package, driver or device is missing; the message says how to get it."""


class RuntimeFailure(RuntimeError):
    """The runtime is present but could not load or run this artifact (one line, no traceback)."""


@dataclass(frozen=True)
class Availability:
    """Whether a runtime can run here, and if not, why and how to fix it."""

    ok: bool
    reason: str = ""
    hint: str = ""

    def __str__(self) -> str:
        if self.ok:
            return "available"
        return f"{self.reason} ({self.hint})" if self.hint else self.reason


def missing_package(module: str, extra: str, tox_env: str | None = None) -> Availability | None:
    """Return an unavailable :class:`Availability` if ``module`` cannot be imported, else None."""
    if importlib.util.find_spec(module) is None:
        hint = f"pip install .[{extra}]"
        if tox_env:
            hint += f" / tox -e {tox_env}"
        return Availability(False, f"python package '{module}' is not installed", hint)
    return None


@dataclass(frozen=True)
class Artifact:
    """Something a runtime can load: an ONNX file, or a torch model recipe.

    ``format`` is ``"onnx"`` (``path`` is the .onnx file), ``"torch"`` (``source`` holds the
    recipe understood by :func:`exporters.torch_models.build_module`) or ``"trt-calibrate"``
    (``path`` is the fp32 ONNX, the runtime quantizes it itself with ``settings["calibrator"]``
    fed by ``calibration()``; only TensorRT 10.x accepts it). ``precision`` is the label
    the user asked for (``fp32``, ``fp16``, ``int8``); runtimes report what actually ran through
    :meth:`Runtime.execution_report`.
    """

    format: str
    precision: str
    path: Path | None = None
    source: Mapping[str, Any] = field(default_factory=dict)
    input_name: str = "input"
    input_shape: tuple[int, ...] = ()  # without the batch axis, e.g. (1, 28, 28)
    settings: Mapping[str, Any] = field(default_factory=dict)  # variant settings (e.g. TRT int8)
    reference_path: Path | None = None  # the fp32 ONNX this variant was derived from
    calibration: Any = None  # zero-arg callable -> fresh calibration reader (runtime-side calibration)


class Clock:
    """Times one call on the host with ``perf_counter_ns``. GPU adapters return a CUDA-event clock."""

    kind: str = "host-perf_counter_ns"

    def time(self, fn: Callable[..., Any], *args: Any) -> tuple[Any, int]:
        """Call ``fn(*args)``; return its result and the elapsed nanoseconds."""
        t0 = time.perf_counter_ns()
        out = fn(*args)
        return out, time.perf_counter_ns() - t0


class Runtime(ABC):
    """One inference runtime on one device.

    Life cycle: ``activate(artifact)`` (load/compile) → repeatedly ``stage`` (host→device),
    ``infer`` (compute, synchronised: returns only when results are ready), ``fetch``
    (device→host, returns numpy arrays) → ``deactivate``.
    """

    name: ClassVar[str]  # kebab-case, e.g. "ort-cpu"
    formats: ClassVar[tuple[str, ...]] = ("onnx",)
    extra: ClassVar[str] = ""  # pyproject extra that installs it
    tox_env: ClassVar[str] = ""

    def __init__(self, device: str = "cpu", options: Mapping[str, Any] | None = None) -> None:
        self.device = device
        self.options: dict[str, Any] = dict(options or {})
        self._active = False
        self.artifact: Artifact | None = None
        self.batch: int | None = None

    # ---- discovery -------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def availability(cls) -> Availability:
        """Whether this runtime can be used on this machine (cheap: no model is loaded)."""

    @classmethod
    def devices(cls) -> list[str]:
        """Devices this runtime can target here (e.g. ``["cpu"]``, ``["cuda:0"]``)."""
        return ["cpu"]

    @classmethod
    def versions(cls) -> dict[str, str]:
        """Versions of the packages/drivers behind this runtime, for the result fingerprint."""
        return {}

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """Runtime-specific option keys accepted in ``[runtime_options.<name>]``."""
        return ("threads",)

    @classmethod
    def option_types(cls) -> dict[str, type | tuple[type, ...]]:
        """Types of the options in :meth:`option_names` that the config validator should enforce
        (an option not listed is passed through as written)."""
        return {}

    @classmethod
    def requirements(cls) -> str:
        """What this runtime needs beyond its Python packages (driver, GPU, libraries), one line;
        shown by ``quantbench devices``. Empty when the packages are all it needs."""
        return ""

    def supports(self, artifact: Artifact) -> str | None:
        """Return None if this runtime can run ``artifact``, else a one-line reason."""
        if artifact.format not in self.formats:
            return f"{self.name} runs {'/'.join(self.formats)} artifacts, not {artifact.format}"
        return None

    # ---- life cycle --------------------------------------------------------------------------
    def activate(self, artifact: Artifact, batch: int | None = None) -> None:
        """Load/compile ``artifact`` on this runtime's device.

        ``batch`` is the batch size the harness will stage (adapters that build static shapes or
        optimisation profiles, e.g. TensorRT or OpenVINO, use it; others may ignore it).
        """
        if self._active:
            raise RuntimeFailure(f"{self.name}: already active")
        reason = self.supports(artifact)
        if reason:
            raise RuntimeFailure(reason)
        self.artifact = artifact
        self.batch = batch
        self._activate_impl(artifact)
        self._active = True

    def stage(self, inputs: np.ndarray) -> Any:
        """Copy a host batch to the device; returns whatever ``infer`` takes."""
        self._check()
        return self._stage_impl(inputs)

    def infer(self, staged: Any) -> Any:
        """Run the model on staged inputs; blocks until outputs are ready on the device."""
        self._check()
        return self._infer_impl(staged)

    def fetch(self, outputs: Any) -> np.ndarray:
        """Copy the first output back to the host as a float32 numpy array."""
        self._check()
        return self._fetch_impl(outputs)

    def deactivate(self) -> None:
        """Free everything ``activate`` built."""
        if self._active:
            self._deactivate_impl()
        self._active = False

    def clock(self) -> Clock:
        """The clock the harness should time this runtime's calls with."""
        return Clock()

    @property
    def host_memory(self) -> bool:
        """True when inputs and outputs stay in host memory, so ``stage``/``fetch`` copy nothing to or
        from a device and there is no host→device / device→host time to report (the harness then
        records h2d/d2h as null). The default: the device is the host CPU."""
        return self.device.lower().split(":")[0] == "cpu"

    def settings_used(self) -> dict[str, Any]:
        """The settings that change the numbers (threads, hints, providers), as actually applied."""
        return {k: v for k, v in self.options.items()}

    def execution_report(self) -> dict[str, Any]:
        """What really ran. Keys (all optional): ``exec_precision`` (e.g. "int8", "fp32", "bf16",
        "mixed"), ``int8_op_share`` (0..1 share of compute ops that ran in integer precision),
        ``op_precisions`` ({precision: count}), ``audit_note`` (free text)."""
        return {}

    def _check(self) -> None:
        if not self._active:
            raise RuntimeFailure(f"{self.name}: call activate() first")

    # ---- adapter hooks ---------------------------------------------------------------------------
    @abstractmethod
    def _activate_impl(self, artifact: Artifact) -> None: ...

    def _stage_impl(self, inputs: np.ndarray) -> Any:
        return inputs

    @abstractmethod
    def _infer_impl(self, staged: Any) -> Any: ...

    def _fetch_impl(self, outputs: Any) -> np.ndarray:
        return np.asarray(outputs, dtype=np.float32)

    def _deactivate_impl(self) -> None:
        """Free what ``_activate_impl`` built; optional (not abstract): an adapter that holds nothing
        beyond its attributes keeps this default."""
        return

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()
