"""Does a busy machine change what quantbench concludes? The default sweep, quiet and beside a CPU hog.

Runs the embedded default sweep twice into OUT/quiet and OUT/hog (the second with one busy-looping
process pinned to one core, started before and stopped after the sweep) and prints:

(a) whether every *significant* conclusion is the same in both runs: the verdicts that were decided
    (a pick faster beyond the 95% intervals), and every speed-up comparison whose intervals do not
    overlap (two variants of one runtime, or a variant against its FP32 reference, which is exactly 1);
    a conclusion of the hog run counts only from rows it did not flag as noisy (flagged rows are
    claims quantbench itself withdraws);
(b) the share of the hog run's rows flagged ``timing_noisy``;
(c) among the hog run's rows *not* flagged, how often the speed-up lies inside the quiet run's 95%
    interval for the same cell (an unflagged row must be trustworthy).

Goals (issue 15): (a) identical, (b) >= 90 %, (c) >= 90 %. "Quiet" means no hog of ours: on a shared
machine other processes may still run, and the quiet run's own interference is printed so you can
tell. Usage::

    python benchmarks/noise_robustness.py [--output DIR] [--runtimes ort-cpu,openvino] [--batch-sizes 1,32]
                                          [--eval-samples N] [--json FILE]
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# One core's worth of busy loop, pinned to the last core where the OS allows it; it ends itself after
# ``limit`` seconds should this script die before stopping it.
HOG = """
import os, sys, time
try:
    os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
except (AttributeError, OSError):
    pass
end = time.time() + float(sys.argv[1])
while time.time() < end:
    pass
"""


def run_default_sweep(out: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The embedded default sweep (with the given overrides) into ``out``; its current rows."""
    from quantbench.harness.config import load_config
    from quantbench.harness.results.store import read_current
    from quantbench.harness.sweep.runner import run_sweep

    cfg = load_config(None)
    cfg.run.output = str(out)
    cfg.run.report = False
    if args.runtimes:
        cfg.run.runtimes = args.runtimes.split(",")
    if args.batch_sizes:
        cfg.run.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.eval_samples:
        cfg.run.eval_samples = args.eval_samples
    cfg.validate()
    run_sweep(cfg, out,
              log=lambda msg: print(f"    {msg}", flush=True) if msg.startswith(("warning", "error")) else None,
              on_row=lambda r: print(f"    {r['status']:7} {r['variant']} on {r.get('runtime_label')} "
                                     f"batch {r.get('batch')}", flush=True))
    return [r for r in read_current(out).rows if r.get("status") == "ok"]


def _key(r: dict[str, Any]) -> tuple:
    return (r.get("model"), r.get("runtime_label") or r.get("runtime"), r.get("device"), r.get("batch"))


def _ci(r: dict[str, Any]) -> tuple[float, float] | None:
    from quantbench.reports.verdict import is_reference, speedup_interval

    return speedup_interval(r, is_reference(r))


