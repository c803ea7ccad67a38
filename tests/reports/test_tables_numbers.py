"""The report's comparison table as data (reports/tables.py), checked against values worked out by hand.

Rows are made up (``make_row``) with round numbers, so every derived column can be stated exactly: Δ in
points, % of FP32, MB of 10⁶ bytes, the reference's "ref" cells, which FP32 row a variant is compared with
(its own device, runtime and batch), the sort order, the "best" marks and the cross-device lines.
"""
from __future__ import annotations

import pytest

from quantbench.reports.console import DISAGREE_NOTE, NOISY_NOTE, Footnotes
from quantbench.reports.model import Report, device_key
from quantbench.reports.tables import (
    COLUMNS,
    best_cells,
    cell_text,
    comparison_groups,
    cross_cell,
    cross_device_table,
)

from .conftest import make_row

SPEC = {key: spec for key, _, spec, _ in COLUMNS}


def _row(i: int, variant: str, precision: str = "int8", **over) -> dict:
    row = make_row(i, variant=variant, precision=precision)
    row.update(over)
    return row


def _fp32(i: int = 0, **over) -> dict:
    base = dict(top1=0.90, agreement_top1=1.0, compute_p50_ms=2.0, compute_p99_ms=2.5, size_bytes=1_000_000,
                eval_wall_s=8.0, exec_precision="float", int8_op_share=0.0)
    return _row(i, "fp32", "fp32", **{**base, **over})


def _group(rows: list[dict]) -> dict[str, dict]:
    (group,) = comparison_groups(Report(rows=rows)).values()
    return {r["variant"]: r for r in group}


# ---- comparison_groups: every derived column --------------------------------------------------------------

def test_variant_columns_relative_to_its_fp32_reference():
    int8 = _row(1, "int8", top1=0.885, agreement_top1=0.97, compute_p50_ms=0.5, compute_p99_ms=0.75,
                size_bytes=250_000, eval_wall_s=2.0, speedup_interleaved=2.5, throughput_ips=2000.0,
                param_count=1234, trainable_params=1200, non_trainable_params=34, quant_time_s=3.5,
                quant_peak_mem_mb=512.0, calib_time_ratio=4.25, exec_precision="int8", int8_op_share=0.75,
                audit_warning="a conv ran in fp32", identical_to="int8-b", weights="trained:w.pt")
    g = _group([_fp32(), int8])
    v = g["int8"]
    assert v["ref"] is False and v["row"] is int8
    assert v["top1"] == pytest.approx(88.5)
    assert v["delta"] == pytest.approx(-1.5)  # (0.885 - 0.90) x 100: no paired comparison in these rows
    assert v["agreement"] == pytest.approx(97.0)
    assert v["p50"] == 0.5 and v["p99"] == 0.75 and v["io_p50"] == 0.1
    assert v["speedup"] == 2.5
    assert v["p50_pct"] == pytest.approx(40.0)  # 100 / 2.5, from the interleaved speedup
    assert v["size_mb"] == 0.25  # 250 000 bytes / 10⁶
    assert v["size_pct"] == pytest.approx(25.0)
    assert v["eval_wall"] == 2.0 and v["eval_wall_pct"] == pytest.approx(25.0)  # 2 s of FP32's 8 s
    assert (v["throughput"], v["params"], v["trainable"], v["non_trainable"]) == (2000.0, 1234, 1200, 34)
    assert (v["quant_time"], v["quant_mem"], v["calib_ratio"]) == (3.5, 512.0, 4.25)
    assert v["ran_as"] == "int8 (75% int8)"
    assert (v["warning"], v["identical_to"], v["weights"]) == ("a conv ran in fp32", "int8-b", "trained:w.pt")
    assert (v["runtime"], v["batch"], v["settings"]) == ("ort-cpu", 1, "minmax, per-channel")
    assert v["notes"] == {"top1": "", "speedup": "", "p50": ""} and v["timing"] == ""


