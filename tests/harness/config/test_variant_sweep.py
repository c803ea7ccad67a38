"""Swept [[variants]] keys: expansion, names, --variants, --dump-config, and rows that say what ran."""
from __future__ import annotations

import pytest

from quantbench.harness.config import (
    ConfigError,
    dump_toml,
    parse_config,
    select_variants,
    split_names,
)
from quantbench.harness.results.store import read_rows
from tests.harness.conftest import run_cli, write_config

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib


def _cfg(*variants):
    return parse_config({"models": ["fashion_cnn"], "variants": list(variants)})


def test_lists_expand_to_every_combination_with_readable_unique_names():
    cfg = _cfg({"name": "fp32"},
               {"name": "int8", "calibration": ["minmax", "entropy"], "calib_samples": [16, 64, 256, 1024],
                "per_channel": True, "op_types": ["Conv"]})
    names = [v.name for v in cfg.variants]
    assert len(names) == 1 + 8 == len(set(names))
    assert names[1] == "int8[calibration=minmax,calib_samples=16]"
    assert "int8[calibration=entropy,calib_samples=64]" in names
    v = next(v for v in cfg.variants if v.name == "int8[calibration=entropy,calib_samples=64]")
    assert v.sweep == {"calibration": "entropy", "calib_samples": 64} and v.base_name == "int8"
    assert v.quant == {"calibration": "entropy", "calib_samples": 64, "per_channel": True, "op_types": ["Conv"]}
    assert v.precision == "int8" and cfg.variants[0].sweep == {} and cfg.variants[0].base_name is None


def test_list_valued_keys_sweep_only_as_lists_of_lists_and_bools_read_as_toml():
    cfg = _cfg({"name": "q", "op_types": [["Conv"], ["Conv", "Gemm"]], "exclude_nodes": ["a"],
                "per_channel": [True, False], "weight_bits": [8, 4]})
    names = [v.name for v in cfg.variants]
    assert names[:2] == ["q[op_types=Conv,per_channel=true,weight_bits=8]",
                         "q[op_types=Conv,per_channel=true,weight_bits=4]"]
    assert "q[op_types=Conv+Gemm,per_channel=false,weight_bits=4]" in names
    assert all(v.quant["exclude_nodes"] == ["a"] and "exclude_nodes" not in v.sweep for v in cfg.variants)


def test_identity_and_cell_ids_do_not_depend_on_the_sweep_bookkeeping():
    swept = _cfg({"name": "q", "calib_samples": [64]}).variants[0]
    plain = _cfg({"name": "q[calib_samples=64]", "calib_samples": 64}).variants[0]
    assert swept.name == plain.name and swept.identity() == plain.identity()
    assert swept.sweep == {"calib_samples": 64} and plain.sweep == {}


@pytest.mark.parametrize("table, expected", [
    ({"name": "q", "calib_samples": []}, "calib_samples is an empty list"),
    ({"name": "q", "calibration": ["minmax", "minmax"]}, "lists \"minmax\" twice"),
    ({"name": "q", "calib_samples": [16, "64"]}, "variant 'q[calib_samples=64]': calib_samples must be an integer"),
    ({"name": "q", "weight_bits": [8, 5]}, "variant 'q[weight_bits=5]': weight_bits must be 8, 4 or 3"),
    ({"name": "q", "op_types": [["Conv"], "Gemm"]}, "op_types mixes lists and names"),
    ({"name": "q", "precision": ["fp16", "int8"]}, "precision cannot be swept"),
    ({"name": "q", "calibraton": ["minmax"]}, "did you mean 'calibration'"),
])
def test_bad_sweeps_are_one_line_errors(table, expected):
    with pytest.raises(ConfigError) as err:
        _cfg(table)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_expanded_names_must_stay_unique():
    with pytest.raises(ConfigError, match=r"duplicate variant name\(s\): q\[calib_samples=64\]"):
        _cfg({"name": "q", "calib_samples": [16, 64]}, {"name": "q[calib_samples=64]", "calib_samples": 64})


def test_select_by_base_or_expanded_name():
    cfg = _cfg({"name": "fp32"}, {"name": "q", "calibration": ["minmax", "entropy"], "calib_samples": [16, 64]})
    assert split_names("fp32, q[calibration=entropy,calib_samples=16] ,q") == [
        "fp32", "q[calibration=entropy,calib_samples=16]", "q"]
    assert [v.name for v in select_variants(cfg.variants, ["q"])] == [v.name for v in cfg.variants[1:]]
    picked = select_variants(cfg.variants, split_names("q[calibration=entropy,calib_samples=16],fp32"))
    assert [v.name for v in picked] == ["fp32", "q[calibration=entropy,calib_samples=16]"]
    with pytest.raises(ConfigError, match=r"unknown variant\(s\) q\[calibration=entropi"):
        select_variants(cfg.variants, ["q[calibration=entropi,calib_samples=16]"])


