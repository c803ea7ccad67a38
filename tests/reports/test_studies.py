"""Studies section: accuracy vs calibration size (one line per method) and the bit width × rounding heat map.

The rows are hand-built (renderer test only); tests/harness tests produce real swept rows.
"""
from __future__ import annotations

import pytest

from quantbench.reports import build_report, render_html
from quantbench.reports.model import device_key
from quantbench.reports.studies import (
    bits_rounding_heatmap,
    calibration_curves,
    heatmaps,
    section_html,
)

from .conftest import make_row, write_rows

pytestmark = pytest.mark.report

EVIL = "<b>x</b></script><a href='y'>"


def _swept(i: int, top1: float, base: str = "int8", **sweep) -> dict:
    row = make_row(i, precision="int8", variant=f"{base}[{','.join(f'{k}={v}' for k, v in sweep.items())}]")
    row.update(top1=top1, sweep=dict(sweep), sweep_base=base)
    row["variant_settings"].update(sweep)
    return row


def _fp32(top1: float = 0.90) -> dict:
    row = make_row(100, variant="fp32")
    row["top1"] = top1
    return row


def _key(rows: list[dict]) -> tuple:
    r = rows[0]
    return (r["model"], device_key(r), r["runtime_label"], r["batch"])


def _calibration_rows() -> list[dict]:
    acc = {"minmax": [0.80, 0.85, 0.88], "entropy": [0.70, 0.75, 0.86]}
    rows, i = [_fp32()], 0
    for method, tops in acc.items():
        for n, top1 in zip([1024, 16, 256], [tops[2], tops[0], tops[1]], strict=True):  # out of order on purpose
            rows.append(_swept(i, top1, calibration=method, calib_samples=n))
            i += 1
    return rows


def test_calibration_curves_one_line_per_method_sorted_by_size():
    rows = _calibration_rows()
    fig = calibration_curves(rows, _key(rows))
    lines = {t.name: t for t in fig.data}
    assert set(lines) == {"minmax", "entropy"}
    assert list(lines["minmax"].x) == [16, 256, 1024]
    assert list(lines["minmax"].y) == pytest.approx([80.0, 85.0, 88.0])
    assert list(lines["entropy"].y) == pytest.approx([70.0, 75.0, 86.0])
    assert fig.layout.xaxis.type == "log"
    assert [s.y0 for s in fig.layout.shapes] == pytest.approx([90.0])  # the FP32 line


def test_other_swept_keys_split_the_lines_and_are_escaped():
    rows = [_swept(i, 0.8 + 0.01 * i, calibration="minmax", calib_samples=n, per_channel=pc)
            for i, (n, pc) in enumerate([(16, True), (64, True), (16, EVIL), (64, EVIL)])]
    names = {t.name for t in calibration_curves(rows, _key(rows)).data}
    assert names == {"minmax, per_channel=true",
                     "minmax, per_channel=&lt;b&gt;x&lt;/b&gt;&lt;/script&gt;&lt;a href='y'&gt;"}


def test_heatmap_bits_by_rounding_with_missing_cell():
    rows = [_fp32()]
    acc = {(8, "nearest"): 0.90, (8, "gptq"): 0.91, (4, "nearest"): 0.80, (4, "gptq"): 0.87, (3, "nearest"): 0.60}
    for i, ((bits, rounding), top1) in enumerate(acc.items()):
        rows.append(_swept(i, top1, base="w", weight_bits=bits, weight_rounding=rounding))
    fig = bits_rounding_heatmap(rows, _key(rows))
    hm = fig.data[0]
    assert list(hm.y) == ["8 bits", "4 bits", "3 bits"]  # drawn top to bottom (reversed axis)
    assert fig.layout.yaxis.autorange == "reversed"
    assert list(hm.x) == ["nearest", "gptq"]
    z = [[None if v is None else round(v, 6) for v in line] for line in hm.z]
    assert z == [[90.0, 91.0], [80.0, 87.0], [60.0, None]]
    assert hm.text[2][1] == "—"
    assert "FP32 90.00%" in fig.layout.title.text


