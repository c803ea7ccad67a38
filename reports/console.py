"""The results table printed at the end of ``quantbench run``, and what a row's fields mean on screen.

The helpers here (``is_host_device``, ``transfer_ms``, ``timing_flag``, ``speedup_text``) are shared with
``quantbench.reports`` so that the console, HTML, Markdown and CSV say the same thing about a row.
"""
from __future__ import annotations

from typing import Any

from quantbench.common.row_format import MISSING, NA, fmt
from quantbench.common.row_keys import device_key, fp32_references, reference_of
from quantbench.common.row_keys import is_host_device as _host_device
from quantbench.common.speed_checks import contradiction, separate_ratio, separate_ratio_ci
from quantbench.reports.verdict import (
    ci_half_pts,
    delta_significant,
    delta_text,
    resolve_note,
    signed,
)

KB = 1000  # bytes in the "size kB" column, as in the build log and the reports (MB = 1e6 bytes)
TIMING_SETTINGS_KEYS = ("measure_settings", "timing_settings", "measure")


def is_host_device(row: dict[str, Any]) -> bool:
    """True when the cell ran on the host CPU, where host→device and device→host copies do not exist."""
    return _host_device(str(row.get("device") or ""))


def transfer_ms(row: dict[str, Any], phase: str, stat: str = "p50") -> float | str | None:
    """``{phase}_{stat}_ms`` for h2d/d2h: the number, ``NA`` where no copy exists, or None when not measured.

    No copy exists when the row says ``host_memory`` (schema 2), or, for rows that do not say, on a CPU
    device: schema-1 rows timed a no-op there, which is not shown as a copy either.
    """
    value = row.get(f"{phase}_{stat}_ms")
    host = row.get("host_memory")
    if host is True or (host is None and is_host_device(row)
                        and (value is None or (row.get("schema_version") or 0) < 2)):
        return NA
    return value


def _min_iters(row: dict[str, Any]) -> Any:
    if row.get("min_iters") is not None:
        return row["min_iters"]
    for key in TIMING_SETTINGS_KEYS:
        settings = row.get(key)
        if isinstance(settings, dict) and settings.get("min_iters") is not None:
            return settings["min_iters"]
    return None


NOISY_NOTE = ("timing noisy: other processes took more than run.noisy_cpu_frac of a core while it was timed "
              "(timing_noisy_reason); its times and speedup may be off")
DISAGREE_NOTE = ("p50 disagrees with the interleaved speedup (FP32 p50 / this p50 lies outside the speedup's 95% "
                 "interval, beyond the p50s' own intervals: the load changed between separately timed phases); "
                 "compare speed by the speedup column")


def _not_valid(row: dict[str, Any]) -> str:
    if row.get("timing_valid") is not False:
        return ""
    reason = row.get("stop_reason") or "an unknown limit"
    n, want = row.get("iterations"), _min_iters(row)
    if n is not None and want is not None:
        return f"timing not valid: stopped at {reason} after {n} of {want} iterations"
    if n is not None:
        return f"timing not valid: stopped at {reason} after {n} iterations"
    return f"timing not valid: stopped at {reason}"


def timing_flag(row: dict[str, Any], ref: dict[str, Any] | None = None) -> str:
    """"" when the timing can be trusted (or the row predates the checks), else why not, in one line.

    Not valid (e.g. "timing not valid: stopped at max_time after 7 of 100 iterations"); noisy (other
    processes were busy while it was timed, :data:`NOISY_NOTE`); or its p50 contradicts its interleaved
    speedup (:data:`DISAGREE_NOTE`): its own check against the interleave's FP32 blocks, or, given
    ``ref`` (the FP32 row it is compared with), the two rows' separately timed p50s. Texts are shared
    between rows so that tables number each once; the row's ``timing_noisy_reason`` has its figures.
    """
    parts = [_not_valid(row)]
    reason = str(row.get("timing_noisy_reason") or "")
    if row.get("timing_noisy") is True and ("other processes" in reason or "stole" in reason or not reason):
        parts.append(NOISY_NOTE)
    disagrees = row.get("timing_noisy") is True and "separately timed" in reason
    if ref is not None and ref is not row:
        ratio = separate_ratio(ref.get("compute_p50_ms"), row.get("compute_p50_ms"))
        ratio_ci = separate_ratio_ci(ref.get("compute_p50_ci95"), row.get("compute_p50_ci95"))
        disagrees = disagrees or bool(contradiction(ratio, row.get("speedup_interleaved_ci95"), ratio_ci))
    if disagrees:
        parts.append(DISAGREE_NOTE)
    return "; ".join(p for p in parts if p)


