"""Report rendering: bad inputs, escaping, size, Markdown and CSV."""
from __future__ import annotations

import json

import pytest

from reports import ReportError, build_report, main_report, render_csv, render_html, render_markdown
from reports.charts import pareto_front

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
    evil = make_row(0, model="<script>alert(1)</script>", variant='"><img src=x onerror=alert(2)>')
    html = render_html(build_report([write_rows(tmp_path / "r.jsonl", [evil])]), tmp_path / "r.html").read_text()
    assert "<script>alert(1)</script>" not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_fifty_cells_stay_small_and_self_contained(tmp_path):
    rows = [make_row(i, precision="int8" if i % 2 else "fp32", variant=f"v{i % 10}", host=f"h{i % 2}",
                     n_raw=5000) for i in range(50)]
    out = render_html(build_report([write_rows(tmp_path / "r.jsonl", rows)]), tmp_path / "r.html")
    html = out.read_text()
    assert out.stat().st_size < 4e6
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