def speed_claims(rows: list[dict[str, Any]], trusted_only: bool) -> dict[tuple, str]:
    """{(group, variant a, variant b): ">" or "<"} for every pair of one runtime whose speed-up intervals do not
    overlap (FP32 = exactly 1); with ``trusted_only`` rows flagged noisy make no claim."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(_key(r), []).append(r)
    claims = {}
    for key, rs in groups.items():
        for a, b in itertools.combinations(sorted(rs, key=lambda r: str(r.get("variant"))), 2):
            if trusted_only and (a.get("timing_noisy") or b.get("timing_noisy")):
                continue
            ia, ib = _ci(a), _ci(b)
            if ia is None or ib is None:
                continue
            if ia[0] > ib[1]:
                claims[(key, a["variant"], b["variant"])] = ">"
            elif ia[1] < ib[0]:
                claims[(key, a["variant"], b["variant"])] = "<"
    return claims


def verdict_picks(rows: list[dict[str, Any]]) -> dict[tuple, str]:
    """{(model, device, batch): "variant on runtime"} for every decided verdict."""
    from quantbench.reports.verdict import row_name, verdicts

    return {(v.model, v.device, v.batch): row_name(v.pick) for v in verdicts(rows, lambda r: str(r.get("device")))
            if v.status == "decided" and v.pick is not None}


def _share(n: int, d: int) -> str:
    return f"{n}/{d} ({100 * n / d:.0f}%)" if d else "0/0 (—)"


def _inside(row: dict[str, Any], quiet: dict[str, Any] | None) -> bool | None:
    if quiet is None or row.get("speedup_interleaved") is None or _ci(quiet) is None:
        return None
    lo, hi = _ci(quiet)  # type: ignore[misc]
    return lo <= row["speedup_interleaved"] <= hi


def compare(quiet: list[dict[str, Any]], hog: list[dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """The report lines and the figures behind them."""
    lines: list[str] = []
    qv, hv = verdict_picks(quiet), verdict_picks(hog)
    both = sorted(set(qv) & set(hv), key=str)
    differ = [k for k in both if qv[k] != hv[k]]
    qc, hc = speed_claims(quiet, trusted_only=False), speed_claims(hog, trusted_only=True)
    shared = set(qc) & set(hc)
    opposite = sorted((k for k in shared if qc[k] != hc[k]), key=str)
    only_hog = sorted((k for k in hc if k not in qc), key=str)
    same = not differ and not opposite
    lines.append(f"(a) significant conclusions the same in both runs: {'YES' if same else 'NO'}")
    lines.append(f"    verdicts decided in both: {len(both)}, same pick: {len(both) - len(differ)}; "
                 f"decided only quiet: {len(set(qv) - set(hv))}, only hog: {len(set(hv) - set(qv))}")
    for k in differ:
        lines.append(f"      differs {k}: quiet {qv[k]} / hog {hv[k]}")
    lines.append(f"    speed-up comparisons beyond the intervals: quiet {len(qc)}, hog (unflagged rows) {len(hc)}, "
                 f"in both {len(shared)}, opposite direction {len(opposite)}; hog-only claims {len(only_hog)}")
    for k in opposite:
        lines.append(f"      opposite {k}: quiet {qc[k]} / hog {hc[k]}")
    flagged = [r for r in hog if r.get("timing_noisy") is True]
    lines.append(f"(b) hog-run rows flagged timing_noisy: {_share(len(flagged), len(hog))}")
    by_cell = {r.get("cell_id"): r for r in quiet}
    inside, checked, misses = 0, 0, []
    for r in hog:
        q = by_cell.get(r.get("cell_id"))
        if r.get("timing_noisy") or q is None or r.get("speedup_interleaved") is None or _ci(q) is None:
            continue
        checked += 1
        lo, hi = _ci(q)  # type: ignore[misc]
        if lo <= r["speedup_interleaved"] <= hi:
            inside += 1
        else:
            misses.append(f"      {r['variant']} on {r.get('runtime_label')} batch {r.get('batch')}: hog "
                          f"{r['speedup_interleaved']:.2f}× vs quiet [{lo:.2f}–{hi:.2f}]")
    lines.append(f"(c) unflagged hog-run speed-ups inside the quiet run's 95% interval: {_share(inside, checked)}")
    lines.extend(misses)
    # What the flags protect from: the same figures with every hog-run row trusted.
    all_inside = [_inside(r, by_cell.get(r.get("cell_id"))) for r in hog]
    all_inside = [v for v in all_inside if v is not None]
    every = speed_claims(hog, trusted_only=False)
    flipped = [k for k in set(qc) & set(every) if qc[k] != every[k]]
    lines.append(f"    ignoring the flags: hog-run speed-ups inside the quiet interval "
                 f"{_share(sum(all_inside), len(all_inside))}; "
                 f"comparisons beyond the intervals {len(every)}, opposite to the quiet run {len(flipped)}")
    for name, rows in (("quiet", quiet), ("hog", hog)):
        other = [r["interference"]["other_cpu_frac"] for r in rows
                 if isinstance(r.get("interference"), dict) and r["interference"].get("other_cpu_frac") is not None]
        noisy = sum(1 for r in rows if r.get("timing_noisy") is True)
        if other:
            lines.append(f"    {name} run: {len(rows)} ok rows, other processes' CPU while timed: median "
                         f"{statistics.median(other):.2f}, max {max(other):.2f} cores; {noisy} flagged noisy")
    figures = {"same": same, "verdicts_both": len(both), "verdicts_differ": len(differ), "claims_quiet": len(qc),
               "claims_hog": len(hc), "claims_opposite": len(opposite), "flagged": len(flagged), "hog_rows": len(hog),
               "unflagged_inside": inside, "unflagged_checked": checked}
    return lines, figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", default="noise-robustness", help="folder for the two runs (quiet/, hog/)")
    p.add_argument("--runtimes", default="", help="comma-separated runtimes (default: the default sweep's)")
    p.add_argument("--batch-sizes", default="", help="comma-separated batch sizes (default: 1,32)")
    p.add_argument("--eval-samples", type=int, default=0, help="evaluation images (default: the sweep's 10000)")
    p.add_argument("--hog-limit-s", type=float, default=7200.0, help="the hog ends itself after this long")
    p.add_argument("--json", default="", help="also write the figures to this JSON file")
    p.add_argument("--analyse", action="store_true", help="only compare the two runs already in --output")
    args = p.parse_args(argv)
    out = Path(args.output)
    if args.analyse:
        from quantbench.harness.results.store import read_current

        quiet, hog = ([r for r in read_current(out / sub).rows if r.get("status") == "ok"] for sub in ("quiet", "hog"))
        lines, _ = compare(quiet, hog)
        print(f"noise robustness of the default sweep ({len(quiet)} + {len(hog)} ok rows, from {out})")
        print("\n".join(lines))
        return 0
    for sub in ("quiet", "hog"):
        if (out / sub / "results.jsonl").exists():
            print(f"error: {out / sub} already holds results: choose another --output", file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    print("quiet run (no hog of ours; other processes on this machine may still run) …", flush=True)
    quiet = run_default_sweep(out / "quiet", args)
    t1 = time.perf_counter()
    print("hog run (one busy-looping process pinned to one core) …", flush=True)
    hog_proc = subprocess.Popen([sys.executable, "-c", HOG, str(args.hog_limit_s)])
    try:
        hog = run_default_sweep(out / "hog", args)
    finally:
        hog_proc.kill()
        hog_proc.wait(timeout=30)
    t2 = time.perf_counter()
    lines, figures = compare(quiet, hog)
    print(f"\nnoise robustness of the default sweep ({len(quiet)} + {len(hog)} ok rows; quiet run {t1 - t0:.0f} s, "
          f"hog run {t2 - t1:.0f} s)")
    for line in lines:
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
