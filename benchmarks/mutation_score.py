"""Mutation score of the modules that compute reported numbers: ``mutation score: K/N killed``.

Runs mutmut 3 (configured in pyproject.toml, ``[tool.mutmut]``) over the modules and functions listed
there, with the fast tests listed there, and prints the score per module and in total; ``--survivors``
also prints each surviving mutant's diff (the README lists them with a reason each).

mutmut names a mutant after the file path (``harness/measure/stats.py`` -> ``harness.measure.stats``) and finds the
tests that reach it by the module name they import (``quantbench.harness.measure.stats``); this repository keeps
the subpackages as top-level folders, so the script stages a copy in the installed layout
(``quantbench/harness/...``) under ``build/mutation`` and runs mutmut there. Killed means a test failed
(or hung: mutmut's timeout) with the mutant in place; a mutant no selected test reaches counts as not
killed.

    tox -e mutation                                   # or:
    nice -n 10 python benchmarks/mutation_score.py [--only harness/measure/stats.py] [--survivors] [--fail-under 85]
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("harness", "exporters", "runtimes", "calibration_data", "reports")
KILLED = {"killed", "timeout", "segfault", "caught by type check"}
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "artifacts")


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _section(name: str, table: dict) -> str:
    return f"[{name}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in table.items()) + "\n"


def exclude_whole_bodies(path: Path, patterns: list[str]) -> list[str]:
    """Mark each function/class whose ``def``/``class`` line matches one of ``patterns`` with mutmut's
    ``# pragma: no mutate block`` (in the staged copy only): mutmut itself ignores just the matching line."""
    lines = path.read_text().splitlines(keepends=True)
    regexes = [re.compile(p) for p in patterns]
    marked = []
    for node in ast.walk(ast.parse("".join(lines))):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if not any(r.search(lines[node.lineno - 1]) for r in regexes):
            continue
        first = node.body[0].lineno - 1
        header = next(i for i in range(first - 1, node.lineno - 2, -1)
                      if lines[i].split("#", 1)[0].rstrip().endswith(":"))
        lines[header] = lines[header].rstrip("\n") + "  # pragma: no mutate block\n"
        marked.append(node.name)
    path.write_text("".join(lines))
    return marked


def stage(dest: Path, only: list[str] | None) -> dict:
    """Copy the package in its installed layout, the tests and a pyproject.toml with the two sections used."""
    if dest.exists():
        shutil.rmtree(dest)
    pkg = dest / "quantbench"
    shutil.copytree(ROOT / "quantbench", pkg, ignore=IGNORE)
    for sub in SUBPACKAGES:
        shutil.copytree(ROOT / sub, pkg / sub, ignore=IGNORE)
    shutil.copytree(ROOT / "tests", dest / "tests", ignore=IGNORE)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mut = dict(project["tool"]["mutmut"])
    if only:
        wanted = {f"quantbench/{p.removeprefix('quantbench/')}" for p in only}
        unknown = wanted - set(mut["only_mutate"])
        if unknown:
            raise SystemExit(f"error: --only {', '.join(sorted(unknown))}: not in [tool.mutmut] only_mutate")
        mut["only_mutate"] = [p for p in mut["only_mutate"] if p in wanted]
    for rel in mut["only_mutate"]:
        exclude_whole_bodies(dest / rel, mut.get("do_not_mutate_patterns", []))
    text = _section("tool.mutmut", mut) + _section("tool.pytest.ini_options", project["tool"]["pytest"]["ini_options"])
    (dest / "pyproject.toml").write_text(text)
    return mut


def _mutmut(args: list[str], cwd: Path, log=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MUTANT_UNDER_TEST")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run(["mutmut", *args], cwd=cwd, env=env, text=True, check=False,
                          stdout=log if log is not None else subprocess.PIPE, stderr=subprocess.STDOUT)


def results(dest: Path) -> dict[str, str]:
    """{mutant name: status} from ``mutmut results --all true``."""
    out = _mutmut(["results", "--all", "true"], dest).stdout
    found = dict(re.findall(r"^\s+(\S+__mutmut_\d+): (.+?)\s*$", out, re.MULTILINE))
    if not found:
        raise SystemExit(f"error: no mutmut results in {dest} (see {dest / 'mutmut.log'})\n{out[-2000:]}")
    return found


def module_of(mutant: str) -> str:
    """``quantbench.harness.measure.stats.x_summarize__mutmut_3`` -> ``harness/measure/stats.py``."""
    mangled = mutant.partition("__mutmut_")[0]
    module = mangled.rpartition(".")[0].removeprefix("quantbench.")
    return module.replace(".", "/") + ".py"


def report(found: dict[str, str]) -> tuple[int, int]:
    """Print the score per module and in total; returns (killed, counted)."""
    by_module: dict[str, Counter] = defaultdict(Counter)
    for name, status in found.items():
        by_module[module_of(name)][status] += 1
    total_k = total_n = 0
    for module, counts in sorted(by_module.items()):
        n = sum(v for s, v in counts.items() if s not in ("skipped", "not checked"))
        k = sum(v for s, v in counts.items() if s in KILLED)
        total_k, total_n = total_k + k, total_n + n
        # "not checked": the run was cut short
        rest = ", ".join(f"{v} {s}" for s, v in sorted(counts.items()) if s not in KILLED)
        print(f"  {module:28s} {k:4d}/{n:<4d} killed" + (f"  ({rest})" if rest else ""))
    print(f"mutation score: {total_k}/{total_n} killed ({100 * total_k / max(total_n, 1):.1f}%)")
    return total_k, total_n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", type=Path, default=ROOT / "build" / "mutation", help="work folder (replaced)")
    ap.add_argument("--only", action="append",
                    help="mutate only this module (e.g. harness/measure/stats.py); repeatable")
    ap.add_argument("--max-children", type=int, default=2, help="mutants tested at once")
    ap.add_argument("--survivors", action="store_true", help="print the diff of every mutant not killed")
    ap.add_argument("--report-only", action="store_true", help="read the results of the last run in --stage")
    ap.add_argument("--fail-under", type=float, default=0.0, metavar="PCT",
                    help="exit 1 when the score is below PCT percent")
    args = ap.parse_args(argv)
    if shutil.which("mutmut") is None:
        print("error: mutmut is not installed (pip install 'mutmut>=3.3')", file=sys.stderr)
        return 2
    dest = args.stage.resolve()
    if not args.report_only:
        stage(dest, args.only)
        with open(dest / "mutmut.log", "w") as log:
            proc = _mutmut(["run", "--max-children", str(args.max_children)], dest, log)
        if proc.returncode != 0:
            tail = (dest / "mutmut.log").read_text()[-3000:]
            print(f"error: mutmut run failed (exit {proc.returncode}); log: {dest / 'mutmut.log'}\n{tail}",
                  file=sys.stderr)
            return 1
    found = results(dest)
    killed, counted = report(found)
    if args.survivors:
        for name, status in sorted(found.items()):
            if status not in KILLED and status not in ("skipped", "not checked"):
                print(_mutmut(["show", name], dest).stdout.rstrip())
    if counted and 100 * killed / counted < args.fail_under:
        print(f"error: mutation score {100 * killed / counted:.1f}% is below --fail-under {args.fail_under:g}%",
              file=sys.stderr)
        return 1
    return 0 if counted else 1


if __name__ == "__main__":
    sys.exit(main())
