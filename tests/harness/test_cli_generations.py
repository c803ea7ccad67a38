"""A rerun into the same folder with other inputs: the table, the report, read_results and every pairing with
FP32 use the new generation; the older rows stay in the file, shown with --all-generations. And a results
file that is not only results stops a run in one line instead of being measured over."""
from __future__ import annotations

import pytest

from quantbench.harness.results.store import read_rows
from tests.harness.conftest import run_cli, write_config
from tests.harness.test_cli_run import VARIANTS

pytestmark = pytest.mark.ort_cpu


def _body(stdout: str) -> list[list[str]]:
    """The console table's rows, a wrapped row's lines joined (a row starts where its batch cell is set)."""
    rows: list[list[str]] = []
    for ln in stdout.splitlines():
        if not ln.startswith("│"):
            continue
        cells = [c.strip() for c in ln.split("│")[1:-1]]
        if cells[4] or not rows:
            rows.append(cells)
        else:
            rows[-1] = [" ".join(filter(None, (a, b))) for a, b in zip(rows[-1], cells, strict=True)]
    return rows


@pytest.mark.slow
def test_rerun_with_other_eval_samples_shows_one_generation(tmp_path, shared_cache):
    import quantbench

    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.toml", out, VARIANTS, eval_samples=200)
    assert run_cli("run", str(cfg), cache=shared_cache).returncode == 0
    proc = run_cli("run", str(cfg), "--eval-samples", "100", cache=shared_cache)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert len(read_rows(out / "results.jsonl").rows) == 4  # both generations stay in the file

    body = _body(proc.stdout)
    assert [r[1] for r in body] == ["fp32", "int8-minmax"]  # one row per cell, from this run
    assert "2 row(s) measured under earlier inputs of the same cells" in proc.stdout

    df = quantbench.read_results(out)
    assert sorted(df["variant"]) == ["fp32", "int8-minmax"] and set(df["eval_samples"]) == {100}
    assert len(quantbench.read_results(out, all_generations=True)) == 4

    md = run_cli("report", str(out), "--format", "md", cache=shared_cache)  # an output folder is an input
    assert md.returncode == 0, md.stderr
    table = [ln for ln in md.stdout.splitlines() if ln.startswith(("| fp32", "| int8-minmax"))]
    assert len(table) == 2 and "--all-generations shows them" in md.stderr

    every = run_cli("run", str(cfg), "--eval-samples", "100", "--all-generations", "--no-report", cache=shared_cache)
    rows = _body(every.stdout)
    assert sorted(r[1] for r in rows) == ["fp32", "fp32 (older generation)", "int8-minmax",
                                          "int8-minmax (older generation)"]
    assert [r[-2] for r in rows if r[1].startswith("fp32")] == ["ref", "ref"]  # each generation has its reference


def test_a_results_file_that_is_not_results_stops_the_run_in_one_line(tmp_path, shared_cache):
    out = tmp_path / "out"
    out.mkdir()
    html = "<!DOCTYPE html>\n<html><body>a report written over the results</body></html>\n"
    (out / "results.jsonl").write_text(html)
    cfg = write_config(tmp_path / "c.toml", out, VARIANTS)
    proc = run_cli("run", str(cfg), cache=shared_cache)
    assert proc.returncode == 2
    expected = (f"error: {out / 'results.jsonl'} is not a quantbench results file: line 1 is not a result row "
                "('<!DOCTYPE html>'), nor are 1 other line(s); move it away or choose another output folder "
                "(nothing was run)")
    assert proc.stderr.strip().splitlines() == [expected]
    assert (out / "results.jsonl").read_text() == html


def test_report_and_export_never_write_over_results(tmp_path, shared_cache):
    path = tmp_path / "out" / "results.jsonl"
    path.parent.mkdir()
    path.write_text('{"schema_version": 2, "cell_id": "a", "status": "failed", "error": "x"}\n')
    before = path.read_text()
    for args in (("report", str(path), "-o", str(path)), ("report", str(tmp_path / "out"), "-o", str(path)),
                 ("report", str(path), "-o", str(tmp_path / "results.jsonl"), "--format", "md"),
                 ("export", str(path), "-o", str(path))):
        proc = run_cli(*args, cache=tmp_path / "cache")
        assert proc.returncode == 2, args
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert path.read_text() == before and not (tmp_path / "results.jsonl").exists()