def test_the_reference_row_has_its_own_values_and_no_relative_ones():
    # an FP32 row timed against itself may carry a speedup (1.0): the reference still reads "ref"
    ref = _group([_fp32(speedup_interleaved=1.0, weights=None), _row(1, "int8", speedup_interleaved=2.0)])["fp32"]
    assert ref["ref"] is True
    assert ref["top1"] == pytest.approx(90.0) and ref["agreement"] == pytest.approx(100.0)
    assert ref["size_mb"] == pytest.approx(1.0) and ref["p50"] == 2.0 and ref["eval_wall"] == 8.0
    for key in ("delta", "p50_pct", "speedup", "size_pct", "eval_wall_pct"):
        assert ref[key] is None, key
    assert ref["ran_as"] == "float"  # an int8 share is shown only where int8 ran
    assert ref["settings"] == "" and ref["weights"] == ""


def test_percent_of_fp32_from_the_separate_p50s_only_without_a_speedup():
    g = _group([_fp32(), _row(1, "a", compute_p50_ms=0.5), _row(2, "b", compute_p50_ms=None),
                _row(3, "c", compute_p50_ms=3.0, speedup_interleaved=0.8)])
    assert g["a"]["p50_pct"] == pytest.approx(25.0)  # 100 x 0.5 / 2.0
    assert g["b"]["p50_pct"] is None
    assert g["c"]["p50_pct"] == pytest.approx(125.0)  # 100 / 0.8, not 100 x 3.0 / 2.0 = 150
    assert g["c"]["speedup"] == 0.8


def test_without_a_reference_or_its_values_relative_columns_stay_empty():
    alone = _group([_row(1, "int8", top1=0.8, size_bytes=500, eval_wall_s=1.0, compute_p50_ms=1.0)])["int8"]
    for key in ("delta", "p50_pct", "size_pct", "eval_wall_pct"):
        assert alone[key] is None, key
    assert alone["ref"] is False and alone["top1"] == pytest.approx(80.0) and alone["size_mb"] == pytest.approx(0.0005)
    # a reference without top-1, size or test-set time: nothing to divide by
    g = _group([_fp32(top1=None, size_bytes=0, eval_wall_s=None, compute_p50_ms=None),
                _row(1, "int8", top1=0.8, size_bytes=500, eval_wall_s=1.0, compute_p50_ms=1.0)])
    for key in ("delta", "p50_pct", "size_pct", "eval_wall_pct"):
        assert g["int8"][key] is None, key
    assert g["fp32"]["size_mb"] is None  # 0 bytes: not measured
    # a variant without its own values
    g = _group([_fp32(), _row(1, "int8", top1=None, size_bytes=None, eval_wall_s=None, agreement_top1=None)])
    for key in ("top1", "delta", "size_mb", "size_pct", "eval_wall_pct", "agreement"):
        assert g["int8"][key] is None, key


def test_the_paired_delta_wins_over_the_plain_difference():
    # plain difference (0.885 - 0.90) x 100 = -1.5; the paired comparison on the same images says -1.0 [-2.0, 0.0]
    v = _group([_fp32(), _row(1, "int8", top1=0.885, delta_top1=-0.01, delta_top1_ci95=[-0.02, 0.0],
                              delta_top1_p=0.2)])["int8"]
    assert v["delta"] == pytest.approx(-1.0)
    assert v["delta_text"] == "≈−1.00 ±1.00" and "exact McNemar p = 0.2" in v["delta_title"]
    assert cell_text(v, "delta", SPEC["delta"]) == "≈−1.00 ±1.00"


def test_ran_as_names_the_int8_share_only_for_int8_and_mixed_execution():
    g = _group([_fp32(), _row(1, "a", exec_precision="mixed", int8_op_share=0.5),
                _row(2, "b", exec_precision=None, int8_op_share=0.5), _row(3, "c", exec_precision="int8",
                                                                         int8_op_share=None)])
    assert (g["fp32"]["ran_as"], g["a"]["ran_as"], g["b"]["ran_as"], g["c"]["ran_as"]) == (
        "float", "mixed (50% int8)", "?", "int8")