def test_bits_by_per_channel_when_rounding_not_swept():
    rows = [_swept(i, 0.9 - 0.01 * i, weight_bits=b, per_channel=pc)
            for i, (b, pc) in enumerate([(8, True), (8, False), (4, True), (4, False)])]
    figs = heatmaps(rows, _key(rows))
    assert len(figs) == 1
    hm = figs[0].data[0]
    assert list(hm.x) == ["true", "false"] and list(hm.y) == ["8 bits", "4 bits"]
    assert [[round(v, 6) for v in line] for line in hm.z] == [[90.0, 89.0], [88.0, 87.0]]
    assert figs[0].layout.xaxis.title.text == "per_channel"


def test_heatmap_labels_escaped():
    rows = [_swept(0, 0.9, base="w", weight_bits=4, weight_rounding=EVIL)]
    hm = bits_rounding_heatmap(rows, _key(rows)).data[0]
    assert list(hm.x) == ["&lt;b&gt;x&lt;/b&gt;&lt;/script&gt;&lt;a href='y'&gt;"]


def test_no_sweep_no_section_and_bad_sweep_field_ignored():
    rows = [_fp32(), make_row(1, precision="int8")]
    assert section_html(rows) == ""
    rows[1]["sweep"] = "not a dict"
    assert section_html(rows) == ""


def test_rerun_row_replaces_earlier_one():
    first = _swept(0, 0.50, calibration="minmax", calib_samples=16)
    again = _swept(0, 0.80, calibration="minmax", calib_samples=16)
    html_text = section_html([first, again, _swept(1, 0.85, calibration="minmax", calib_samples=64)])
    assert "<h2>Studies</h2>" in html_text
    assert "80" in html_text and "[50.0" not in html_text


def test_failed_rows_are_not_drawn():
    bad = _swept(0, 0.5, calibration="minmax", calib_samples=16)
    bad["status"] = "failed"
    assert section_html([bad]) == ""


def test_html_report_has_studies_section(tmp_path):
    rows = _calibration_rows() + [_swept(50 + i, 0.8, base="w", weight_bits=b, weight_rounding="nearest")
                                  for i, b in enumerate([8, 4])]
    report = build_report([write_rows(tmp_path / "results.jsonl", rows)])
    out = render_html(report, tmp_path / "r.html")
    text = out.read_text()
    assert "<h2>Studies</h2>" in text
    assert "accuracy vs calibration-set size" in text and "accuracy by weight bits" in text
    assert EVIL not in text


@pytest.mark.browser
def test_studies_charts_render_in_chromium_without_label_markup(tmp_path):
    from playwright.sync_api import sync_playwright

    from .test_browser import CHROMIUM_ARGS, LINK, MARKUP_IN_PLOTS, STYLE

    rows = [_fp32()] + [_swept(i, 0.8 + 0.01 * i, calibration=f"minmax {LINK}" if i % 2 else f"entropy {STYLE}",
                               calib_samples=n) for i, n in enumerate([16, 64, 256, 1024])]
    rows += [_swept(10 + i, 0.7 + 0.02 * i, base="w", weight_bits=b, weight_rounding=rd)
             for i, (b, rd) in enumerate([(8, "nearest"), (8, f"gptq {STYLE}"), (4, "nearest"), (4, f"gptq {LINK}")])]
    out = render_html(build_report([write_rows(tmp_path / "results.jsonl", rows)]), tmp_path / "r.html")
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.route("**/*", lambda route: route.abort() if not route.request.url.startswith("file:")
                   else route.continue_())
        page.goto(out.as_uri())
        page.wait_for_selector(".js-plotly-plot .main-svg")
        heat_cells = page.locator(".js-plotly-plot .heatmaplayer image, .js-plotly-plot .hm image").count()
        heat_text = page.locator(".js-plotly-plot .heatmaplayer text, .js-plotly-plot .hm text").all_text_contents()
        markup = page.evaluate(MARKUP_IN_PLOTS)
        browser.close()
    assert not errors, errors
    assert heat_cells >= 1
    assert {"70.00", "72.00", "74.00", "76.00"} <= set(heat_text)  # the value written in each cell
    assert markup == []
