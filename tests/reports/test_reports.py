"""Report rendering: bad inputs, escaping, size, Markdown and CSV."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from quantbench.reports import (
    ReportError,
    build_report,
    main_report,
    render_csv,
    render_html,
    render_markdown,
)
from quantbench.reports.charts import pareto_front
from quantbench.reports.tables import COLUMNS

from .conftest import make_row, make_v1_row, write_rows

pytestmark = pytest.mark.report


def test_bad_files_are_warnings_and_the_rest_is_reported(tmp_path):
    good = write_rows(tmp_path / "good.jsonl", [make_row(0), make_row(1, precision="int8")])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    truncated = tmp_path / "trunc.jsonl"
    truncated.write_text(json.dumps(make_row(2, host="t")) + "\n" + '{"schema_version": 1, "cell_')
    old = write_rows(tmp_path / "old.jsonl", [dict(make_row(3), schema_version=0)])
    report = build_report([good, empty, truncated, old, tmp_path / "missing.jsonl"])
    assert len(report.rows) == 3
    text = " ".join(report.warnings)
    for fragment in ("no result rows", "truncated", "schema version 0", "not found"):
        assert fragment in text
    with pytest.raises(ReportError):
        build_report([empty, tmp_path / "missing.jsonl"])


def test_mixed_incompatible_runs_are_flagged(tmp_path):
    a = dict(make_row(0, model="m"), artifact_sha256="aaa")
    b = dict(make_row(1, model="m", host="other"), artifact_sha256="bbb")
    report = build_report([write_rows(tmp_path / "a.jsonl", [a]), write_rows(tmp_path / "b.jsonl", [b])])
    assert any("2 different FP32 artifacts" in w for w in report.warnings)


def test_text_from_results_is_escaped(tmp_path):
    evil = [make_row(i, model="<script>alert(1)</script>", variant='"><img src=x onerror=alert(2)>', host=h)
            for i, h in enumerate(["a", "<b>b</b>"])]  # two devices: the cross-device section renders it too
    html = render_html(build_report([write_rows(tmp_path / "r.jsonl", evil)]), tmp_path / "r.html").read_text()
    assert "all devices" in html
    assert "<script>alert(1)</script>" not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>b</b>" not in html


def test_fifty_cells_stay_small_and_self_contained(tmp_path):
    rows = [make_row(i, precision="int8" if i % 2 else "fp32", variant=f"v{i % 10}", host=f"h{i % 2}",
                     n_raw=5000) for i in range(50)]
    out = render_html(build_report([write_rows(tmp_path / "r.jsonl", rows)]), tmp_path / "r.html")
    html = out.read_text()
    assert out.stat().st_size < 3e6  # 1.5 MB of it is plotly.js; measured 1.7 MB
    assert html.count("Plotly.newPlot") >= 7
    assert "cdn" not in html.lower().split("</script>", 1)[1]  # no CDN reference after the embedded bundle
    assert html.count("plotly.js (cartesian - minified) v") == 1  # the library is embedded once


def test_markdown_and_csv(tmp_path, capsys):
    rows = [make_row(0), make_row(1, precision="int8", variant="int8|x"), make_row(2, status="failed")]
    path = write_rows(tmp_path / "r.jsonl", rows)
    md = render_markdown(build_report([path]))
    assert "| v0 |" in md and "int8\\|x" in md and "Failed and skipped" in md
    csv_text = render_csv(build_report([path]))
    header = csv_text.splitlines()[0].split(",")
    assert "compute_p50_ms" in header and "compute_raw_ms" not in header and "env" not in header
    assert len(csv_text.strip().splitlines()) == 4
    assert main_report([path], None, "md") == 0
    assert "# quantbench report" in capsys.readouterr().out
    assert main_report([tmp_path / "none.jsonl"], tmp_path / "x.html", "html") == 2


def test_pareto_front():
    pts = [(1.0, 80.0), (2.0, 90.0), (1.5, 70.0), (3.0, 89.0), (0.5, 60.0)]
    assert pareto_front(pts) == [(0.5, 60.0), (1.0, 80.0), (2.0, 90.0)]


@pytest.mark.slow
def test_real_run_report_has_every_section(tmp_path, real_results):
    html = render_html(build_report([real_results]), tmp_path / "r.html").read_text()
    for section in ("Devices and software", "Latency breakdown", "Accuracy vs latency", "Latency distributions",
                    "Cross-device view", "Failed and skipped cells", "int8-minmax", "onnxruntime"):
        assert section in html


def _row(i: int, **over) -> dict:
    """make_row with overrides (renderer test data, made-up numbers)."""
    picked = {k: over.pop(k) for k in ("model", "host", "precision", "variant", "status") if k in over}
    return dict(make_row(i, **picked), **over)


def test_wrong_types_and_duplicate_files_are_warnings(tmp_path):
    odd = _row(1, precision="int8", variant="int8", top1="high", compute_raw_ms=["x"], env="laptop",
               compute_p50_ms=True)
    path = write_rows(tmp_path / "r.jsonl", [_row(0, variant="fp32"), odd])
    copy = tmp_path / "copy.jsonl"
    copy.write_text(path.read_text())
    report = build_report([path, path, copy])
    assert len(report.rows) == 2  # the same file twice, or a copy of it, is not two runs
    text = " ".join(report.warnings)
    assert "compute_p50_ms, compute_raw_ms, env, top1" in text and "given more than once" in text
    assert "2 cell(s) appear in both" in text
    assert odd["variant"] in render_markdown(report)
    render_html(report, tmp_path / "r.html")  # renders despite the bad fields


def test_reference_row_relative_columns_and_best_marking(tmp_path):
    fp32 = _row(0, variant="fp32", compute_p50_ms=2.0, size_bytes=4000, top1=0.90)
    int8 = _row(1, precision="int8", variant="int8", compute_p50_ms=1.0, size_bytes=1000, top1=0.89,
                exec_precision="int8", int8_op_share=0.5, audit_warning="half the convs ran in fp32",
                speedup_interleaved=1.7)  # the medians alone would say 2.0: the column shows the interleaved 1.7
    md = render_markdown(build_report([write_rows(tmp_path / "r.jsonl", [fp32, int8])]))
    fp32_line = next(ln for ln in md.splitlines() if ln.startswith("| fp32 |"))
    int8_line = next(ln for ln in md.splitlines() if ln.startswith("| int8 |"))
    assert [c.strip() for c in fp32_line.split("|")].count("ref") == 5  # Δ, p50 %, speedup, size %, test-set time %
    # p50 % of FP32 is 100 / the interleaved speedup (59), never the separately timed 50 that contradicts it
    assert "| −1.00 |" in int8_line and "| 59 |" in int8_line and "| 1.70× |" in int8_line and "| 25 |" in int8_line
    assert "int8 (50% int8) ⚠" in int8_line and "half the convs ran in fp32" in md
    html = render_html(build_report([write_rows(tmp_path / "r.jsonl", [fp32, int8])]), tmp_path / "r.html").read_text()
    assert '<tr class="flag">' in html and "half the convs ran in fp32" in html
    # best: only size (int8), which has no noise; top-1 and p50 have no intervals in these rows, so neither
    # stands out from noise; equal columns and single values are not marked
    assert html.count('class="best"') == 1


def test_cross_device_speedups_use_each_devices_own_fp32(tmp_path):
    rows = [_row(0, variant="fp32", host="a", compute_p50_ms=2.0), _row(1, variant="int8", precision="int8", host="a",
                                                                        compute_p50_ms=0.5),
            _row(2, variant="fp32", host="b", compute_p50_ms=10.0),
            _row(3, variant="int8", precision="int8", host="b", compute_p50_ms=8.0, speedup_interleaved=1.3)]
    report = build_report([write_rows(tmp_path / "r.jsonl", rows)])
    md = render_markdown(report)
    assert "## m across devices" in md
    int8_line = next(ln for ln in md.splitlines() if ln.startswith("| int8 | ort-cpu | 1 |"))
    # device a has no interleaved speedup: "—", not 2.0 / 0.5 from separately timed medians
    assert int8_line.endswith("| 0.500 (—) | 8.000 (1.30×) |")
    html = render_html(report, tmp_path / "r.html").read_text()
    assert "speedup over FP32 on each device" in html and "all devices" in html


def test_random_weights_and_failures_are_called_out(tmp_path):
    rows = [_row(0, variant="fp32", weights="random-init", top1=None, top5=None),
            _row(1, variant="int8", precision="int8", status="skipped", error="tensorrt not installed")]
    report = build_report([write_rows(tmp_path / "r.jsonl", rows)])
    html = render_html(report, tmp_path / "r.html").read_text()
    assert "accuracy is meaningless" in html and "tensorrt not installed" in html
    assert "1 skipped: tensorrt not installed" in html
    assert "top-1 agreement with FP32" in html  # the scatter falls back to agreement without labels
    assert "| skipped | m | int8 | ort-cpu | cpu | tensorrt not installed |" in render_markdown(report)


def test_csv_file_and_exit_codes(tmp_path, capsys):
    path = write_rows(tmp_path / "r.jsonl", [_row(0, compute_p50_ms=1.25), _row(1, status="failed")])
    out = tmp_path / "r.csv"
    assert main_report([path], out, "csv") == 0
    import csv

    lines = list(csv.DictReader(out.open()))
    assert [ln["status"] for ln in lines] == ["ok", "failed"] and lines[0]["compute_p50_ms"] == "1.25"
    assert main_report([path], out, "pdf") == 2
    assert main_report([path, tmp_path / "gone.jsonl"], tmp_path / "r.html", "html") == 0
    err = capsys.readouterr().err
    assert "warning: results file not found" in err and "unknown report format 'pdf'" in err


# --- malformed rows -------------------------------------------------------------------------------------------

WRONG = {"text": [["a"], {"a": 1}, 3, True], "number": ["fast", [1], {"a": 1}, True],
         "dict": ["laptop", [1], 3], "bool": ["yes", 1]}
FIELDS = {"text": ["cell_id", "model", "variant", "precision", "runtime", "runtime_label", "device", "error",
                   "weights", "identical_to", "exec_precision", "audit_warning", "stop_reason", "accuracy_note",
                   "speedup_error", "timestamp"],
          "number": ["batch", "top1", "agreement_top1", "compute_p50_ms", "compute_p99_ms", "h2d_p50_ms",
                     "size_bytes", "speedup_interleaved", "iterations", "int8_op_share", "throughput_ips"],
          "dict": ["env", "variant_settings", "dataset", "measure_settings"], "bool": ["timing_valid", "host_memory"]}


@pytest.mark.parametrize("kind", sorted(FIELDS))
def test_a_field_of_the_wrong_type_is_shown_as_missing_and_named(tmp_path, kind, capsys):
    for field in FIELDS[kind]:
        for value in WRONG[kind]:
            bad = dict(_row(1, precision="int8", variant="int8"), **{field: value})
            path = write_rows(tmp_path / "r.jsonl", [_row(0, variant="fp32"), bad])
            for fmt, out in (("md", tmp_path / "r.md"), ("csv", tmp_path / "r.csv")):
                assert main_report([path], out, fmt) == 0, (field, value, fmt)
                err = capsys.readouterr().err
                assert "wrong type shown as missing: " in err and field in err, (field, value, err)
            assert "| fp32 |" in (tmp_path / "r.md").read_text()  # the good row is there
    every = dict(_row(1, precision="int8", variant="int8"), **{f: WRONG[kind][0] for f in FIELDS[kind]})
    report = build_report([write_rows(tmp_path / "r.jsonl", [_row(0, variant="fp32"), every])])
    render_html(report, tmp_path / "r.html")  # all of them at once still render
    assert len(report.rows) == 2


def test_rows_that_cannot_be_read_are_skipped_with_the_line_and_why(tmp_path, capsys):
    good = [_row(0, variant="fp32"), _row(1, precision="int8", variant="int8")]
    lines = [json.dumps(good[0]), "[1, 2]", '"text"', "null", json.dumps(dict(_row(2), schema_version=7)),
             json.dumps(dict(_row(3), schema_version="2")), json.dumps(dict(_row(4), status=["ok"])),
             json.dumps(good[1]), '{"schema_version": 2, "cell_']
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = build_report([path])
    assert [r["variant"] for r in report.rows] == ["fp32", "int8"]
    text = "\n".join(report.warnings)
    for no, why in ((2, "not a result row (an array, not a JSON object)"), (3, "not a result row (a string"),
                    (4, "not a result row (null"),
                    (5, "schema version 7 is not supported (this quantbench reads 1, 2, 3)"),
                    (6, "schema version '2' is not supported"), (7, "status ['ok'] is not a string"),
                    (9, "truncated or corrupt line")):
        assert f"r.jsonl:{no}: {why}" in text, (no, why)
    for fmt in ("html", "md", "csv"):
        assert main_report([path], tmp_path / f"r.{fmt}", fmt) == 0
    assert "r.jsonl:5: schema version 7" in capsys.readouterr().err


def test_when_no_row_can_be_read_the_error_says_why(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(dict(_row(0), schema_version=9)) + "\n[1]\n")
    with pytest.raises(ReportError) as exc:
        build_report([path, tmp_path / "missing.jsonl"])
    message = str(exc.value)
    assert "\n" not in message and "schema version 9" in message and "not a JSON object" in message
    assert "results file not found" in message
    assert main_report([path], tmp_path / "r.html", "html") == 2
    err = capsys.readouterr().err
    assert "error: no result rows could be read from" in err and "schema version 9" in err.splitlines()[-1]
    assert not (tmp_path / "r.html").exists()


# --- atomic writes ----------------------------------------------------------------------------------------------

def test_a_renderer_failing_mid_write_leaves_the_previous_report(tmp_path, monkeypatch):
    import jinja2

    path = write_rows(tmp_path / "r.jsonl", [_row(0, variant="fp32"), _row(1, precision="int8", variant="int8")])
    out = tmp_path / "report.html"
    render_html(build_report([path]), out)
    before = out.read_bytes()
    real = jinja2.Template.generate
    written: list[int] = []

    def dies_midway(self, *args, **kwargs):
        chunks = real(self, *args, **kwargs)
        for _ in range(3):
            yield next(chunks)
        written.extend(p.stat().st_size for p in tmp_path.glob(".report.html.*.tmp"))
        raise RuntimeError("renderer died")

    monkeypatch.setattr(jinja2.Template, "generate", dies_midway)
    with pytest.raises(RuntimeError):
        render_html(build_report([path]), out)
    assert written and written[0] > 0  # the temporary file was open and partly written when it died
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


@pytest.mark.parametrize("fmt", ["md", "csv"])
def test_a_failed_text_report_write_leaves_the_previous_file(tmp_path, monkeypatch, capsys, fmt):
    from quantbench.reports import atomic

    path = write_rows(tmp_path / "r.jsonl", [_row(0, variant="fp32")])
    out = tmp_path / f"report.{fmt}"
    out.write_text("previous good report\n")
    os.chmod(out, 0o640)

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", disk_full)  # after the text went to the temporary file
    assert main_report([path], out, fmt) == 2
    assert "error: cannot write" in capsys.readouterr().err
    assert out.read_text() == "previous good report\n"
    monkeypatch.undo()
    assert main_report([path], out, fmt) == 0
    assert out.read_text() != "previous good report\n" and (out.stat().st_mode & 0o777) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["r.jsonl", out.name])


def test_a_kill_during_writing_leaves_the_previous_report(tmp_path):
    out = tmp_path / "report.html"
    out.write_text("previous good report")
    code = (
        "import os, signal, sys\n"
        "from quantbench.reports import write_atomic\n"
        "def chunks():\n"
        "    yield 'x' * 100000\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "    yield 'never'\n"
        "write_atomic(sys.argv[1], chunks())\n")
    proc = subprocess.run([sys.executable, "-c", code, str(out)], timeout=120, check=False)
    assert proc.returncode == -signal.SIGKILL
    assert out.read_text() == "previous good report"
    leftovers = [p for p in tmp_path.iterdir() if p != out]
    assert all(p.name.startswith(".report.html.") for p in leftovers)  # hidden, next to it, never the report


# --- schema 2 fields --------------------------------------------------------------------------------------------

def _gpu(row: dict, **over) -> dict:
    env = dict(row["env"], gpu=[{"name": "Test GPU", "driver": "1"}])
    return dict(row, device="cuda:0", host_memory=False, env=env, **over)


def test_schema_1_and_2_rows_render_side_by_side(tmp_path):
    v1 = make_v1_row(0, variant="old-fp32", model="m1", measure_settings=None, h2d_raw_ms=None)
    v2 = _row(1, variant="new-fp32", model="m2", measure_settings={"min_iters": 10}, h2d_raw_ms=None)
    report = build_report([write_rows(tmp_path / "r.jsonl", [v1, v2])])
    assert not report.warnings and len(report.rows) == 2
    md = render_markdown(report)
    for name in ("old-fp32", "new-fp32"):
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {name} |"))
        cells = [c.strip() for c in line.split("|")]
        h2d = [c[1] for c in COLUMNS].index("h2d p50 ms") + 1
        assert cells[h2d] == "n/a" and cells[h2d + 1] == "n/a", line  # schema 1 timed a no-op on the CPU
    render_html(report, tmp_path / "r.html")
    csv_lines = render_csv(report).strip().splitlines()
    assert len(csv_lines) == 3 and "stop_reason" in csv_lines[0] and "host_memory" in csv_lines[0]
    assert "measure_settings" not in csv_lines[0] and "h2d_raw_ms" not in csv_lines[0]  # nested or raw: left out


def test_host_copies_read_na_and_missing_values_read_a_dash(tmp_path):
    host = _row(0, variant="fp32", compute_p99_ms=None)  # fewer than 100 iterations: no p99
    gpu = _gpu(_row(1, variant="fp32-gpu"), h2d_p50_ms=0.25, d2h_p50_ms=0.125)
    gpu_missing = _gpu(_row(2, variant="fp16-gpu", precision="fp16"), h2d_p50_ms=None, d2h_p50_ms=None)
    report = build_report([write_rows(tmp_path / "r.jsonl", [host, gpu, gpu_missing])])
    md = render_markdown(report)
    col = {c[1]: i + 1 for i, c in enumerate(COLUMNS)}

    def cells(name):
        return [c.strip() for c in next(ln for ln in md.splitlines() if ln.startswith(f"| {name} |")).split("|")]

    assert cells("fp32")[col["h2d p50 ms"]] == "n/a" and cells("fp32")[col["p99 ms"]] == "—"
    assert cells("fp32-gpu")[col["h2d p50 ms"]] == "0.250" and cells("fp32-gpu")[col["d2h p50 ms"]] == "0.125"
    assert cells("fp16-gpu")[col["h2d p50 ms"]] == "—"  # a device copy that was not measured is not "n/a"
    html = render_html(report, tmp_path / "r.html").read_text()
    assert ">n/a<" in html and "0.250" in html


def test_stacked_bars_leave_out_phases_that_do_not_exist():
    from quantbench.reports.charts import latency_breakdown

    host = _row(0, variant="cpu-row")
    gpu = _gpu(_row(1, variant="gpu-row"), h2d_p50_ms=0.25, d2h_p50_ms=0.125)
    names = [t.name for t in latency_breakdown([host], "t").data]
    assert names == ["I/O (read + preprocess)", "compute"]  # no h2d/d2h segment, not even a zero one
    fig = latency_breakdown([host, gpu], "t")
    h2d = next(t for t in fig.data if t.name == "host→device")
    assert list(h2d.x) == [None, 0.25]


def test_invalid_timing_and_missing_top1_and_speedup_are_explained(tmp_path):
    fp32 = _row(0, variant="fp32", top1=None, accuracy_note="no labels in this dataset")
    short = _row(1, precision="int8", variant="int8", iterations=7, timing_valid=False, stop_reason="max_time",
                 measure_settings={"min_iters": 100, "min_time_s": 1.0, "max_time_s": 0.5}, top1=None,
                 accuracy_note="no labels in this dataset",
                 speedup_error="interleaved FP32 timing failed: out of memory")
    report = build_report([write_rows(tmp_path / "r.jsonl", [fp32, short])])
    flag = "timing not valid: stopped at max_time after 7 of 100 iterations"
    md = render_markdown(report)
    int8_line = next(ln for ln in md.splitlines() if ln.startswith("| int8 |"))
    assert " ⚠" in int8_line and flag in md and "How timing was measured" in md
    notes = [ln for ln in md.splitlines() if ln[:3] in ("1. ", "2. ", "3. ")]
    assert notes == ["1. no labels in this dataset", f"2. {flag}", "3. interleaved FP32 timing failed: out of memory"]
    assert "| — [1] |" in int8_line and "| — [3] |" in int8_line  # top-1 and speedup: a dash and why
    html = render_html(report, tmp_path / "r.html").read_text()
    assert flag in html and 'title="interleaved FP32 timing failed: out of memory"' in html
    assert 'title="no labels in this dataset"' in html and "How timing was measured" in html
    assert "min_iters 100" in html and '<tr class="flag">' in html


def test_chart_strings_are_escaped_for_plotly_markup():
    from quantbench.reports import charts

    link, style = '<a href="https://example.com">x</a>', '<span style="color:red">y</span>'
    rows = [_row(0, model=link, variant=style, host=style), _row(1, variant=link + "%{x}", precision="int8",
                                                                   speedup_interleaved=1.2)]
    figs = [charts.latency_breakdown(rows, f"{link}: t"), charts.accuracy_vs_latency(rows, style),
            charts.latency_distribution(rows, link), charts.accuracy_vs_latency(rows, link, by_device=True),
            charts.cross_device_speedups(link, [style], [{"variant": link, "runtime": style, "batch": 1,
                                                          "devices": {style: {"ref": False, "speedup": 1.2}}}])]
    for fig in figs:
        text = fig.to_json()
        assert "<a" not in text and "<span" not in text and "\\u003ca" not in text.lower()
        assert "\\u003cspan" not in text.lower() and "%{x}\\u003c" not in text
    assert "&lt;a href=\"https://example.com\"&gt;x&lt;/a&gt;" in figs[0].layout.title.text
