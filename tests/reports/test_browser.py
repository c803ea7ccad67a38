"""The generated report opens offline in a real headless Chromium, renders its charts, raises no JS errors."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from quantbench.reports import build_report, render_html

from .conftest import make_row, write_rows

pytestmark = [pytest.mark.browser, pytest.mark.report]
LINK = '<a href="https://example.com">x</a>'
STYLE = '<span style="color:red">y</span>'
# Finds what Plotly's label markup would have made of the payloads inside the charts (SVG <a>, styled tspans).
MARKUP_IN_PLOTS = """() => {
  const found = [];
  for (const plot of document.querySelectorAll('.js-plotly-plot')) {
    for (const el of plot.querySelectorAll('a')) found.push('a: ' + el.outerHTML.slice(0, 120));
    for (const el of plot.querySelectorAll('[style]')) {
      if (/color:\\s*red|fill:\\s*red/i.test(el.getAttribute('style'))) found.push('styled: ' + el.outerHTML.slice(0, 120));
    }
  }
  return found;
}"""  # noqa: E501 - JavaScript, one statement a line
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.mark.slow
def test_report_renders_in_chromium(tmp_path, real_results):
    from playwright.sync_api import sync_playwright

    # A second device (made-up numbers: this exercises the renderer, not a measurement).
    other = [make_row(99, model="fashion_cnn", host="edge-box", variant="fp32"),
             dict(make_row(96, model="fashion_cnn", host="edge-box", variant="int8-minmax", precision="int8"),
                  compute_p50_ms=0.4, exec_precision="mixed", int8_op_share=0.6,
                  audit_warning="2 of 5 compute nodes ran in fp32")]
    evil = make_row(98, model="<script>window.__pwned=1</script>", variant="<img src=x onerror=window.__pwned=2>")
    # Plotly label markup: links and styles in a model name, a variant name, a runtime label and a host name.
    marked = [make_row(95, model=f"net {LINK}", variant=f"v {STYLE}", host=f"host {STYLE}"),
              dict(make_row(94, model="fashion_cnn", host=f"box {LINK}", variant=f"int8 {LINK}", precision="int8"),
                   runtime_label=f"ort {STYLE}", speedup_interleaved=1.5),
              dict(make_row(93, model="fashion_cnn", host=f"box {LINK}", variant="fp32"), runtime_label=f"ort {STYLE}")]
    failed = make_row(97, status="failed")
    extra = write_rows(tmp_path / "other.jsonl", [*other, evil, *marked, failed])
    out = render_html(build_report([real_results, extra]), tmp_path / "report.html")
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.route("**/*", lambda route: route.abort() if not route.request.url.startswith("file:")
                   else route.continue_())
        page.goto(out.as_uri())
        page.wait_for_selector(".js-plotly-plot .main-svg")
        charts = page.locator(".js-plotly-plot")
        n_charts = charts.count()
        rendered = page.locator(".js-plotly-plot .main-svg").count()
        pwned = page.evaluate("window.__pwned")
        text = page.inner_text("body")
        markup = page.evaluate(MARKUP_IN_PLOTS)
        plot_text = " ".join(page.locator(".js-plotly-plot").all_text_contents())
        # A hover label: the tooltip of the first bar of the chart whose labels carry the payloads.
        chart = page.locator(".js-plotly-plot", has_text=re.compile(r"net .*: where the time goes")).first
        bar = chart.locator(".barlayer .point path").first
        bar.hover(force=True)
        page.wait_for_selector(".hoverlayer .hovertext")
        hover_text = " ".join(page.locator(".hoverlayer").all_text_contents())
        markup += page.evaluate(MARKUP_IN_PLOTS)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        browser.close()
    assert not errors, errors
    assert pwned is None, "text from results ran as script"
    assert n_charts >= 7 and rendered >= n_charts  # 3 per (model, device) + cross-device
    assert "<script>window.__pwned=1</script>" in text  # shown as text
    assert "Cross-device" in text and "int8-minmax" in text and "boom <b>x</b>" in text
    assert not markup, markup  # no link and no styled text made from result strings inside the plots
    for payload in (LINK, STYLE):  # shown literally: titles, tick labels, legends, scatter text
        assert payload in plot_text
    assert f"v {STYLE}" in hover_text
