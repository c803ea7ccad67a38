"""How much of the machine other processes took while a cell was timed, and whether that makes it noisy.

Linux only (``/proc/stat``); elsewhere nothing is measured and the row says so. Method: the machine's
busy CPU time over a window (user + nice + system + irq + softirq jiffies of all cores) minus this
process's own CPU time over the same window (``os.times()``: every thread of the process), divided
by the window's wall time: the CPU other processes used, in units of one core. ``steal`` (time a
hypervisor gave the VM's cores to others) is reported the same way.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from quantbench.common.speed_checks import contradiction, separate_ratio, separate_ratio_ci

PROC_STAT = "/proc/stat"
BUSY_FIELDS = (0, 1, 2, 5, 6)  # user, nice, system, irq, softirq (guest time is already inside user)
STEAL_FIELD = 7


@dataclass(frozen=True)
class CpuSample:
    """One reading: wall clock, the machine's CPU jiffies (None: unreadable), this process's CPU seconds."""

    wall: float
    jiffies: tuple[int, ...] | None
    own_s: float
    load: float | None


def _jiffies() -> tuple[int, ...] | None:
    try:
        with open(PROC_STAT) as fh:
            first = fh.readline().split()
    except OSError:
        return None
    if not first or first[0] != "cpu":
        return None
    values = tuple(int(v) for v in first[1:])
    return values + (0,) * max(0, 8 - len(values))  # old kernels end before steal


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def sample() -> CpuSample:
    """Read the machine's and this process's CPU time now."""
    t = os.times()
    return CpuSample(time.perf_counter(), _jiffies(), t.user + t.system, _load())


def _hz() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100.0


def between(before: CpuSample, after: CpuSample) -> dict[str, Any]:
    """``{other_cpu_frac, steal_frac, load_start, load_end, wall_s}`` over the window ``before``..``after``.

    Fractions are in units of one core (1.0: one core's worth busy all along) and None where
    ``/proc/stat`` could not be read. Jiffies tick at 100 Hz: over a 1 s window a fraction is good to ~0.02.
    """
    wall = after.wall - before.wall
    out: dict[str, Any] = {"other_cpu_frac": None, "steal_frac": None, "load_start": before.load,
                           "load_end": after.load, "wall_s": round(wall, 3)}
    if before.jiffies is None or after.jiffies is None or wall <= 0:
        return out
    hz = _hz()
    # The kernel's field list, not ours to vouch for: a stray field must not fail the cell's measurement.
    delta = [a - b for a, b in zip(after.jiffies, before.jiffies, strict=False)]
    busy_s = sum(delta[i] for i in BUSY_FIELDS) / hz
    own_s = after.own_s - before.own_s
    out["other_cpu_frac"] = round(max(0.0, (busy_s - own_s) / wall), 3)
    out["steal_frac"] = round(max(0.0, delta[STEAL_FIELD] / hz / wall), 3)
    return out


def noisy_reason(interference: dict[str, Any] | None, threshold: float) -> str:
    """One line saying why timing under ``interference`` is not trustworthy, or "" when it is not disturbed."""
    if not interference:
        return ""
    parts = []
    other, steal = interference.get("other_cpu_frac"), interference.get("steal_frac")
    if other is not None and other > threshold:
        parts.append(f"other processes used {other:.2f} of a core while it was timed (threshold {threshold:g})")
    if steal is not None and steal > threshold:
        parts.append(f"the hypervisor stole {steal:.2f} of a core while it was timed (threshold {threshold:g})")
    return "; ".join(parts)


def wait_for_quiet(max_s: float, threshold: float, poll_s: float = 0.5) -> dict[str, Any]:
    """Sleep in ``poll_s`` windows until other processes use at most ``threshold`` of a core (at most ``max_s``).

    Returns ``{"waited_s", "quiet"}``: how long it waited and whether the last window was quiet
    (None when nothing was waited for or ``/proc/stat`` is unreadable).
    """
    start = time.perf_counter()
    if max_s <= 0 or _jiffies() is None:
        return {"waited_s": 0.0, "quiet": None}
    quiet = False
    while True:
        before = sample()
        time.sleep(min(poll_s, max(0.05, max_s - (time.perf_counter() - start))))
        window = between(before, sample())
        quiet = (window["other_cpu_frac"] or 0.0) <= threshold and (window["steal_frac"] or 0.0) <= threshold
        if quiet or time.perf_counter() - start >= max_s:
            break
    return {"waited_s": round(time.perf_counter() - start, 3), "quiet": quiet}


def timing_verdict(part: dict[str, Any], threshold: float) -> dict[str, Any]:
    """``timing_noisy``, ``timing_noisy_reason``, ``speedup_separate`` and ``speedup_separate_ci95`` of timed phases.

    Noisy when other processes (or steal) took more than ``threshold`` of a core, or when this cell's
    own timed-loop p50 against the FP32 blocks of its interleave (``speedup_separate``: the ratio the
    p50 columns would show; ``speedup_separate_ci95`` its range over both medians' 95% intervals)
    does not overlap the interleaved interval. ``timing_noisy`` is None when the interference could
    not be measured and nothing else is wrong.
    """
    interference = part.get("interference") or {}
    sep = separate_ratio(part.get("interleave_fp32_ms"), part.get("compute_p50_ms"))
    sep_ci = separate_ratio_ci(part.get("interleave_fp32_ci95"), part.get("compute_p50_ci95"))
    reasons = [r for r in (noisy_reason(interference, threshold),
                           contradiction(sep, part.get("speedup_interleaved_ci95"), sep_ci)) if r]
    measured = interference.get("other_cpu_frac") is not None
    return {"timing_noisy": bool(reasons) if (reasons or measured) else None,
            "timing_noisy_reason": "; ".join(reasons) if reasons else ("" if measured else "interference not measured "
                                                                      "(no /proc/stat)"),
            "speedup_separate": sep, "speedup_separate_ci95": sep_ci}
