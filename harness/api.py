"""The Python API: benchmark a model, run a sweep file, read results — each as a pandas DataFrame.

Re-exported from :mod:`quantbench`::

    import quantbench
    df = quantbench.benchmark("fashion_cnn", runtimes=["ort-cpu"], eval_samples=500)

The same machinery as ``quantbench run``: every value is checked before anything runs (a bad one
raises :class:`ConfigError` naming the key), every cell is measured in its own subprocess with a
timeout, and rows are appended to ``OUTPUT/results.jsonl`` as cells end. Progress and warnings go
to the ``logging`` logger ``"quantbench"`` as plain text; nothing is printed.
"""
from __future__ import annotations

import copy
import logging
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from quantbench.harness.config import (
    ConfigError,
    ModelConfig,
    SweepConfig,
    VariantConfig,
    first_line,
    load_config,
    parse_config,
)

logger = logging.getLogger("quantbench")

def benchmark(model: Any, *, runtimes: str | Sequence[str] = ("auto",), dataset: str | Mapping[str, Any] | None = None,
              variants: str | Sequence[str | Mapping[str, Any]] = ("fp32", "int8-minmax"),
              batch_sizes: int | Sequence[int] = (1,), output: str | os.PathLike | None = None,
              runtime_options: Mapping[str, Mapping[str, Any]] | None = None, retry_failed: bool = False,
              log: Callable[[str], None] | None = None, **run_options: Any):  # -> pandas.DataFrame
    """Measure ``model``'s variants on ``runtimes``; one row per cell, as a pandas DataFrame.

    ``model``: a registry name (``quantbench models``), ``torchvision:NAME``, ``module:pkg.mod:fn``
    (imports and calls ``fn`` — your code — in a subprocess; it returns a ``torch.nn.Module``), a
    path to an ``.onnx`` file, a ``[[models]]`` table as a dict (``{"name": …, "weights": …}``), or a
    list of those. ``dataset``: a data source spec (``fashion-mnist``, ``folder:DIR``, ``npz:FILE`` …)
    for models that do not name their own. ``variants``: preset names (``fp32``, ``fp16``,
    ``int8-minmax``, ``int8-entropy``, ``int8-percentile``) or ``[[variants]]`` tables as dicts.
    ``runtime_options``: ``{"openvino": {"precision": "f32"}}``. ``run_options``: any ``[run]`` key,
    e.g. ``eval_samples=500, min_time_s=0.5, threads=2``. ``output``: the folder for
    ``results.jsonl`` (a rerun skips cells already there); None: a temporary folder, removed after.
    """
    single = isinstance(model, (str, os.PathLike, Mapping, ModelConfig)) or not isinstance(model, (list, tuple))
    models = [model] if single else list(model)
    if not models:
        raise ConfigError("benchmark() needs at least one model")
    config = {
        "run": {"runtimes": _as_list(runtimes), "batch_sizes": _as_list(batch_sizes), "report": False, **run_options},
        "models": [_model_table(m, dataset) for m in models],
        "variants": [_variant_table(v) for v in _as_list(variants)],
        "runtime_options": {k: dict(v) for k, v in (runtime_options or {}).items()},
    }
    if output is not None:
        return run(config, output, retry_failed=retry_failed, log=log)
    if config["run"]["report"] is True:
        raise ConfigError("report=True needs an output folder (output=None is a temporary one)")
    with tempfile.TemporaryDirectory(prefix="quantbench-") as tmp:
        df = run(config, tmp, retry_failed=retry_failed, log=log)
    df.attrs["quantbench"]["results"] = None  # the temporary folder is gone
    return df


def run(config: str | os.PathLike | Mapping[str, Any] | SweepConfig, output: str | os.PathLike | None = None, *,
        retry_failed: bool = False, log: Callable[[str], None] | None = None):  # -> pandas.DataFrame
    """Run a sweep — a TOML file, a dict shaped like one, or a :class:`SweepConfig` — and return its rows.

    Relative paths the sweep reads (data, labels, weights, ONNX files) are resolved against a TOML
    file's folder, and against the current working directory for a dict or a SweepConfig.
    ``output`` overrides ``[run] output``. The result holds the latest row of every cell in
    ``OUTPUT/results.jsonl``, including cells measured by earlier runs into the same folder (but not
    rows superseded by a measurement of the same cell under other inputs); failed
    and skipped cells are rows too (``status``, ``error``). With ``[run] report = true`` (the default
    of a sweep file) ``OUTPUT/report.html`` is written too, as by ``quantbench run``.
    ``df.attrs["quantbench"]`` says how many cells ran, failed, were skipped or were already there,
    and where the results and the report are. Raises :class:`ConfigError` (a
    ``ValueError``) for a bad config and ``RunError`` when nothing can run.
    """
    from quantbench.harness.results.store import current_rows, read_rows, to_dataframe
    from quantbench.harness.sweep.runner import default_log, run_sweep

    cfg = _sweep_config(config)
    if output is not None:
        cfg.run.output = os.fspath(output)
        cfg.validate()
    say = log or default_log
    summary = run_sweep(cfg, Path(cfg.run.output), retry_failed=retry_failed, log=say)
    loaded = read_rows(summary.results_path)
    for warning in loaded.warnings:
        say(f"warning: {warning}")
    report = write_report(summary.results_path, say, cfg.run.accuracy_budget_pts) if cfg.run.report else None
    rows, _ = current_rows(loaded.rows)  # not the rows this run's configuration replaced (read_results has them)
    df = to_dataframe(rows)
    df.attrs["quantbench"] = {"results": str(summary.results_path), "report": report, "ran": summary.ran,
                              "failed": summary.failed, "skipped": summary.skipped, "already": summary.already,
                              "run_id": summary.run_id}
    return df