def test_each_row_is_compared_with_the_fp32_of_its_own_device_runtime_and_batch():
    rows = [_fp32(0, top1=0.90, compute_p50_ms=2.0), _row(1, "int8", top1=0.89, compute_p50_ms=1.0),
            dict(_fp32(2, top1=0.80, compute_p50_ms=8.0), batch=8), dict(_row(3, "int8", top1=0.78,
                                                                               compute_p50_ms=2.0), batch=8),
            dict(_fp32(4, compute_p50_ms=4.0), runtime="ov", runtime_label="ov"),
            dict(_row(5, "int8", compute_p50_ms=1.0), runtime="ov", runtime_label="ov", top1=0.5)]
    other = make_row(6, variant="fp32", host="b")
    other.update(top1=0.1, compute_p50_ms=100.0)
    on_b = make_row(7, variant="int8", precision="int8", host="b")
    on_b.update(top1=0.11, compute_p50_ms=50.0)
    groups = comparison_groups(Report(rows=rows + [other, on_b]))
    assert sorted(groups) == sorted([("m", device_key(rows[0])), ("m", device_key(other))])
    a = groups[("m", device_key(rows[0]))]
    by = {(r["runtime"], r["batch"], r["variant"]): r for r in a}
    assert by[("ort-cpu", 1, "int8")]["delta"] == pytest.approx(-1.0) and by[("ort-cpu", 1, "int8")]["p50_pct"] == 50
    assert by[("ort-cpu", 8, "int8")]["delta"] == pytest.approx(-2.0) and by[("ort-cpu", 8, "int8")]["p50_pct"] == 25
    assert by[("ov", 1, "int8")]["delta"] == pytest.approx(-40.0) and by[("ov", 1, "int8")]["p50_pct"] == 25
    assert [r["ref"] for r in a].count(True) == 3
    (b_int8,) = [r for r in groups[("m", device_key(other))] if r["variant"] == "int8"]
    assert b_int8["delta"] == pytest.approx(1.0) and b_int8["p50_pct"] == 50  # host b's own FP32


def test_a_prebuilt_fp32_file_is_not_the_reference():
    prebuilt = _fp32(1, variant_settings={"builder": "prebuilt", "onnx": "x.onnx"})
    prebuilt["variant"] = "fp32-file"
    g = _group([_fp32(), prebuilt])
    assert g["fp32"]["ref"] is True and g["fp32-file"]["ref"] is False
    assert g["fp32-file"]["p50_pct"] == pytest.approx(100.0)


def test_rows_sort_by_runtime_batch_precision_then_name():
    rows = [dict(_row(1, "b-int8"), runtime_label="z"), dict(_row(2, "a-int8"), batch=8),
            _row(3, "zz-int8"), _row(4, "aa-int8"), _row(5, "z-half", precision="fp16"), _fp32(6),
            dict(_row(7, "none"), batch=None)]
    (group,) = comparison_groups(Report(rows=rows)).values()
    assert [r["variant"] for r in group] == ["none", "fp32", "z-half", "aa-int8", "zz-int8", "a-int8", "b-int8"]


def test_older_generation_rows_are_named_so():
    old = _row(1, "int8", _superseded=True)
    assert set(_group([_fp32(), old])) == {"fp32", "int8 (older generation)"}


