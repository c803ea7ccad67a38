"""The Ray cluster as a fleet sweep sees it: connecting (in seconds, in one line when it fails), its
nodes with quantbench resources and their environments, and Ray's own messages routed to the sweep's log."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from quantbench.harness.config.errors import first_line
from quantbench.harness.sweep.output import RunError
from quantbench.harness.sweep.resources import SLOT, device_kind, split_runtime_resource

RAY_HINT = "pip install 'quantbench[ray]'"
START_HINT = ('start each worker with: ray start --address=HEAD:6379 '
              '--resources="$(quantbench devices --ray-resources)"')
SURVEY_TIMEOUT_S = 120.0
# A cell sees its node's GPUs as `quantbench devices` there does: Ray must not narrow CUDA_VISIBLE_DEVICES
# for tasks that ask for no GPU (device "cuda:1" means the node's second GPU).
TASK_ENV = {"RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0", "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1"}
_HIDDEN_RESOURCES = ("memory", "object_store_memory")


@dataclass
class Node:
    """A node of the cluster that advertises quantbench resources."""

    node_id: str
    ip: str
    resources: dict[str, float]
    host: str = ""
    env: dict[str, Any] | None = None  # its environment fingerprint (None: it did not answer the survey)

    def has(self, resource: str) -> bool:
        return self.resources.get(resource, 0) > 0

    @property
    def name(self) -> str:
        return f"{self.host or self.ip} ({self.node_id[:8]})"

    def offers(self) -> set[str]:
        """The ``runtime@device`` resources of this node naming a runtime quantbench knows."""
        from quantbench.runtimes import list_runtimes

        known = list_runtimes()
        return {k for k in self.resources if split_runtime_resource(k, known)}

    def kind_of(self, resource: str) -> str | None:
        """``runtime@device`` resource -> the device's kind on this node (None: the node did not answer)."""
        from quantbench.runtimes import list_runtimes

        pair = split_runtime_resource(resource, list_runtimes())
        return device_kind(self.env, pair[1]) if pair and self.env else None


def import_ray() -> Any:
    """The ``ray`` module, or a one-line RunError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RunError(f"run.ray is set but Ray is not installed: {RAY_HINT}") from None
    return ray


def _bootstrap(address: str) -> tuple[str, int] | None:
    """The host and port ``ray.init(address)`` will dial, when they can be known beforehand."""
    if address.startswith("ray://"):
        hostport = address[len("ray://"):]
    elif address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address

            hostport = canonicalize_bootstrap_address("auto") or ""
        except Exception:  # noqa: BLE001 - no cluster found: ray.init says so itself, at once
            return None
    else:
        hostport = address
    host, _, port = hostport.rpartition(":")
    return (host.strip("[]"), int(port)) if host and port.isdigit() else None


def unreachable(address: str) -> str:
    """Why no Ray cluster answers at the cluster's address ("" when one does, or it cannot be told).

    ``ray.init`` retries an address where nothing (or a firewall, or a proxy) answers for about 20 s,
    printing a warning per try; :func:`ray_probe.unreachable` says so in a few seconds.
    """
    from quantbench.harness.sweep.launch.ray_probe import unreachable as probe

    target = _bootstrap(address)
    return probe(*target) if target is not None else ""


def check_reachable(address: str) -> None:
    """Raise a one-line RunError when no Ray cluster answers at ``address``."""
    why = unreachable(address)
    if why:
        raise RunError(f"cannot connect to the Ray cluster at '{address}': {why} (is `ray start --head` running "
                       "there?)")


def connect(ray: Any, address: str) -> bool:
    """Connect to the cluster at ``address`` ("auto": the one this machine belongs to); True when we did."""
    if ray.is_initialized():  # already connected (a notebook, a test): use that cluster
        return False
    check_reachable(address)
    try:
        ray.init(address=address, namespace="quantbench", log_to_driver=False, logging_level=logging.WARNING,
                 configure_logging=True)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, ValueError, … : one line either way
        raise RunError(f"cannot connect to the Ray cluster at '{address}': {first_line(exc)}") from None
    return True


@contextmanager
def ray_messages_to(log: Callable[[str], None]) -> Iterator[None]:
    """Ray prints cluster events (a task retried, a raylet's last log lines) straight to stderr from a
    thread of its own; while a sweep runs they go to ``log`` instead, one line each."""
    try:
        import ray._private.worker as ray_worker

        original = ray_worker.print_to_stdstream
    except (ImportError, AttributeError):  # another Ray version: leave its output alone
        yield
        return

    def route(data: dict[str, Any], ignore_prefix: bool = False) -> None:
        lines = [ln.strip() for text in data.get("lines") or [] for ln in str(text).splitlines() if ln.strip()]
        if lines:
            log(f"warning: ray ({data.get('pid') or 'cluster'}): {lines[0][:240]}")

    ray_worker.print_to_stdstream = route
    try:
        yield
    finally:
        ray_worker.print_to_stdstream = original


def cluster_nodes(ray: Any) -> dict[str, dict[str, Any]]:
    """Alive nodes by id: Ray's node table entries."""
    return {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}


def shown_resources(resources: dict[str, float]) -> dict[str, float]:
    """A node's resources as rows record them (without memory sizes and Ray's per-node ``node:`` keys)."""
    return {k: v for k, v in sorted(resources.items()) if k not in _HIDDEN_RESOURCES and not k.startswith("node:")}




def survey(ray: Any, log: Callable[[str], None]) -> list[Node]:
    """The nodes with quantbench resources, each asked (by a task pinned to it) for its environment."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from quantbench.harness.sweep.launch import ray_cells

    alive = cluster_nodes(ray)
    nodes = [Node(nid, n.get("NodeManagerAddress", "?"), dict(n.get("Resources") or {}))
             for nid, n in alive.items() if (n.get("Resources") or {}).get(SLOT, 0) > 0]
    if not nodes:
        raise RunError(f"no node of the Ray cluster advertises quantbench resources ({len(alive)} node(s) "
                       f"alive): {START_HINT}")
    task = ray.remote(ray_cells.survey)
    refs = {task.options(num_cpus=0, max_retries=0, runtime_env={"env_vars": TASK_ENV},
                         scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False)).remote(): n
            for n in nodes}
    ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=SURVEY_TIMEOUT_S)
    for ref in ready:
        node = refs[ref]
        try:
            info = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - one node's problem is a warning
            log(f"warning: node {node.name} could not describe itself: {first_line(exc)}")
            continue
        node.host, node.env = info["host"], info["env"]
    for ref in late:
        log(f"warning: node {refs[ref].name} did not answer within {SURVEY_TIMEOUT_S:.0f} s: "
            "cells may still run there; their rows carry its environment")
        ray.cancel(ref, force=True)
    for n in nodes:
        kinds = sorted({k for k in map(n.kind_of, n.offers()) if k and n.has(k)})
        log(f"node {n.name}: {', '.join(kinds) or 'no device kind advertised'}; "
            f"runtimes {', '.join(sorted(n.offers())) or 'none'}")
    return nodes
