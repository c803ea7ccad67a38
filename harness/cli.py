"""``quantbench``: run sweeps, list devices and runtimes, render reports, export results.

Every expected error (bad config, missing file, unknown runtime …) is printed as one line and
exits non-zero; rows already written are never touched.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED_CELLS, EXIT_USAGE = 0, 1, 2


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during a command, with the one line that says what was kept."""


def _console(stderr: bool = False):
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False, emoji=False)  # a model named pkg:boom: stays text
    if not console.is_terminal:  # pipes and CI logs: don't squeeze the table into 80 columns
        console = Console(stderr=stderr, highlight=False, emoji=False, width=200)
    return console


def _error(msg: str) -> int:
    """Print one ``error:`` line on stderr; the message is text, never markup (``[run]`` stays)."""
    from rich.markup import escape

    _console(stderr=True).print(f"[bold red]error:[/bold red] {escape(msg)}", markup=True, soft_wrap=True)
    return EXIT_USAGE


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (not usage text plus a message)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        _error(f"{message} (see `{self.prog} --help`)")
        sys.exit(EXIT_USAGE)


def _styled(msg: str) -> str:
    """Colour a plain-text library message by its prefix; user/runtime text is escaped, never markup."""
    from rich.markup import escape

    for prefix, style in (("error: ", "red"), ("warning: ", "yellow")):
        if msg.startswith(prefix):
            return f"[{style}]{escape(msg)}[/{style}]"
    return escape(msg)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


class _LogToConsole(logging.Handler):
    """Library records on the ``quantbench`` logger, shown like the ``log`` messages (escaped, coloured)."""

    def __init__(self, emit_line: Any) -> None:
        super().__init__(logging.INFO)
        self.emit_line = emit_line

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.levelno >= logging.ERROR and not msg.startswith("error: "):
            msg = "error: " + msg
        elif record.levelno >= logging.WARNING and not msg.startswith(("warning: ", "error: ")):
            msg = "warning: " + msg
        self.emit_line(msg)


def _flagged_run_keys(names: tuple[str, ...] | None = None) -> list[Any]:
    """The ``[run]`` fields a ``quantbench`` flag overrides (declared with ``flag=``), the sweep's own keys first."""
    from dataclasses import fields

    from quantbench.harness.config import RunConfig
    from quantbench.harness.measure.cell import MeasureSettings

    timing = {f.name for f in fields(MeasureSettings)}
    flagged = [f for f in fields(RunConfig) if "flag" in f.metadata and (names is None or f.name in names)]
    return sorted(flagged, key=lambda f: f.name in timing)


def _add_run_flags(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None) -> None:
    """One flag per flagged ``[run]`` key; its help comes from the key's declaration."""
    import typing

    from quantbench.harness.config import RunConfig
    from quantbench.harness.config.docs import flag_help

    hints = typing.get_type_hints(RunConfig)
    for f in _flagged_run_keys(names):
        flag = f.metadata["flag"]
        kind = hints[f.name] if hints[f.name] in (int, float) else str  # a list: comma-separated, split below
        spelled = ("-o", flag) if f.name == "output" else (flag,)
        parser.add_argument(*spelled, dest=f.name, type=kind, metavar=flag.lstrip("-").upper().replace("-", "_"),
                            help=flag_help(RunConfig, f.name))


def _override_run(cfg: Any, args: argparse.Namespace, given: dict[str, str]) -> None:
    """Set the ``[run]`` keys whose flags were given; ``given`` gains ``{config key: flag}``."""
    from quantbench.harness.config import ConfigError

    for f in _flagged_run_keys():
        value = getattr(args, f.name, None)
        if value is None:
            continue
        flag = f.metadata["flag"]
        if f.name == "batch_sizes":
            try:
                value = [int(b) for b in value.split(",")]
            except ValueError:
                raise ConfigError(f"{flag} must be integers separated by commas, not '{value}'") from None
        elif isinstance(getattr(cfg.run, f.name), list):
            value = _split(value)
        elif f.name == "ray":
            value = value.strip()
        setattr(cfg.run, f.name, value)
        given[f"run.{f.name}"] = flag
    if "run.eval_samples" in given:  # the flag sets every model's count
        for m in cfg.models:
            m.eval_samples = None