def test_notes_say_why_a_value_is_missing_or_not_valid():
    fp32 = _fp32(speedup_error="the reference", compute_p50_ci95=[1.9, 2.1])
    bad = _row(1, "bad", top1=None, accuracy_note="no labels", speedup_interleaved=None,
               speedup_error="FP32 failed", timing_valid=False, stop_reason="max_time", iterations=7, min_iters=100)
    noisy = _row(2, "noisy", speedup_interleaved=2.0, timing_noisy=True, timing_noisy_reason="other processes ...")
    # its own p50s say 2.0 / 0.5 = 4x with narrow intervals; the interleave measured 1.5x [1.4, 1.6]
    odd = _row(3, "odd", compute_p50_ms=0.5, compute_p50_ci95=[0.49, 0.51], speedup_interleaved=1.5,
               speedup_interleaved_ci95=[1.4, 1.6])
    g = _group([fp32, bad, noisy, odd])
    assert g["fp32"]["notes"] == {"top1": "", "speedup": "", "p50": ""}  # "ref": no missing-speedup note
    assert g["bad"]["notes"]["top1"] == "no labels" and g["bad"]["notes"]["speedup"] == "FP32 failed"
    assert g["bad"]["notes"]["p50"] == "timing not valid: stopped at max_time after 7 of 100 iterations"
    assert g["bad"]["timing"] == g["bad"]["notes"]["p50"]
    assert g["noisy"]["timing"] == NOISY_NOTE and g["noisy"]["notes"]["speedup"] == ""
    assert g["odd"]["timing"] == g["odd"]["notes"]["p50"] == DISAGREE_NOTE  # against its FP32 reference's p50


# ---- cell_text -------------------------------------------------------------------------------------------

def test_cells_as_the_report_shows_them():
    fp32 = _fp32(top1_ci95=[0.89, 0.91], throughput_ips=1234.4)
    int8 = _row(1, "int8", top1=0.885, top1_ci95=[0.87, 0.90], speedup_interleaved=2.5,
                speedup_interleaved_ci95=[2.4, 2.6], size_bytes=250_000, exec_precision="int8", int8_op_share=0.5,
                audit_warning="half the convs ran in fp32", compute_p50_ms=0.8,  # 2.0 / 0.8 = 2.5x, as interleaved
                calib_time_ratio=1.43, calib_time_ratio_ci95=[1.391, 1.472])
    plain = _row(2, "plain", top1=0.8, speedup_interleaved=None, exec_precision="int8", int8_op_share=1.0)
    older = _row(3, "older", calib_time_ratio=2.5)  # built before the ratio had an interval
    g = _group([fp32, int8, plain, older])
    text = {v: {k: cell_text(g[v], k, spec) for k, spec in SPEC.items()} for v in g}
    for key in ("delta", "p50_pct", "speedup", "size_pct", "eval_wall_pct"):
        assert text["fp32"][key] == "ref", key
    assert text["fp32"]["top1"] == "90.00 ±1.0"  # half of [89, 91] points
    assert text["fp32"]["throughput"] == "1,234" and text["fp32"]["size_mb"] == "1.000"
    assert text["int8"]["top1"] == "88.50 ±1.5"
    assert text["int8"]["delta"] == "−1.50"  # the plain difference, signed with a true minus
    assert text["int8"]["speedup"] == "2.50× [2.40–2.60]"
    assert text["int8"]["p50_pct"] == "40" and text["int8"]["size_pct"] == "25" and text["int8"]["size_mb"] == "0.250"
    assert text["int8"]["ran_as"] == "int8 (50% int8) ⚠"
    assert text["int8"]["agreement"] == "99.0" and text["int8"]["p50"] == "0.800"
    assert text["plain"]["top1"] == "80.00" and text["plain"]["delta"] == "−10.00"
    assert text["plain"]["speedup"] == "—" and text["plain"]["ran_as"] == "int8 (100% int8)"
    assert text["plain"]["calib_ratio"] == "—" and text["plain"]["variant"] == "plain"
    assert text["int8"]["calib_ratio"] == "1.43× [1.39–1.47]" and text["older"]["calib_ratio"] == "2.50×"


def test_cells_of_a_row_with_unreliable_timing_are_marked():
    fp32 = _fp32()
    noisy = _row(1, "noisy", compute_p50_ms=0.5, throughput_ips=2000.0, timing_noisy=True, speedup_interleaved=4.0)
    g = _group([fp32, noisy])
    n = g["noisy"]
    assert cell_text(n, "p50", "{:.3f}") == "0.500 ⚠"
    assert cell_text(n, "throughput", "{:,.0f}") == "2,000 ⚠"
    assert cell_text(n, "p99", "{:.3f}") == "1.200"  # only p50 and images/s carry the mark
    assert cell_text(n, "speedup", SPEC["speedup"]) == "4.00×"
    assert cell_text(n, "ran_as", "{}") == "float"  # no audit warning


