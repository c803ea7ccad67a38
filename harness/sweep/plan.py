"""Sweep expansion: config -> cells (model × variant × runtime settings × device × batch [× target]).

Where cells can run is a list of :class:`Placement`: this machine's runtimes and devices for a local
sweep, the targets a Ray cluster's nodes offer for a fleet sweep. The expansion is one function for both.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from quantbench.harness.config.errors import ConfigError
from quantbench.harness.config.schema import ModelConfig, SweepConfig, VariantConfig


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
    """One measurement: a model's variant on one runtime choice, device and batch size; on a fleet, on one
    ``target`` (a Ray resource the node that measures it must have; None on this machine)."""

    model_index: int
    model: ModelConfig
    variant: VariantConfig
    runtime: RuntimeChoice
    device: str
    batch: int
    model_key: dict[str, Any]
    target: str | None = None

    @property
    def cell_id(self) -> str:
        key = {
            "model": self.model_key, "variant": self.variant.identity(), "runtime": self.runtime.name,
            "options": self.runtime.options, "device": self.device, "batch": self.batch,
        }
        local = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        if self.target is None:
            return local
        on_target = json.dumps({"cell": local, "target": self.target}, sort_keys=True)
        return hashlib.sha256(on_target.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Placement:
    """Where cells of one runtime run: its devices there, the threads a cell uses, and the target (a Ray
    resource, None on this machine)."""

    runtime: str
    devices: tuple[str, ...]
    threads: int
    target: str | None = None


@dataclass
class RuntimeResolution:
    """Which runtimes run, and why the others don't."""

    usable: list[str]
    unavailable: dict[str, str]  # name -> reason with install hint
    explicit: bool


@dataclass
class Skip:
    """A runtime or target the sweep asks for that nothing offers: one skipped row about the sweep itself."""

    key: str  # its row's cell_id is a hash of this: a rerun's row replaces the previous one
    error: str
    runtime: str
    device: str
    target: str | None = None


def _no_fields(_: Any) -> dict[str, Any]:
    return {}


def _nothing_here(notes: list[str]) -> str:
    return f"nothing to run: {'; '.join(notes) or 'no runtime is available'} (see `quantbench devices`)"


def _unserved_here(device: str) -> str:
    return f"no usable runtime can target device '{device}' here"


@dataclass
class Offer:
    """Where a launcher can run a sweep's cells, and how it words what it cannot: all the planner needs
    from a launcher (:mod:`harness.sweep.launch`). The defaults are this machine's."""

    runtimes: RuntimeResolution
    placements: list[Placement]
    envs: dict[str | None, list[dict[str, Any]]]  # target -> the environments its cells would measure under
    skips: list[Skip] = field(default_factory=list)  # beyond the unavailable runtimes (e.g. targets no node has)
    unserved: Callable[[str], str] = _unserved_here  # a requested device nothing serves -> the note
    nothing_to_run: Callable[[list[str]], str] = _nothing_here  # the notes -> the RunError's text
    row_fields: Callable[[Cell], dict[str, Any]] = _no_fields  # launcher fields of a cell's row
    sweep_fields: Callable[[str | None], dict[str, Any]] = _no_fields  # ... of a row about the sweep (target)


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


def local_placements(cfg: SweepConfig, usable: list[str]) -> list[Placement]:
    """This machine's placements: each usable runtime on the devices it serves that ``run.devices`` asks for."""
    from quantbench.runtimes import get_runtime_class

    threads = default_threads(cfg)
    placements = []
    for name in usable:
        devs = get_runtime_class(name).devices()
        wanted = devs if cfg.run.devices == ["auto"] else [d for d in cfg.run.devices if d in devs]
        placements.append(Placement(name, tuple(wanted), threads))
    return placements


def unserved_devices(cfg: SweepConfig, placements: list[Placement]) -> list[str]:
    """Devices ``run.devices`` names that no placement serves."""
    if cfg.run.devices == ["auto"]:
        return []
    served = {d for p in placements for d in p.devices}
    return [d for d in cfg.run.devices if d not in served]


def expand_cells(cfg: SweepConfig, placements: list[Placement], model_keys: list[dict[str, Any]]) -> list[Cell]:
    """All cells of the sweep: model × variant × placement × runtime option choice × device × batch."""
    choices = [runtime_choices(p.runtime, cfg.runtime_options.get(p.runtime, {}), p.threads) for p in placements]
    cells: list[Cell] = []
    for mi, model in enumerate(cfg.models):
        for variant in cfg.variants:
            for placement, options in zip(placements, choices, strict=True):
                for choice in options:
                    for device in placement.devices:
                        for batch in cfg.run.batch_sizes:
                            cells.append(Cell(mi, model, variant, choice, device, batch, model_keys[mi],
                                              placement.target))
    return cells


def expand(cfg: SweepConfig, usable: list[str], model_keys: list[dict[str, Any]]) -> tuple[list[Cell], list[str]]:
    """All cells of a sweep on this machine, and notes on requested devices no runtime can serve."""
    placements = local_placements(cfg, usable)
    notes = [_unserved_here(d) for d in unserved_devices(cfg, placements)]
    return expand_cells(cfg, placements, model_keys), notes