def test_dump_config_shows_the_expansion_and_round_trips():
    cfg = _cfg({"name": "q", "calibration": ["minmax", "entropy"], "op_types": [["Conv"], ["Gemm"]]},
               {"name": "d", "mode": "dynamic"})
    text = dump_toml(cfg)
    assert "# q[calibration=entropy,op_types=Gemm] (swept: calibration, op_types)" in text
    again = parse_config(tomllib.loads(text))
    assert again.to_dict() == cfg.to_dict()
    assert [(v.name, v.sweep, v.base_name, v.quant) for v in again.variants] == \
           [(v.name, v.sweep, v.base_name, v.quant) for v in cfg.variants]


SWEEP = """
[[variants]]
name = "fp32"

[[variants]]
name = "w"
calib_samples = 32
weight_bits = [8, 4, 3]

[[variants]]
name = "dyn"
mode = "dynamic"
"""


@pytest.mark.ort_cpu
@pytest.mark.slow
def test_cli_rows_carry_the_sweep_sizes_and_what_ran(tmp_path, shared_cache):
    cfg = write_config(tmp_path / "c.toml", tmp_path / "out", SWEEP)
    cfg.write_text(cfg.read_text().replace("report = false", "report = false\ninterleave_rounds = 0"))
    dump = run_cli("run", str(cfg), "--variants", "w", "--dump-config", cache=shared_cache)
    assert dump.returncode == 0, dump.stderr
    assert "# w[weight_bits=4] (swept: weight_bits)" in dump.stdout and 'name = "fp32"' not in dump.stdout
    proc = run_cli("run", str(cfg), cache=shared_cache)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    rows = {r["variant"]: r for r in read_rows(tmp_path / "out" / "results.jsonl").rows}
    assert set(rows) == {"fp32", "w[weight_bits=8]", "w[weight_bits=4]", "w[weight_bits=3]", "dyn"}
    fp32, w8, w4, w3, dyn = (rows[k] for k in
                             ("fp32", "w[weight_bits=8]", "w[weight_bits=4]", "w[weight_bits=3]", "dyn"))
    for r in (w8, w4, w3):
        assert r["sweep_base"] == "w" and r["sweep"] == {"weight_bits": r["variant_settings"]["weight_bits"]}
    assert fp32["sweep"] == {} and fp32["sweep_base"] is None and fp32["packed_size_bytes"] is None
    # 8-bit and real INT4 files are packed already; simulated 3-bit weights are INT8 in the file.
    assert w8["variant_settings"]["weight_storage"] == "int8" and w8["packed_size_bytes"] == w8["size_bytes"]
    assert w3["variant_settings"]["weight_storage"] == "simulated" and w3["packed_size_bytes"] < w3["size_bytes"]
    assert w3["size_bytes"] == w8["size_bytes"]
    assert w4["variant_settings"]["weight_storage"] == "int4"
    # ORT CPU runs the INT4 file (opset 21 DequantizeLinear); the audit says what that was.
    assert w4["status"] == "ok", w4["error"]
    assert w4["size_bytes"] == w4["packed_size_bytes"] < w8["size_bytes"]
    assert w4["exec_precision"] and w4["audit_note"]
    for r in (w8, w3, dyn):
        assert r["status"] == "ok", r["error"]
        assert r["top1"] > 0.5
    assert w8["exec_precision"] in ("int8", "mixed") and w8["int8_op_share"] > 0.5
    assert dyn["variant_settings"]["mode"] == "dynamic" and dyn["variant_settings"]["calibration"] is None
    assert dyn["exec_precision"] == "int8" and dyn["int8_op_share"] == 1.0
    assert dyn["size_bytes"] < 0.3 * fp32["size_bytes"] and dyn["quant_time_s"] > 0


def test_a_table_with_only_a_preset_name_is_that_preset():
    """``name = "int8-entropy"`` alone ran in FP32 under that name (no precision, no quantization key): a table
    that gives only a preset's name is the default sweep's preset, as the API's variant names are."""
    cfg = _cfg({"name": "int8-entropy"}, {"name": "fp16"}, {"name": "fp32"})
    got = {v.name: (v.precision, v.quant.get("calibration")) for v in cfg.variants}
    assert got == {"int8-entropy": ("int8", "entropy"), "fp16": ("fp16", None), "fp32": ("fp32", None)}


@pytest.mark.parametrize("name", ["int8-mine", "INT8", "fp16-small", "trt-int8"])
def test_a_bare_name_that_promises_another_precision_is_refused(name):
    with pytest.raises(ConfigError, match=f"variant '{name}' gives no precision and no quantization key, so it "
                                          "would run in FP32"):
        _cfg({"name": name})


def test_a_bare_plain_name_stays_fp32():
    (v,) = _cfg({"name": "baseline"}).variants
    assert v.precision == "fp32" and not v.quant