def _validate_naming_flags(cfg: Any, given: dict[str, str]) -> None:
    """Check the whole config again; an error about a key a flag set is prefixed with that flag."""
    from quantbench.harness.config import ConfigError

    try:
        cfg.validate()
    except ConfigError as exc:
        for i, key in enumerate(exc.keys):
            if key in given:
                # A rule across keys (max_time_s >= min_time_s) broken by the flag of the other key says how to fix it.
                primary = _flag_of(exc.keys[0]) if i else None
                hint = f" (raise it with {primary})" if primary else ""
                raise ConfigError(f"{given[key]}: {exc}{hint}", keys=exc.keys) from None
        raise


def _flag_of(key: str) -> str | None:
    """The flag that overrides config key ``key`` (``run.max_time_s`` -> ``--max-time``), if any."""
    section, _, name = key.partition(".")
    return next((f.metadata["flag"] for f in _flagged_run_keys() if f.name == name), None) if section == "run" else None


def _apply_overrides(cfg: Any, args: argparse.Namespace) -> None:
    """Apply the command-line overrides, then check the whole config again (errors name the flag)."""
    from quantbench.harness.config import ConfigError, ModelConfig, select_variants, split_names

    given: dict[str, str] = {}  # config key -> the flag that set it
    _override_run(cfg, args, given)
    if args.models is not None:
        cfg.models = [ModelConfig(name=m) for m in _split(args.models)]
        if not cfg.models:
            raise ConfigError("--models is empty: name at least one model")
    if args.variants is not None:
        cfg.variants = select_variants(cfg.variants, split_names(args.variants))
    if args.weights is not None:
        for m in cfg.models:
            m.weights = args.weights
        given["models.weights"] = "--weights"
    for m in cfg.models:  # paths given as flags are relative to where the command runs
        m.resolve_paths(Path.cwd())
    if args.no_report:
        cfg.run.report = False
    _validate_naming_flags(cfg, given)


