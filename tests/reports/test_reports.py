"""Report rendering: bad inputs, escaping, size, Markdown and CSV."""
from __future__ import annotations

import json

import pytest

from quantbench.reports import ReportError, build_report, main_report, render_csv, render_html, render_markdown
from quantbench.reports.charts import pareto_front

from .conftest import make_row, write_rows

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


def test_real_run_report_has_every_section(tmp_path, real_results):
    html = render_html(build_report([real_results]), tmp_path / "r.html").read_text()
    for section in ("Devices and software", "Latency breakdown", "Accuracy vs latency", "Latency distributions",
                    "Cross-device view", "Failed and skipped cells", "int8-minmax", "onnxruntime"):
        assert section in html


def _row(i: int, **over) -> dict:
    """make_row with overrides (renderer test data, made-up numbers)."""
    return dict(make_row(i, **{k: over.pop(k) for k in ("model", "host", "precision", "variant", "status") if k in over}),
                **over)


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
    assert [c.strip() for c in fp32_line.split("|")].count("ref") == 4  # Δ, p50 %, speedup, size % of this row
    assert "| -1.00 |" in int8_line and "| 50 |" in int8_line and "| 1.70× |" in int8_line and "| 25 |" in int8_line
    assert "int8 (50% int8) ⚠" in int8_line and "half the convs ran in fp32" in md
    html = render_html(build_report([write_rows(tmp_path / "r.jsonl", [fp32, int8])]), tmp_path / "r.html").read_text()
    assert '<tr class="flag">' in html and "half the convs ran in fp32" in html
    # best: top-1 (fp32), p50 and size (int8); equal columns and single values are not marked
    assert html.count('class="best"') == 3


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