def test_footnote_numbers_go_to_the_noted_columns_only():
    bad = _row(1, "bad", top1=None, accuracy_note="no labels", speedup_interleaved=None, speedup_error="FP32 failed",
               timing_noisy=True)
    g = _group([_fp32(), bad])
    notes = Footnotes()
    assert cell_text(g["bad"], "speedup", SPEC["speedup"], notes) == "— [1]"
    assert cell_text(g["bad"], "top1", SPEC["top1"], notes) == "— [2]"
    assert cell_text(g["bad"], "p50", SPEC["p50"], notes) == "1.010 ⚠ [3]"
    assert cell_text(g["bad"], "throughput", SPEC["throughput"], notes) == "1,000 ⚠"  # not a noted column
    assert cell_text(g["bad"], "top1", SPEC["top1"], notes) == "— [2]"  # the same text keeps its number
    assert notes.texts == ["FP32 failed", "no labels", NOISY_NOTE]
    assert cell_text(g["fp32"], "speedup", SPEC["speedup"], notes) == "ref"
    assert cell_text(g["bad"], "speedup", SPEC["speedup"]) == "—"  # without notes: no number


# ---- best_cells ------------------------------------------------------------------------------------------

def _ranked(rows: list[dict]) -> tuple[list[str], dict]:
    (group,) = comparison_groups(Report(rows=rows)).values()
    return [r["variant"] for r in group], best_cells(group)


def _names(names: list[str], marks: dict, key: str) -> tuple[set[str], bool] | None:
    if key not in marks:
        return None
    chosen, alone = marks[key]
    return {names[i] for i in chosen}, alone


def test_best_is_marked_only_where_it_stands_beyond_the_intervals():
    # the FP32 row paired with itself: Δ 0 [0, 0], which is no candidate (its cell reads "ref")
    fp32 = _fp32(top1=0.90, top1_ci95=[0.89, 0.91], agreement_ci95=[0.99, 1.0], compute_p50_ci95=[1.9, 2.1],
                 delta_top1=0.0, delta_top1_ci95=[0.0, 0.0])
    a = _row(1, "a", top1=0.80, top1_ci95=[0.79, 0.81], agreement_top1=0.9, agreement_ci95=[0.88, 0.92],
             compute_p50_ms=0.5, compute_p50_ci95=[0.49, 0.51], speedup_interleaved=4.0,
             speedup_interleaved_ci95=[3.9, 4.1], size_bytes=250_000, delta_top1=-0.10, delta_top1_ci95=[-0.11, -0.09])
    b = _row(2, "b", top1=0.85, top1_ci95=[0.84, 0.86], agreement_top1=0.95, agreement_ci95=[0.94, 0.985],
             compute_p50_ms=1.0, compute_p50_ci95=[0.98, 1.02], speedup_interleaved=2.0,
             speedup_interleaved_ci95=[1.9, 2.1], size_bytes=500_000, delta_top1=-0.05, delta_top1_ci95=[-0.06, -0.04])
    names, marks = _ranked([fp32, a, b])
    assert _names(names, marks, "top1") == ({"fp32"}, True)  # max, intervals apart
    assert _names(names, marks, "agreement") == ({"fp32"}, True)  # 99 > 98.5: apart, if only just
    assert _names(names, marks, "p50") == ({"a"}, True)  # min
    assert _names(names, marks, "speedup") == ({"a"}, True)  # the reference's "ref" is no candidate
    assert _names(names, marks, "delta") == ({"b"}, True)  # −5 [−6, −4] beats −10 [−11, −9]
    assert _names(names, marks, "size_mb") == ({"a"}, True)  # sizes are exact
    assert _names(names, marks, "size_pct") == ({"a"}, True)
    for key in ("p99", "throughput", "p50_pct"):  # no interval: nothing stands out from noise
        assert key not in marks, key


