"""The results table printed at the end of ``quantbench run``."""
from __future__ import annotations

from typing import Any


def _key(row: dict[str, Any]) -> tuple:
    return (row.get("model"), row.get("runtime_label") or row.get("runtime"), row.get("device"), row.get("batch"))


def fp32_baselines(rows: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """The fp32 row of each (model, runtime label, device, batch), for speedups and deltas."""
    return {_key(r): r for r in rows if r.get("status") == "ok" and r.get("precision") == "fp32"
            and r.get("variant_settings", {}).get("builder") is None}


def summary_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One display dict per ok row: accuracy, Δ vs fp32, latency, I/O, size, speedup, audit."""
    base = fp32_baselines(rows)
    out = []
    for r in rows:
        if r.get("status") != "ok":
            continue
        ref = base.get(_key(r))
        p50 = r.get("compute_p50_ms")
        speedup = r.get("speedup_interleaved")
        if speedup is None and ref and p50 and ref.get("compute_p50_ms"):
            speedup = ref["compute_p50_ms"] / p50
        top1 = r.get("top1")
        delta = (top1 - ref["top1"]) * 100 if ref and top1 is not None and ref.get("top1") is not None else None
        out.append({
            "model": r.get("model"), "variant": r.get("variant"), "runtime": r.get("runtime_label") or r.get("runtime"),
            "device": r.get("device"), "batch": r.get("batch"),
            "top1": top1, "delta_pts": delta, "agreement": r.get("agreement_top1"),
            "p50": p50, "p99": r.get("compute_p99_ms"), "io_p50": r.get("io_p50_ms"),
            "size_kb": (r.get("size_bytes") or 0) / 1024 if r.get("size_bytes") else None,
            "speedup": speedup, "ran_as": r.get("exec_precision"), "int8_share": r.get("int8_op_share"),
            "warning": r.get("audit_warning") or "", "identical_to": r.get("identical_to") or "",
        })
    return out


def _fmt(v: Any, spec: str, suffix: str = "") -> str:
    return "—" if v is None else f"{v:{spec}}{suffix}"


def render_console(rows: list[dict[str, Any]], console: Any) -> None:
    """Print the comparison table with rich."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="quantbench results (compute latency; speedup vs the same runtime's FP32, "
                        "timed alternately with it in one process)", show_lines=False)
    for col, just in (("model", "left"), ("variant", "left"), ("runtime", "left"), ("dev", "left"), ("batch", "right"),
                      ("top-1", "right"), ("Δ pts", "right"), ("agree", "right"), ("p50 ms", "right"),
                      ("p99 ms", "right"), ("I/O p50 ms", "right"), ("size kB", "right"), ("speedup", "right"),
                      ("ran as", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for s in sorted(summary_rows(rows), key=lambda s: (s["model"], s["device"], s["runtime"], s["batch"], s["variant"])):
        ran = s["ran_as"] or "?"
        if s["int8_share"] is not None and s["ran_as"] in ("int8", "mixed"):
            ran += f" ({s['int8_share']:.0%} int8)"
        if s["warning"]:
            ran = f"[yellow]{ran} ⚠[/yellow]"
        variant = escape(str(s["variant"])) + (f" [dim](= {escape(s['identical_to'])})[/dim]" if s["identical_to"] else "")
        table.add_row(
            escape(str(s["model"])), variant, escape(str(s["runtime"])), escape(str(s["device"])), str(s["batch"]),
            _fmt(s["top1"] and s["top1"] * 100, ".2f", "%"), _fmt(s["delta_pts"], "+.2f"),
            _fmt(s["agreement"] and s["agreement"] * 100, ".1f", "%"), _fmt(s["p50"], ".3f"), _fmt(s["p99"], ".3f"),
            _fmt(s["io_p50"], ".3f"), _fmt(s["size_kb"], ".0f"), _fmt(s["speedup"], ".2f", "×"), ran)
    console.print(table)
