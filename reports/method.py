"""The report header's account of how the numbers in it were measured."""
from __future__ import annotations

from typing import Any

from quantbench.common.row_format import is_number
from quantbench.reports.console import TIMING_SETTINGS_KEYS

CLOCKS = {"host-perf_counter_ns": "the host's perf_counter_ns", "host": "the host's perf_counter_ns",
          "cuda-events": "CUDA events on the GPU"}


def _settings(rows: list[dict[str, Any]]) -> dict[str, set]:
    """Distinct timing settings recorded in the rows (min_iters, min_time_s, …), if the rows carry them."""
    seen: dict[str, set] = {}
    for r in rows:
        for key in TIMING_SETTINGS_KEYS:
            settings = r.get(key)
            if isinstance(settings, dict):
                for k, v in settings.items():
                    if isinstance(v, (int, float, str)) and not isinstance(v, bool):
                        seen.setdefault(k, set()).add(v)
    return seen


def timing_method(rows: list[dict[str, Any]]) -> list[str]:
    """Plain-text sentences: the timing procedure, the clocks and iteration counts of these rows, the flags."""
    ok = [r for r in rows if r.get("status") == "ok"]
    lines = [
        ("Each cell loads the model, runs a first inference and untimed warm-up iterations, then times "
         "iterations until both a minimum count (min_iters) and a minimum duration (min_time_s) are reached. "
         "Every iteration times host→device, compute and device→host separately; latencies are per batch. "
         "I/O (getting one batch from the dataset) is timed in the data path, outside that loop. "
         "h2d/d2h read \"n/a\" where the runtime keeps inputs and outputs in host memory (CPU devices), so "
         "no copy exists; a percentile that needs more iterations than were taken reads \"—\"."),
        ("A cell that stopped at max_time_s or max_iters before reaching min_iters is flagged ⚠ "
         "(timing not valid)."),
        ("Speedup vs FP32 is measured by timing the variant and the same runtime's FP32 model alternately in one "
         "process (interleaved A-B-B-A rounds, median of the per-round ratios), with a 95% interval for that median "
         "from order statistics (exact binomial ranks, no distribution assumed); rounds are added until the "
         "interval's half-width is within speedup_rel_ci of the median or a cap (interleave_max_rounds, "
         "interleave_max_s) is hit. When that measurement is missing the column reads \"—\" and a note says why. "
         "\"p50 % of FP32\" is 100 / that speedup, so it cannot contradict it."),
        ("During the timed phases each cell records how much CPU other processes used (from /proc/stat, less its "
         "own CPU time) and the VM's steal time; a cell where either exceeds noisy_cpu_frac of a core, or whose "
         "separately timed p50s imply a ratio outside its speedup interval (beyond their own intervals), is "
         "flagged ⚠ (timing noisy) and shaded: "
         "its times may be off and no verdict rests on it."),
    ]
    clocks = sorted({CLOCKS.get(str(r.get("clock")), str(r.get("clock"))) for r in ok if r.get("clock")})
    iters = [r["iterations"] for r in ok if is_number(r.get("iterations"))]
    facts = []
    if clocks:
        facts.append("clock: " + ", ".join(clocks))
    if iters:
        low, high = min(iters), max(iters)
        facts.append(f"timed iterations per cell: {low}" + (f"–{high}" if high != low else ""))
    settings = _settings(ok)
    for key in ("warmup_iters", "min_iters", "min_time_s", "max_iters", "max_time_s", "interleave_rounds",
                "interleave_max_rounds", "speedup_rel_ci", "noisy_cpu_frac"):
        if key in settings:
            facts.append(f"{key} " + "/".join(str(v) for v in sorted(settings[key], key=str)))
    scopes = sorted({str(r["io_scope"]) for r in ok if r.get("io_scope")})
    if scopes:
        facts.append("I/O covers " + " / ".join(scopes))
    invalid = sum(1 for r in ok if r.get("timing_valid") is False)
    if invalid:
        facts.append(f"{invalid} cell(s) with timing not valid")
    noisy = sum(1 for r in ok if r.get("timing_noisy") is True)
    if noisy:
        facts.append(f"{noisy} cell(s) timed while other processes were busy (timing noisy)")
    if facts:
        lines.append("In these results: " + "; ".join(facts) + ".")
    return lines