def test_overlapping_intervals_tie_with_the_best():
    fp32 = _fp32(top1=0.90, top1_ci95=[0.88, 0.92])
    a = _row(1, "a", top1=0.88, top1_ci95=[0.875, 0.885], speedup_interleaved=2.0, speedup_interleaved_ci95=[1.8, 2.2],
             size_bytes=250_000)
    b = _row(2, "b", top1=0.80, top1_ci95=[0.79, 0.81], speedup_interleaved=2.1, speedup_interleaved_ci95=[1.9, 2.3],
             size_bytes=250_000)
    names, marks = _ranked([fp32, a, b])
    assert _names(names, marks, "top1") == ({"fp32", "a"}, False)  # 88 is not above 88.5: they overlap
    assert "speedup" not in marks  # both speed-ups overlap: every value ties, nothing is marked
    assert _names(names, marks, "size_mb") == ({"a", "b"}, False)  # equal sizes tie


def test_a_row_with_noisy_timing_is_no_speed_candidate_but_still_ranks_on_accuracy():
    fp32 = _fp32(top1=0.80, top1_ci95=[0.79, 0.81], compute_p50_ci95=[1.9, 2.1])
    noisy = _row(1, "noisy", top1=0.90, top1_ci95=[0.89, 0.91], compute_p50_ms=0.1, compute_p50_ci95=[0.09, 0.11],
                 speedup_interleaved=20.0, speedup_interleaved_ci95=[19.0, 21.0], timing_noisy=True)
    fast = _row(2, "fast", top1=0.70, top1_ci95=[0.69, 0.71], compute_p50_ms=0.5, compute_p50_ci95=[0.49, 0.51],
                speedup_interleaved=4.0, speedup_interleaved_ci95=[3.9, 4.1])
    invalid = _row(3, "invalid", top1=0.70, top1_ci95=[0.69, 0.71], compute_p50_ms=0.2, compute_p50_ci95=[0.19, 0.21],
                   speedup_interleaved=10.0, speedup_interleaved_ci95=[9.5, 10.5], timing_valid=False)
    names, marks = _ranked([fp32, noisy, fast, invalid])
    assert _names(names, marks, "p50") == ({"fast"}, True)
    assert _names(names, marks, "top1") == ({"noisy"}, True)
    assert "speedup" not in marks  # one candidate left (fast): no best among one


# ---- cross-device table ----------------------------------------------------------------------------------

def _on(host: str, i: int, variant: str, precision: str = "int8", **over) -> dict:
    row = make_row(i, variant=variant, precision=precision, host=host)
    row.update(over)
    return row


