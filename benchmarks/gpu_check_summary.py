"""One screen from a GPU check's results.jsonl files: per runtime, what ran and how it was timed.

For each row: runtime label, variant, batch, status, the clock (``cuda-events`` or a host-timed
compute), h2d / compute / d2h / e2e p50 in ms, and what really ran (exec precision, providers).
For ``ort-cuda`` cells measured with both clocks (``clock = ["auto", "host"]``) it prints the
event-vs-host compute difference: the host clock adds the launch, the wait and Python's overhead,
so a difference near zero with CUDA graphs says the run already waited for the GPU itself.

    python benchmarks/gpu_check_summary.py OUT/cu12/results.jsonl OUT/cu13/results.jsonl
"""
from __future__ import annotations

import sys
from pathlib import Path

from quantbench.common.row_file import read_rows
from quantbench.common.row_format import fmt


def _ms(value: object) -> str:
    return fmt(value, "{:.3f}")


def _rows(paths: list[Path]) -> list[dict]:
    rows = []
    for path in paths:
        if not path.is_file():
            print(f"{path}: missing (that environment did not run)")
            continue
        for row in read_rows(path, latest_per_cell=False, check_types=True).rows:  # every line, retried cells too
            row["_env"] = path.parent.name
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    rows = _rows(paths)
    if not rows:
        print("no rows")
        return 1
    print(f"{'env':6} {'runtime':40} {'variant':16} {'b':>3} {'status':7} {'clock':42} "
          f"{'h2d':>7} {'compute':>8} {'d2h':>7} {'e2e':>8}  ran as")
    for r in sorted(rows, key=lambda r: (r["_env"], str(r.get("runtime_label") or r.get("runtime")),
                                         str(r.get("variant")), r.get("batch") or 0)):
        settings = r.get("runtime_settings") or {}
        ran = r.get("exec_precision") or "?"
        providers = settings.get("providers")
        if providers:
            ran += " on " + ",".join(p.replace("ExecutionProvider", "") for p in providers)
        status = r.get("status", "?")
        print(f"{r['_env']:6} {str(r.get('runtime_label') or r.get('runtime'))[:40]:40} "
              f"{str(r.get('variant'))[:16]:16} {r.get('batch') or 0:>3} {status[:7]:7} "
              f"{str(r.get('clock') or '—')[:42]:42} {_ms(r.get('h2d_p50_ms')):>7} "
              f"{_ms(r.get('compute_p50_ms')):>8} {_ms(r.get('d2h_p50_ms')):>7} {_ms(r.get('e2e_p50_ms')):>8}  {ran}")
        if status != "ok" and r.get("error"):
            print(f"       error: {str(r['error'])[:150]}")
    print()
    _clock_differences(rows)
    return 0


def _clock_differences(rows: list[dict]) -> None:
    """ort-cuda cells timed with events and with the host clock, same variant/batch/graph setting."""
    pairs: dict[tuple, dict[str, float]] = {}
    for r in rows:
        settings = r.get("runtime_settings") or {}
        if r.get("runtime") != "ort-cuda" or r.get("status") != "ok" or r.get("compute_p50_ms") is None:
            continue
        key = (r["_env"], r.get("variant"), r.get("batch"), bool(settings.get("cuda_graph")))
        clock = "host" if str(r.get("clock", "")).startswith("host") else str(r.get("clock"))
        pairs.setdefault(key, {})[clock] = r["compute_p50_ms"]
    printed = False
    for (env, variant, batch, graph), clocks in sorted(pairs.items(), key=str):
        host = clocks.pop("host", None)
        for clock, value in clocks.items():
            if host is None:
                continue
            if not printed:
                print("ort-cuda compute p50, event clock vs host clock (host - events):")
                printed = True
            print(f"  {env:6} {str(variant):16} b={batch:<3} cuda_graph={str(graph):5} {clock:42} "
                  f"{value:.3f} ms vs host {host:.3f} ms: {host - value:+.3f} ms")
    if not printed:
        print("no ort-cuda cell measured with both clocks")


if __name__ == "__main__":
    sys.exit(main())