def speedup_text(row: dict[str, Any], value: float | None, spec: str = ".2f") -> str:
    """The speedup with its 95% interval, ``1.38× [1.26–1.63]``; the bare value where no interval was measured."""
    if value is None:
        return MISSING
    ci = row.get("speedup_interleaved_ci95")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci):
        return f"{value:{spec}}× [{ci[0]:{spec}}–{ci[1]:{spec}}]"
    return f"{value:{spec}}×"


def speedup_of(row: dict[str, Any], is_reference: bool = False) -> float | None:
    """The interleaved speedup over FP32 (the only estimator shown); 1.0 for the FP32 reference itself."""
    if is_reference:
        return 1.0
    value = row.get("speedup_interleaved")
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def missing_note(row: dict[str, Any], key: str) -> str:
    """Why a shown value is missing: ``speedup_error`` for the speedup, ``accuracy_note`` for top-1."""
    if key == "speedup" and speedup_of(row) is None:
        return str(row.get("speedup_error") or "")
    if key == "top1" and row.get("top1") is None:
        return str(row.get("accuracy_note") or "")
    return ""


def _device(row: dict[str, Any]) -> Any:
    """The device, with the fleet target it ran on (``cpu @ gpu-H100``) for rows of a fleet sweep."""
    target = (row.get("fleet") or {}).get("target")
    return f"{row.get('device')} @ {target}" if target else row.get("device")


