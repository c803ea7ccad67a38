"""Sweep expansion: config -> cells (model × variant × runtime settings × device × batch)."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from quantbench.harness.config.schema import ConfigError, ModelConfig, SweepConfig, VariantConfig


@dataclass(frozen=True)
class RuntimeChoice:
    """A runtime with one concrete set of options (lists in the config are swept)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    swept: tuple[str, ...] = ()  # option keys that vary across choices of this runtime

    @property
    def label(self) -> str:
        """``openvino[precision=f32]`` when an option is swept, else just the name."""
        if not self.swept:
            return self.name
        return f"{self.name}[{','.join(f'{k}={self.options[k]}' for k in self.swept)}]"


@dataclass
class Cell:
    """One measurement: a model's variant on one runtime choice, device and batch size."""

    model_index: int
    model: ModelConfig
    variant: VariantConfig
    runtime: RuntimeChoice
    device: str
    batch: int
    model_key: dict[str, Any]

    @property
    def cell_id(self) -> str:
        key = {
            "model": self.model_key, "variant": self.variant.identity(), "runtime": self.runtime.name,
            "options": self.runtime.options, "device": self.device, "batch": self.batch,
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class RuntimeResolution:
    """Which runtimes run, and why the others don't."""

    usable: list[str]
    unavailable: dict[str, str]  # name -> reason with install hint
    explicit: bool


def resolve_runtimes(requested: list[str]) -> RuntimeResolution:
    """Expand ``auto`` and check availability; unknown names raise :class:`ConfigError`."""
    from quantbench.runtimes import UnknownRuntime, get_runtime_class, list_runtimes

    explicit = requested != ["auto"]
    names = list_runtimes() if not explicit else requested
    usable, unavailable = [], {}
    for name in names:
        if name == "auto":
            raise ConfigError("'auto' cannot be combined with runtime names")
        try:
            cls = get_runtime_class(name)
        except UnknownRuntime as exc:
            raise ConfigError(str(exc)) from None
        except ImportError as exc:  # a broken adapter module is one unavailable runtime, not a crash
            unavailable[name] = f"adapter failed to import: {exc}"
            continue
        avail = cls.availability()
        if avail.ok:
            usable.append(name)
        else:
            unavailable[name] = str(avail)
    return RuntimeResolution(usable, unavailable, explicit)


def runtime_choices(name: str, options: dict[str, Any], default_threads: int) -> list[RuntimeChoice]:
    """Expand list-valued options of one runtime into one :class:`RuntimeChoice` each (the options were
    checked once, with the config: harness.config.runtime_options)."""
    from quantbench.harness.config.runtime_options import option_sets
    from quantbench.runtimes import get_runtime_class

    defaults = {"threads": default_threads} if "threads" in get_runtime_class(name).option_names() else {}
    sets, swept = option_sets(options, defaults)
    return [RuntimeChoice(name, opts, swept) for opts in sets]


def default_threads(cfg: SweepConfig) -> int:
    """``run.threads``, or the number of physical cores when 0."""
    if cfg.run.threads:
        return cfg.run.threads
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        return os.cpu_count() or 1


def expand(cfg: SweepConfig, usable: list[str], model_keys: list[dict[str, Any]]) -> tuple[list[Cell], list[str]]:
    """All cells of the sweep, and notes on requested devices no runtime can serve."""
    from quantbench.runtimes import get_runtime_class, list_runtimes

    threads = default_threads(cfg)
    for name in cfg.runtime_options:
        if name not in list_runtimes():  # a typo in [runtime_options.X] must not pass silently
            import difflib

            close = difflib.get_close_matches(name, list_runtimes(), n=1)
            raise ConfigError(f"[runtime_options.{name}]: unknown runtime" + (f"; did you mean '{close[0]}'?" if close else ""))
    choices = [c for name in usable for c in runtime_choices(name, cfg.runtime_options.get(name, {}), threads)]
    notes: list[str] = []
    served: set[str] = set()
    cells: list[Cell] = []
    for mi, model in enumerate(cfg.models):
        for variant in cfg.variants:
            for choice in choices:
                devs = get_runtime_class(choice.name).devices()
                wanted = devs if cfg.run.devices == ["auto"] else [d for d in cfg.run.devices if d in devs]
                served.update(wanted)
                for device in wanted:
                    for batch in cfg.run.batch_sizes:
                        cells.append(Cell(mi, model, variant, choice, device, batch, model_keys[mi]))
    if cfg.run.devices != ["auto"]:
        for d in cfg.run.devices:
            if d not in served:
                notes.append(f"no usable runtime can target device '{d}' here")
    return cells, notes