def write_report(results: str | os.PathLike, log: Callable[[str], None] | None = None,
                 budget_pts: float | None = None) -> str | None:
    """Write the HTML report of a run's rows next to them — ``report.html`` beside a ``results.jsonl``,
    ``sensitivity.html`` beside a ``sensitivity.jsonl`` — as ``quantbench run``/``sensitivity`` and
    :func:`run` do; its path, or None when it could not be written (said to ``log`` as a warning: a report
    problem never fails a finished run). ``budget_pts``: the verdict's accuracy budget (default 1.0)."""
    import importlib.util

    say = log or (lambda msg: logger.log(logging.WARNING if msg.startswith("warning: ") else logging.INFO, msg))
    results = Path(results)
    sensitivity = results.name == "sensitivity.jsonl"
    out = results.parent / ("sensitivity.html" if sensitivity else "report.html")
    if importlib.util.find_spec("plotly") is None or importlib.util.find_spec("jinja2") is None:
        say(f"warning: {out.name} not written: pip install .[report]")
        return None
    try:
        if sensitivity:
            from quantbench.reports.sensitivity import write_sensitivity_report

            write_sensitivity_report([results], out)
        else:
            from quantbench.reports import build_report, render_html

            render_html(build_report([results]), out, **({} if budget_pts is None else {"budget_pts": budget_pts}))
    except Exception as exc:  # noqa: BLE001 - a report problem must not lose a finished run's rows
        say(f"warning: {out.name} not written: {first_line(exc)}")
        return None
    say(f"report: {out}")
    return str(out)


def read_results(path: str | os.PathLike | Iterable[str | os.PathLike], latest_per_cell: bool = True,
                 all_generations: bool = False):
    """Rows of one or more ``results.jsonl`` files (or output folders) as a pandas DataFrame.

    Truncated or unreadable lines are skipped with a warning on the ``"quantbench"`` logger. With
    ``latest_per_cell`` only the last row of each retried cell is kept, and rows superseded by a later
    measurement of the same cell under other inputs (a rerun with another ``eval_samples``, ``threads``,
    ``calib_samples`` …) are left out unless ``all_generations`` (see ``harness.results.current_rows``).
    ``latest_per_cell=False`` returns every line, superseded or not.
    """
    from quantbench.harness.results.store import current_rows, read_rows, superseded_note, to_dataframe

    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    rows: list[dict[str, Any]] = []
    for p in paths:
        p = Path(p)
        loaded = read_rows(p / "results.jsonl" if p.is_dir() else p, latest_per_cell=latest_per_cell)
        for warning in loaded.warnings:
            logger.warning("warning: %s", warning)
        rows.extend(loaded.rows)
    if latest_per_cell and not all_generations:
        rows, older = current_rows(rows)
        if older:
            logger.info(superseded_note(len(older), "all_generations=True"))
    return to_dataframe(rows)


def preset_variants() -> dict[str, dict[str, Any]]:
    """The variants of the embedded default sweep, by name, as ``[[variants]]`` tables."""
    return {v["name"]: v for v in load_config(None).to_dict()["variants"]}


# ---- helpers -----------------------------------------------------------------------------------
def _as_list(value: Any) -> list[Any]:
    if isinstance(value, (str, int, Mapping)) and not isinstance(value, bool):
        return [value]
    return list(value)


def _sweep_config(config: Any) -> SweepConfig:
    if isinstance(config, SweepConfig):
        cfg = copy.deepcopy(config)
        cfg.resolve_paths(Path.cwd())  # a no-op for one loaded from a file (its paths are absolute already)
        cfg.validate()
        return cfg
    if isinstance(config, Mapping):
        return parse_config(copy.deepcopy(dict(config)), "<dict>")
    if isinstance(config, (str, os.PathLike)):
        return load_config(config)
    raise ConfigError(f"config must be a TOML path, a dict or a SweepConfig, not {type(config).__name__}")


def _model_table(model: Any, dataset: Any) -> dict[str, Any]:
    if isinstance(model, ModelConfig):
        table = {k: v for k, v in asdict(model).items() if v is not None}
    elif isinstance(model, Mapping):
        table = dict(model)
    elif isinstance(model, (str, os.PathLike)):
        table = {"name": os.fspath(model)}
    else:
        raise ConfigError(
            f"model must be a name, an .onnx path, 'module:pkg.mod:fn' or a [[models]] table, not "
            f"{type(model).__name__} (a model object cannot be handed to the measuring subprocesses: "
            "put a function that builds it in a module and pass 'module:pkg.mod:fn')")
    if dataset is not None and "dataset" not in table:
        table["dataset"] = copy.deepcopy(dataset)
    return table


def _variant_table(variant: Any) -> dict[str, Any]:
    if isinstance(variant, VariantConfig):
        return {"name": variant.name, "precision": variant.precision, **variant.quant,
                **({"builder": variant.builder} if variant.builder != "onnx" else {}),
                **({"calibrator": variant.calibrator} if variant.calibrator else {}),
                **({"onnx": variant.onnx} if variant.onnx is not None else {})}
    if isinstance(variant, Mapping):
        return dict(variant)
    presets = preset_variants()
    if isinstance(variant, str) and variant in presets:
        return presets[variant]
    raise ConfigError(f"unknown variant {variant!r}: use one of {', '.join(presets)} or a [[variants]] table (dict)")