def fp32_baselines(rows: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """The FP32 reference rows, for deltas and the "ref" mark (:func:`quantbench.common.row_keys.fp32_references`:
    the same rule as the reports)."""
    return fp32_references(rows)


def against_reference(row: dict[str, Any], ref: dict[str, Any] | None) -> dict[str, Any]:
    """What every results table shows of ``row`` relative to its FP32 reference ``ref`` (from
    :func:`quantbench.common.row_keys.fp32_references`; None when it has none), so that the console and the
    reports say the same: ``ref`` (it is the reference), ``delta_pts`` (top-1 minus the reference's, in points;
    0 on the reference itself), ``speedup`` (interleaved; 1.0 on the reference), ``timing`` (:func:`timing_flag`)
    and ``notes`` (why top-1 or the speedup is missing; the reference has no speedup note)."""
    is_ref = ref is row
    top1 = row.get("top1")
    delta = (top1 - ref["top1"]) * 100 if ref and top1 is not None and ref.get("top1") is not None else None
    return {"ref": is_ref, "delta_pts": delta, "speedup": speedup_of(row, is_ref), "timing": timing_flag(row, ref),
            "notes": {"top1": missing_note(row, "top1"), "speedup": "" if is_ref else missing_note(row, "speedup")}}


def ran_as_text(row: dict[str, Any]) -> str:
    """What ran, as the runtime reports it: ``int8 (93% int8)``; "?" when it did not say."""
    ran = row.get("exec_precision") or "?"
    share = row.get("int8_op_share")
    if share is not None and ran in ("int8", "mixed"):
        ran += f" ({share:.0%} int8)"
    return ran


def summary_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One display dict per ok row: accuracy, Δ vs fp32, latency, I/O, copies, size, speedup, audit, notes."""
    base = fp32_baselines(rows)
    out = []
    for r in rows:
        if r.get("status") != "ok":
            continue
        vs = against_reference(r, reference_of(r, base))
        out.append({
            "cell_id": r.get("cell_id"),
            "model": r.get("model"), "variant": r.get("variant"), "runtime": r.get("runtime_label") or r.get("runtime"),
            "device": _device(r), "batch": r.get("batch"),
            "top1": r.get("top1"), "delta_pts": vs["delta_pts"], "agreement": r.get("agreement_top1"),
            "p50": r.get("compute_p50_ms"), "p99": r.get("compute_p99_ms"), "io_p50": r.get("io_p50_ms"),
            "h2d_p50": transfer_ms(r, "h2d"), "d2h_p50": transfer_ms(r, "d2h"),
            "size_kb": r["size_bytes"] / KB if r.get("size_bytes") else None,
            "speedup": vs["speedup"], "ref": vs["ref"],
            "ran_as": r.get("exec_precision"), "int8_share": r.get("int8_op_share"),
            "warning": r.get("audit_warning") or "", "identical_to": r.get("identical_to") or "",
            "timing": vs["timing"], "speedup_note": vs["notes"]["speedup"], "top1_note": vs["notes"]["top1"],
            "top1_half": ci_half_pts(r, "top1_ci95"), "delta_text": delta_text(r), "row": r,
            "delta_significant": delta_significant(r),
        })
    return out


def delta_cell(s: dict[str, Any]) -> str:
    """The console's Δ cell: "ref", the paired ``−0.51 ±0.92`` (greyed with ≈ when not significant), or the plain
    difference of top-1 with the same runtime's FP32 for rows measured before the paired comparison."""
    from rich.markup import escape

    if s["ref"]:
        return "ref"
    if s["delta_text"] is not None:
        text = escape(s["delta_text"])
        return f"[dim]{text}[/dim]" if s["delta_significant"] is False else text
    return signed(s["delta_pts"]) if s["delta_pts"] is not None else MISSING


def _copies(h2d: Any, d2h: Any) -> str:
    if h2d == NA and d2h == NA:
        return NA
    return f"{fmt(h2d, '{:.3f}')} / {fmt(d2h, '{:.3f}')}"


class Footnotes:
    """Numbered notes under a table: the same text gets the same number."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def mark(self, text: str) -> str:
        """" [n]" for ``text`` ("" for no text)."""
        if not text:
            return ""
        if text not in self.texts:
            self.texts.append(text)
        return f" [{self.texts.index(text) + 1}]"


def _order(s: dict[str, Any]) -> tuple:
    return tuple(s[k] if isinstance(s[k], (int, float)) else str(s[k])
                 for k in ("model", "device", "runtime", "batch", "variant"))


def render_console(rows: list[dict[str, Any]], console: Any, older: list[dict[str, Any]] | None = None) -> None:
    """Print the comparison table with rich, then its footnotes (missing speedups and top-1, invalid timing)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="quantbench results (compute latency per batch; speedup vs the same runtime's FP32, "
                        "timed alternately with it in one process)", show_lines=False)
    for col, just in (("model", "left"), ("variant", "left"), ("runtime", "left"), ("dev", "left"), ("batch", "right"),
                      ("top-1", "right"), ("Δ pts", "right"), ("agree", "right"), ("p50 ms", "right"),
                      ("p99 ms", "right"), ("I/O p50 ms", "right"), ("h2d / d2h p50 ms", "right"),
                      ("size kB", "right"), ("speedup", "right"), ("ran as", "left")):
        # fold: a long model, variant or runtime name wraps inside its cell, never cut to "int8[calib…"
        table.add_column(col, justify=just, overflow="fold")  # type: ignore[arg-type]
    notes = Footnotes()
    older_cells = {r.get("cell_id") for r in older or []}
    summaries = sorted(summary_rows(rows), key=_order)
    for s in summaries:
        ran = escape(ran_as_text(s["row"]))
        if s["warning"]:
            ran = f"[yellow]{ran} ⚠[/yellow]"
        same = f" [dim](= {escape(s['identical_to'])})[/dim]" if s["identical_to"] else ""
        variant = escape(str(s["variant"])) + same
        if s["cell_id"] in older_cells:  # --all-generations: a row of an earlier configuration
            variant += " [dim](older generation)[/dim]"
        top1 = fmt(s["top1"], "{:.2f}", "%", scale=100) + notes.mark(s["top1_note"])
        if s["top1"] is not None and s["top1_half"] is not None:
            top1 += f" ±{s['top1_half']:.1f}"
        p50 = fmt(s["p50"], "{:.3f}")
        if s["timing"]:  # notes are numbered in column order
            p50 = f"[yellow]{p50} ⚠{notes.mark(s['timing'])}[/yellow]"
        speedup = "ref" if s["ref"] else speedup_text(s["row"], s["speedup"]) + notes.mark(s["speedup_note"])
        table.add_row(
            escape(str(s["model"])), variant, escape(str(s["runtime"])), escape(str(s["device"])), str(s["batch"]),
            escape(top1), delta_cell(s),
            fmt(s["agreement"], "{:.1f}", "%", scale=100), p50,
            fmt(s["p99"], "{:.3f}"), fmt(s["io_p50"], "{:.3f}"), _copies(s["h2d_p50"], s["d2h_p50"]),
            fmt(s["size_kb"], "{:.0f}"), escape(speedup), ran)
    console.print(table)
    for i, text in enumerate(notes.texts, 1):
        console.print(f"  \\[{i}] {escape(text)}")
    if any(s["delta_text"] is not None for s in summaries):
        console.print("  Δ pts: top-1 minus FP32's on the same images ± half its 95% interval (paired); "
                      "≈ and grey: not significant (exact McNemar p ≥ 0.05)", markup=False)
    note = resolve_note([s["row"] for s in summaries if not s["ref"]])
    if note:
        console.print(f"  {note}.", markup=False)