def cmd_run(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from quantbench.harness.api import write_report
    from quantbench.harness.config import dump_toml, load_config
    from quantbench.harness.results.store import current_rows, read_rows, superseded_note
    from quantbench.harness.sweep.runner import run_sweep
    from quantbench.reports.console import noisy_warnings, render_console, render_verdict

    cfg = load_config(args.config)
    _apply_overrides(cfg, args)
    if args.dump_config:
        sys.stdout.write(dump_toml(cfg))
        return EXIT_OK
    console = _console()
    out = Path(cfg.run.output)
    t0 = time.perf_counter()
    console.print(f"quantbench: sweep from {cfg.source} → {out}/", markup=False)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("cells", total=None)
        ticks = {"n": 0}

        seen_reasons: set[tuple[Any, str, str]] = set()

        def on_row(row: dict[str, Any]) -> None:
            status = row["status"]
            fleet = row.get("fleet") or {}
            where = f" on {fleet.get('host') or fleet.get('target')}" if fleet.get("target") else ""
            what = escape(f"{row['model']}/{row['variant']} on {row.get('runtime_label') or row['runtime']} "
                          f"({row['device']}, batch {row['batch']}){where}")
            if status == "ok":
                p50 = row.get("compute_p50_ms")
                progress.console.print(f"  [green]ok[/green]      {what}: p50 "
                                       + (f"{p50:.3f} ms" if isinstance(p50, (int, float)) else "—")
                                       + (f", top-1 {row['top1'] * 100:.2f}%" if row.get("top1") is not None else ""))
            else:
                # A reason shared by many cells (a model that could not be prepared, an unset data path)
                # is printed in full once; later cells refer back to it.
                reason = str(row.get("error"))
                said = (row.get("model"), status, reason) in seen_reasons
                seen_reasons.add((row.get("model"), status, reason))
                text = "same reason as above" if said else escape(reason)
                if status == "failed":
                    progress.console.print(f"  [red]failed[/red]  {what}: {text}")
                else:
                    progress.console.print(f"  [dim]skipped {what}: {text}[/dim]")
            ticks["n"] += 1

        def log(msg: str) -> None:
            progress.console.print(_styled(msg))

        library_logger = logging.getLogger("quantbench")
        handler, level = _LogToConsole(log), library_logger.level
        library_logger.addHandler(handler)
        library_logger.setLevel(logging.INFO)
        from quantbench.common.progress import rich_sink, watch

        try:
            with watch(rich_sink(progress, console)):  # export, reference, calibration: phase and ETA
                summary = run_sweep(cfg, out, retry_failed=args.retry_failed, log=log,
                                    progress=lambda n: progress.advance(task, n), on_row=on_row,
                                    on_plan=lambda total: progress.update(task, total=total))
        except KeyboardInterrupt:
            n = ticks["n"]
            raise Interrupted(f"interrupted: the {n} row(s) measured in this run are kept in {out / 'results.jsonl'}; "
                              "rerun to finish the remaining cells" if n else
                              "interrupted before any cell of this run finished; rerun to measure them") from None
        finally:
            library_logger.removeHandler(handler)
            library_logger.setLevel(level)
    loaded = read_rows(summary.results_path, check_types=True)  # as the report reads it: a mistyped field is "—"
    if loaded.mistyped:
        console.print(f"warning: {summary.results_path}: field(s) of the wrong type shown as missing: "
                      f"{', '.join(sorted(loaded.mistyped))}", markup=False)
    rows = [r for r in loaded.rows if r.get("schema_version")]
    current, older = current_rows(rows)  # a rerun with other inputs: its rows, not the ones they replace
    if not args.all_generations:
        rows = current
    if any(r.get("status") == "ok" for r in rows):
        render_console(rows, console, older=older)
    if older and not args.all_generations:
        console.print(f"note: {superseded_note(len(older))}", markup=False)
    for r in rows:
        if r.get("status") == "ok" and r.get("audit_warning"):
            console.print("[yellow]warning:[/yellow] " + escape(
                f"{r['model']}/{r['variant']} on {r.get('runtime_label') or r['runtime']} batch {r['batch']}: "
                f"{r['audit_warning']}"))
    for line in noisy_warnings(rows):
        console.print("[yellow]warning:[/yellow] " + escape(line))
    if any(r.get("weights") == "random-init" for r in rows):
        console.print("[yellow]note:[/yellow] random-init weights: accuracy is not meaningful; "
                      "compare agreement with FP32")
    if any(r.get("status") == "ok" for r in rows):
        render_verdict(current, console, cfg.run.accuracy_budget_pts)  # a decision for this configuration
    wall = time.perf_counter() - t0
    console.print(f"{summary.ran} cell(s) measured, {summary.failed} failed, {summary.skipped} skipped, "
                  f"{summary.already} already done — {wall:.0f} s; results: {summary.results_path}", markup=False)
    if cfg.run.report:
        write_report(summary.results_path, lambda msg: console.print(_styled(msg)), cfg.run.accuracy_budget_pts)
    if summary.ran == 0 and not summary.already:
        _console(stderr=True).print("[bold red]error:[/bold red] no cell was measured: " + escape(
            "; ".join(f"{n}: {r}" for n, r in summary.unavailable.items()) or "every cell failed or was skipped"))
        return EXIT_FAILED_CELLS
    return EXIT_FAILED_CELLS if summary.failed else EXIT_OK


def cmd_devices(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from quantbench.harness.sweep.environment import fingerprint
    from quantbench.runtimes import get_runtime_class, list_runtimes

    if args.ray_resources:  # only the JSON on stdout: it is meant for `ray start --resources="$(...)"`
        import json

        from quantbench.harness.sweep.resources import node_resources

        if args.slots < 1:
            return _error(f"--slots must be an integer >= 1, not {args.slots}")
        sys.stdout.write(json.dumps(node_resources(args.slots)) + "\n")
        return EXIT_OK
    if args.slots != 1:
        return _error("--slots applies to --ray-resources only")

    env = fingerprint()
    console = _console()
    flags = ", ".join(env["cpu_flags"]) or "none of interest"
    console.print(f"cpu: {env['cpu_model']} — {env['cores_physical']} cores / {env['cores_logical']} threads, "
                  f"{env['memory_gb']} GiB; flags: {flags}")
    if env["gpu"]:
        for g in env["gpu"]:
            console.print(f"gpu: {g['name']} (driver {g['driver']}, {g['memory']})")
    else:
        console.print("gpu: none found (no nvidia-smi / NVIDIA driver)")
    table = Table(title="runtimes")
    for col in ("runtime", "status", "devices", "versions / how to get it"):
        table.add_column(col)
    drivers: list[str] = []  # GPU runtimes: the NVIDIA driver their installed (or installable) build needs
    for name in list_runtimes():
        try:
            cls = get_runtime_class(name)
        except ImportError as exc:
            table.add_row(name, "[red]broken[/red]", "—", escape(f"adapter failed to import: {exc}"))
            continue
        avail = cls.availability()
        try:
            req = cls.requirements()
        except Exception:  # noqa: BLE001 - a broken install must not break the listing
            req = ""
        if req:
            drivers.append(f"{name}: {req}")
        if avail.ok:
            try:
                devs, vers = ", ".join(cls.devices()), ", ".join(f"{k} {v}" for k, v in cls.versions().items())
            except Exception as exc:  # noqa: BLE001 - a broken install is reported, not raised
                devs, vers = "?", f"error: {str(exc).splitlines()[0]}"
            table.add_row(name, "[green]available[/green]", escape(devs), escape(vers))
        else:
            table.add_row(name, "[red]unavailable[/red]", "—",
                          escape(f"{avail.reason}; {avail.hint}" if avail.hint else avail.reason))
    console.print(table)
    for line in drivers:
        console.print(f"driver — {escape(line)}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from quantbench.reports import main_report

    if not args.accuracy_budget >= 0 or args.accuracy_budget == float("inf"):
        return _error(f"--accuracy-budget must be a number of top-1 points >= 0, not {args.accuracy_budget}")
    return main_report([Path(p) for p in args.results], Path(args.output) if args.output else None, args.format,
                       all_generations=args.all_generations, budget_pts=args.accuracy_budget)


def cmd_export(args: argparse.Namespace) -> int:
    from quantbench.harness.results.store import export_table, read_current

    if Path(args.output).suffix not in (".csv", ".parquet"):  # before reading: the output's name is the format
        return _error(f"cannot export to '{args.output}': use a .csv or .parquet file")
    if Path(args.output).name in ("results.jsonl", "sensitivity.jsonl") or (
            Path(args.output).resolve() == Path(args.results).resolve()):
        return _error(f"refusing to write over {args.output}: choose another -o")
    report = read_current(args.results, all_generations=args.all_generations)
    warnings = report.warnings + export_table(report.rows, Path(args.output))
    for w in warnings:
        _console(stderr=True).print(_styled(f"warning: {w}"))
    _console().print(f"{len(report.rows)} row(s) → {args.output}", markup=False)
    return EXIT_OK


def cmd_sensitivity(args: argparse.Namespace) -> int:
    from quantbench.harness.api import write_report
    from quantbench.harness.config import ConfigError, load_config
    from quantbench.harness.studies.sensitivity import SensitivityOptions, run_study
    from quantbench.reports.console_sensitivity import render_console

    cfg = load_config(args.config)
    given: dict[str, str] = {}
    _override_run(cfg, args, given)
    _validate_naming_flags(cfg, given)
    if args.show < 0:
        raise ConfigError(f"--show must be >= 0 (0: every node), not {args.show}")
    opts = SensitivityOptions(sqnr_samples=args.sqnr_samples, top=args.top, runtime=args.runtime, budget=args.budget,
                              max_float=args.max_float, budget_batch=args.batch, rank_by=args.rank_by, scan=args.scan)
    console = _console()
    out = Path(cfg.run.output)
    t0 = time.perf_counter()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from quantbench.common.progress import rich_sink, watch

    # a live line on a terminal only: elsewhere (logs, pipes) progress comes as plain lines and stdout stays clean
    live = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True) if console.is_terminal else contextlib.nullcontext(None)
    try:
        with live as bar, watch(rich_sink(bar, console)):
            results = run_study(cfg, out, opts, models=_split(args.model) if args.model else None,
                                variants=_split(args.variant) if args.variant else None,
                                log=lambda msg: console.print(_styled(msg)))
    except KeyboardInterrupt as exc:  # run_study's one line says what was kept
        raise Interrupted(str(exc) or "interrupted") from None
    render_console(results, console, limit=args.show, errors_shown=True)  # run_study logged each error as it came
    written = any(r.rows or r.summary for r in results)  # a study that failed before it began writes no row
    console.print(f"rows: {out / 'sensitivity.jsonl'} — {time.perf_counter() - t0:.0f} s" if written else
                  f"no rows written — {time.perf_counter() - t0:.0f} s", markup=False)
    if written and cfg.run.report and not args.no_report:
        write_report(out / "sensitivity.jsonl", lambda msg: console.print(_styled(msg)))
    return EXIT_FAILED_CELLS if any(r.error for r in results) else EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    from quantbench.exporters.registry import list_models

    for name in list_models(args.pattern):
        print(name)
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from quantbench.exporters.train import TrainSettings, models_table_toml, train

    settings = TrainSettings(epochs=args.epochs, max_steps=args.max_steps, batch=args.batch, lr=args.lr,
                             weight_decay=args.weight_decay, seed=args.seed)
    for flag, value, low in (("--input-size", args.input_size, 8), ("--eval-samples", args.eval_samples, 1),
                             ("--threads", args.threads, 0)):
        if value is not None and value < low:
            return _error(f"{flag} must be >= {low}, not {value}")
    console, err = _console(), _console(stderr=True)
    lines = not args.quiet and not err.is_terminal  # logs and pipes: a line every tenth of the steps
    t0 = time.perf_counter()
    with Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err, disable=args.quiet or lines) as bar:
        task = bar.add_task("train", total=None, loss="-")

        def progress(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, loss=f"{loss:.3f}")
            if lines and (step == total or step % max(1, total // 10) == 0):
                err.print(f"step {step}/{total}: loss {loss:.3f} ({time.perf_counter() - t0:.0f} s)", markup=False)

        recipe = train(args.model, args.data, Path(args.output), settings, input_size=args.input_size,
                       channels=args.channels, eval_samples=args.eval_samples, threads=args.threads or 0,
                       progress=progress, log=lambda msg: console.print(_styled(msg)))
    console.print(f"wrote {args.output}: {recipe['steps']} steps in {recipe['train_seconds']} s, torch top-1 "
                  f"{recipe['torch_top1']:.2%} on {recipe['eval_samples']} evaluation images "
                  f"(recipe: {Path(args.output).with_suffix('.json')})", markup=False)
    console.print("benchmark it with:\n" + models_table_toml(recipe), markup=False)
    return EXIT_OK


def _version() -> str:
    from quantbench import __version__

    return __version__


ALL_GENERATIONS_HELP = ("also show rows superseded by a later measurement of the same cell under other inputs "
                        "(changed eval_samples, threads, calib_samples …; hidden by default)")


def build_parser() -> argparse.ArgumentParser:
    from quantbench.harness.config import ModelConfig
    from quantbench.harness.config.docs import flag_help

    parser = _Parser(
        prog="quantbench",
        description="Benchmark CNN precisions (FP32/FP16/INT8) across runtimes: accuracy on real data, "
                    "latency split into I/O, host→device, compute and device→host, and model size.")
    parser.add_argument("--version", action="version", version=f"quantbench {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a sweep (the embedded default when no CONFIG is given)",
                         description="Run models × variants × runtimes × devices × batch sizes. Rows are appended "
                                     "to OUTPUT/results.jsonl as each cell ends; a rerun skips cells already there.")
    run.add_argument("config", nargs="?", help="sweep TOML file (default: the embedded Fashion-MNIST CNN sweep)")
    _add_run_flags(run)  # -o/--output, --runtimes, --device, --batch-sizes, --threads, --eval-samples, --ray, …
    run.add_argument("--models", help="comma-separated models, each " + flag_help(ModelConfig, "name", "models"))
    run.add_argument("--variants", help="comma-separated variant names from the config to run (a swept table's "
                                        "name runs all its variants)")
    run.add_argument("--weights", help="weights for every model: " + flag_help(ModelConfig, "weights", "models"))
    run.add_argument("--retry-failed", action="store_true", help="measure again cells that failed before")
    run.add_argument("--no-report", action="store_true", help="do not write OUTPUT/report.html (run.report = false)")
    run.add_argument("--dump-config", action="store_true", help="print the effective config (every key, paths "
                     "resolved, overrides applied) as TOML that loads back to the same config, and exit")
    run.add_argument("--all-generations", action="store_true", help=ALL_GENERATIONS_HELP)
    run.set_defaults(func=cmd_run)

    dev = sub.add_parser("devices", help="list this machine's devices and which runtimes can serve them")
    dev.add_argument("--ray-resources", action="store_true",
                     help="print this machine's Ray resources as JSON, for ray start --resources=\"$(...)\"")
    dev.add_argument("--slots", type=int, default=1, help="with --ray-resources: cells this machine runs at once "
                                                          "(default 1: a cell has the machine to itself)")
    dev.set_defaults(func=cmd_devices)

    rep = sub.add_parser("report", help="render results files (from one or many devices) into one report")
    rep.add_argument("results", nargs="+", help="results.jsonl files or output folders")
    rep.add_argument("-o", "--output", help="output file (default: report.html, or stdout for md/csv)")
    rep.add_argument("--format", choices=("html", "md", "csv"), default="html", help="report format (default html)")
    rep.add_argument("--all-generations", action="store_true", help=ALL_GENERATIONS_HELP)
    rep.add_argument("--accuracy-budget", type=float, default=1.0, metavar="PTS",
                     help="the verdict's accuracy budget in top-1 points, as [run] accuracy_budget_pts (default 1.0)")
    rep.set_defaults(func=cmd_report)

    exp = sub.add_parser("export", help="export a results file to CSV or Parquet")
    exp.add_argument("results", help="results.jsonl or an output folder")
    exp.add_argument("-o", "--output", required=True, help="output .csv or .parquet")
    exp.add_argument("--all-generations", action="store_true", help=ALL_GENERATIONS_HELP)
    exp.set_defaults(func=cmd_export)

    sen = sub.add_parser("sensitivity", help="per-node quantization sensitivity; with accuracy_budget, the "
                                             "nodes to keep in float",
                         description="For every node an INT8 variant quantizes: SQNR of the output vs FP32 with only "
                                     "that node quantized and with only it in float (one calibration, reused), top-1 "
                                     "for the most sensitive; with accuracy_budget (or --budget) a greedy search for "
                                     "the nodes to keep in float, measured on the runtime. Rows go to "
                                     "OUTPUT/sensitivity.jsonl.")
    sen.add_argument("config", nargs="?", help="sweep TOML file (default: the embedded Fashion-MNIST CNN sweep)")
    sen.add_argument("--model", help="comma-separated model names or labels from the config (default: all)")
    sen.add_argument("--variant", help="comma-separated INT8 variant names from the config (default: every ONNX "
                                       "INT8 variant)")
    sen.add_argument("--sqnr-samples", type=int, default=256,
                     help="evaluation images for each node's SQNR (default 256)")
    sen.add_argument("--rank-by", default="float-only", help="ranking and search order: float-only (highest SQNR with "
                                                             "only the node in float first; default) or quantized-only "
                                                             "(lowest SQNR with only the node quantized first)")
    sen.add_argument("--scan", choices=("full", "local"), default="full",
                     help="full: SQNR of the model's output with only each node quantized and with only it in float "
                          "(two whole-model passes per node; default); local: each node's own output error from one "
                          "FP32 pass plus each node's own work, a first look (rows marked scan_mode = local)")
    sen.add_argument("--top", type=int, default=5, help="most sensitive nodes whose top-1 is also measured (default 5)")
    _add_run_flags(sen, ("output", "eval_samples", "threads"))
    sen.add_argument("--budget", type=float,
                     help="accuracy budget in top-1 points (overrides the variants' accuracy_budget)")
    sen.add_argument("--runtime", default="ort-cpu", help="runtime the budget search measures on (default ort-cpu)")
    sen.add_argument("--batch", type=int,
                     help="batch size of the budget search's timing (default: first of run.batch_sizes)")
    sen.add_argument("--max-float", type=int, help="most nodes the budget search keeps in float (default: all)")
    sen.add_argument("--show", type=int, default=20,
                     help="ranked nodes shown per study (default 20, 0: all; every node is in the rows)")
    sen.add_argument("--no-report", action="store_true", help="do not write OUTPUT/sensitivity.html")
    sen.set_defaults(func=cmd_sensitivity)

    trn = sub.add_parser("train", help="train a registry model on a data source; saves a state_dict for weights = FILE",
                         description="Train a registry model (quantbench models) from a seeded random init with Adam "
                                     "on the data source's training split, preprocessed as the harness does, and save "
                                     "a state_dict that a [[models]] table loads with weights = FILE and the same "
                                     "input_shape (printed at the end). FILE.json records the recipe, the time and "
                                     "the torch top-1 on the evaluation split.")
    trn.add_argument("model", help="registry name, e.g. mobilenet_v2, vgg16, fashion_cnn")
    trn.add_argument("--data", required=True, help="data source: fashion-mnist, folder:DIR, idx:DIR, npz:FILE, digits")
    trn.add_argument("-o", "--output", required=True, help="state_dict file to write (e.g. vgg16-fmnist.pt)")
    trn.add_argument("--epochs", type=int, help="passes over the training split (default 1 unless --max-steps)")
    trn.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (caps --epochs)")
    trn.add_argument("--input-size", type=int, help="square input side in pixels, e.g. 32 (default: the model's)")
    trn.add_argument("--channels", type=int, choices=(1, 3), help="input channels (default: the model's)")
    trn.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    trn.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    trn.add_argument("--weight-decay", type=float, default=0.0, help="Adam weight decay (default 0)")
    trn.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the shuffling (default 0)")
    trn.add_argument("--eval-samples", type=int, default=1000, help="evaluation images for the final torch top-1 "
                                                                     "(default 1000)")
    trn.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    trn.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    trn.set_defaults(func=cmd_train)

    mod = sub.add_parser("models", help="list the models the registry knows")
    mod.add_argument("pattern", nargs="?", default="*", help="wildcard filter, e.g. 'resnet*'")
    mod.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``quantbench`` command."""
    args = build_parser().parse_args(argv)
    from quantbench.calibration_data import DataError
    from quantbench.harness.config import ConfigError
    from quantbench.harness.results.store import ResultsError
    from quantbench.harness.sweep.runner import RunError
    from quantbench.runtimes import RuntimeFailure, RuntimeUnavailable

    try:
        return args.func(args)
    except (ConfigError, RunError, ResultsError, DataError, RuntimeFailure, RuntimeUnavailable,
            OSError, ValueError) as exc:
        return _error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except KeyboardInterrupt as exc:  # the commands that write rows say what they kept (Interrupted)
        return _error(str(exc) if isinstance(exc, Interrupted) and str(exc) else "interrupted")
    except Exception as exc:
        import os

        if os.environ.get("QUANTBENCH_DEBUG"):
            raise
        msg = str(exc).splitlines()[0] if str(exc) else ""
        return _error(f"internal error: {type(exc).__name__}: {msg} (set QUANTBENCH_DEBUG=1 for the traceback)")


if __name__ == "__main__":
    sys.exit(main())