def test_cross_device_lines_use_each_devices_own_fp32():
    rows = [_on("a", 0, "z-fp32", "fp32", compute_p50_ms=2.0, compute_p50_ci95=[1.98, 2.02],
                speedup_error="the reference"),
            _on("a", 1, "int8", compute_p50_ms=0.5, speedup_interleaved=3.5, speedup_error=""),
            _on("b", 2, "z-fp32", "fp32", compute_p50_ms=10.0),
            _on("b", 3, "int8", compute_p50_ms=8.0, speedup_interleaved=None, speedup_error="FP32 failed"),
            _on("b", 4, "int8", compute_p50_ms=4.0, speedup_interleaved=2.0, batch=8),
            _on("a", 5, "y-half", "fp16", compute_p50_ms=1.0, speedup_interleaved=1.5, timing_noisy=True),
            # its own p50 says 2.0 / 0.4 = 5x with narrow intervals; interleaved it measured 1.2x [1.1, 1.3]
            _on("a", 6, "int8-b", compute_p50_ms=0.4, compute_p50_ci95=[0.39, 0.41], speedup_interleaved=1.2,
                speedup_interleaved_ci95=[1.1, 1.3]),
            _on("b", 7, "int8-b", compute_p50_ms=9.0),
            _on("a", 8, "zz-fp32", "fp32", runtime_label="a-rt", compute_p50_ms=3.0),  # another runtime: first
            _on("solo", 9, "fp32", "fp32", model="a-one-device")]
    tables = cross_device_table(Report(rows=rows))
    assert list(tables) == ["m"]  # a model measured on one device has no cross-device table
    devices, lines = tables["m"]
    da, db = device_key(rows[0]), device_key(rows[2])
    assert devices == sorted([da, db])
    # by runtime, batch, then FP32, FP16, the rest, then name
    assert [(ln["variant"], ln["runtime"], ln["batch"]) for ln in lines] == [
        ("zz-fp32", "a-rt", 1), ("z-fp32", "ort-cpu", 1), ("y-half", "ort-cpu", 1), ("int8", "ort-cpu", 1),
        ("int8-b", "ort-cpu", 1), ("int8", "ort-cpu", 8)]
    other_rt, fp32, half, int8, int8_b, int8_b8 = lines
    assert set(other_rt["devices"]) == {da} and other_rt["devices"][da]["ref"] is True
    assert fp32["devices"][da] == {"p50": 2.0, "speedup": 1.0, "speedup_ci95": None, "ref": True, "note": "",
                                   "timing": ""}
    assert fp32["devices"][db]["ref"] is True and fp32["devices"][db]["p50"] == 10.0
    assert int8["devices"][da] == {"p50": 0.5, "speedup": 3.5, "speedup_ci95": None, "ref": False, "note": "",
                                   "timing": ""}
    assert int8["devices"][db] == {"p50": 8.0, "speedup": None, "speedup_ci95": None, "ref": False,
                                   "note": "FP32 failed", "timing": ""}
    assert int8_b["devices"][da]["speedup_ci95"] == (1.1, 1.3)
    assert int8_b["devices"][da]["timing"] == DISAGREE_NOTE and int8_b["devices"][db]["p50"] == 9.0
    assert half["devices"][da]["timing"] == NOISY_NOTE and db not in half["devices"]
    assert set(int8_b8["devices"]) == {db}  # batch 8 has no FP32 on b: no "ref" anywhere, its own speedup
    assert int8_b8["devices"][db]["ref"] is False and int8_b8["devices"][db]["speedup"] == 2.0
    # the cells as the report prints them
    assert cross_cell(fp32["devices"][da]) == "2.000 (ref)"
    assert cross_cell(int8["devices"][da]) == "0.500 (3.50×)"
    assert cross_cell(int8["devices"][db]) == "8.000 (—)"
    assert cross_cell(half["devices"][da]) == "1.000 ⚠ (1.50×)"
    assert cross_cell(half["devices"].get(db)) == "—"
    assert cross_cell(int8_b["devices"][da]) == "0.400 ⚠ (1.20× [1.10–1.30])"  # the interval, as every table shows it


def test_cross_device_chart_draws_each_speedups_interval():
    from quantbench.reports.charts import cross_device_speedups

    rows = [_on("a", 0, "z-fp32", "fp32", compute_p50_ms=2.0), _on("b", 1, "z-fp32", "fp32", compute_p50_ms=9.0),
            _on("a", 2, "int8", compute_p50_ms=0.5, speedup_interleaved=3.5, speedup_interleaved_ci95=[3.0, 4.5]),
            _on("b", 3, "int8", compute_p50_ms=4.0, speedup_interleaved=2.0)]
    devices, lines = cross_device_table(Report(rows=rows))["m"]
    fig = cross_device_speedups("m", devices, lines)
    bars = {bar.name: bar for bar in fig.data}
    a = bars[device_key(rows[0])].error_x
    assert list(a.array) == [pytest.approx(1.0)] and list(a.arrayminus) == [pytest.approx(0.5)]
    assert bars[device_key(rows[1])].error_x.array is None  # no interval measured on b: no error bar drawn


def test_cross_device_models_are_listed_in_name_order():
    rows = [_on(h, i, "fp32", "fp32", model=m) for i, (m, h) in enumerate([("z", "a"), ("z", "b"), ("a", "a"),
                                                                          ("a", "b")])]
    assert list(cross_device_table(Report(rows=rows))) == ["a", "z"]