MAX_NOISY_LINES = 5  # noisy rows named one by one in the CLI's warnings before the rest are counted


def noisy_warnings(rows: list[dict[str, Any]]) -> list[str]:
    """The CLI's warnings about ok rows timed under load (``timing_noisy``): one line each, up to
    :data:`MAX_NOISY_LINES`, then a count, then what to do. [] when no row is noisy."""
    noisy = [r for r in rows if r.get("status") == "ok" and r.get("timing_noisy") is True]
    lines = [f"{r.get('model')}/{r.get('variant')} on {r.get('runtime_label') or r.get('runtime')} "
             f"({_device(r)}, batch {r.get('batch')}): timing noisy: "
             f"{r.get('timing_noisy_reason') or 'no reason recorded'}"
             for r in noisy[:MAX_NOISY_LINES]]
    if len(noisy) > MAX_NOISY_LINES:
        lines.append(f"{len(noisy) - MAX_NOISY_LINES} more row(s) timed noisily (⚠ in the table)")
    if noisy:
        lines.append(f"{len(noisy)} of {sum(r.get('status') == 'ok' for r in rows)} row(s) were timed while other "
                     "processes were busy: their times and speedups may be off and no verdict rests on them; "
                     "re-run on a quiet machine (run.quiet_wait_s waits for one before each timed phase)")
    return lines


def render_verdict(rows: list[dict[str, Any]], console: Any, budget_pts: float) -> None:
    """The Verdict block at the end of ``quantbench run``: one decision per model × device × batch."""
    from quantbench.reports.verdict import verdict_lines, verdicts

    found = verdicts(rows, device_key, budget_pts)  # one machine per verdict, as the reports decide
    if not found:
        return
    console.print("[bold]Verdict[/bold] (fastest variant × runtime whose top-1 loss is not significantly larger "
                  "than the budget; 95% intervals)")
    for v in found:
        for line in verdict_lines(v):
            console.print(line, markup=False, highlight=False)
