"""Render quantbench results (from one or many devices) as HTML, Markdown or CSV."""
from __future__ import annotations

import sys
from pathlib import Path

from .atomic import write_atomic
from .model import Report, ReportError, build_report
from .verdict import DEFAULT_BUDGET_PTS


def render_html(report: Report, out: Path, budget_pts: float = DEFAULT_BUDGET_PTS) -> Path:
    """One self-contained HTML file (plotly imported lazily); ``budget_pts``: the verdict's accuracy budget."""
    try:
        import jinja2  # noqa: F401 - only whether they import
        import plotly  # noqa: F401 - only whether they import
    except ImportError as exc:
        raise ReportError(f"HTML reports need {exc.name}: pip install .[report] / tox -e report") from None
    from .html import render_html as _render

    return _render(report, out, budget_pts)


def render_markdown(report: Report, budget_pts: float = DEFAULT_BUDGET_PTS) -> str:
    from .text import render_markdown as _render

    return _render(report, budget_pts)


def render_csv(report: Report, out: Path | None = None) -> str:
    from .text import render_csv as _render

    return _render(report, out)


PROTECTED_NAMES = ("results.jsonl", "sensitivity.jsonl")  # measured rows: a report never replaces them


def overwrite_problem(paths: list[Path], out: Path | None) -> str:
    """Why writing a report to ``out`` would destroy an input or a results file ("" when it would not)."""
    if out is None:
        return ""
    target = Path(out).resolve()
    for p in paths:
        given = Path(p) / "results.jsonl" if Path(p).is_dir() else Path(p)
        if given.resolve() == target:
            return f"refusing to write the report over its input {out}: choose another -o"
    if target.name in PROTECTED_NAMES:
        return f"refusing to write a report to {out}: files named {target.name} hold measured rows; choose another -o"
    return ""


def main_report(paths: list[Path], out: Path | None, fmt: str = "html", all_generations: bool = False,
                budget_pts: float = DEFAULT_BUDGET_PTS) -> int:
    """Load ``paths`` (results files or output folders), render ``fmt`` to ``out`` (stdout for md/csv without
    ``out``); returns an exit code. Superseded rows are left out unless ``all_generations``. ``budget_pts``:
    the verdict's accuracy budget in top-1 points."""
    problem = overwrite_problem(paths, out)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if fmt == "html" and paths and all(Path(p).name == "sensitivity.jsonl" for p in paths):
        from .sensitivity import write_sensitivity_report  # `quantbench sensitivity` rows: their own page

        target = write_sensitivity_report(paths, out or Path("sensitivity.html"))
        print(f"report: {target}", file=sys.stderr)
        return 0
    try:
        report = build_report(paths, all_generations=all_generations)
    except ReportError as exc:
        for w in exc.warnings:
            print(f"warning: {w}", file=sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if fmt == "html":
        try:
            target = render_html(report, out or Path("report.html"), budget_pts)
        except (ReportError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"report: {target} ({target.stat().st_size / 1e6:.1f} MB, {len(report.rows)} rows)", file=sys.stderr)
    elif fmt in ("md", "csv"):
        text = render_markdown(report, budget_pts) if fmt == "md" else render_csv(report)
        if not out:
            sys.stdout.write(text)
            return 0
        try:
            write_atomic(Path(out), text)
        except OSError as exc:
            print(f"error: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    else:
        print(f"error: unknown report format '{fmt}' (html, md, csv)", file=sys.stderr)
        return 2
    return 0


__all__ = ["Report", "ReportError", "build_report", "main_report", "render_csv", "render_html", "render_markdown",
           "write_atomic"]
