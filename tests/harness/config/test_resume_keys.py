"""What a config contributes to a row's cell id and fingerprint is unchanged by the config refactor (issue 17):
an existing results folder is still resumed. The hashes below were computed at commit adcab9d, before the
config moved into small modules and variants into typed settings; the static variants' settings hashes were renewed
when calibration moved to ORT's optimised graph (``calib_graph``, issue 20: MinMax first, then the histogram
methods): their ranges changed in the last bits, so their rows must be measured anew, while every other variant's
hash is still adcab9d's."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import pytest

from quantbench.harness.config import load_config, parse_config
from quantbench.harness.measure.cell import MeasureSettings


def _hash(obj: Any) -> str:  # harness.sweep.resume's hash of a fingerprint group
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


MIXED = {
    "run": {"batch_sizes": 8, "runtimes": "ort-cpu", "min_time_s": 0, "interleave_rounds": 0, "eval_samples": 300},
    "models": [{"name": "fashion_cnn", "input_shape": [1, 28, 28], "preprocess": {"mean": 0.5, "std": [0.25]}},
               {"name": "fashion_cnn", "weights": "random", "label": "random"}],
    "variants": [{"name": "fp32"}, {"name": "f16", "precision": "fp16"},
                 {"name": "q", "op_types": ["Conv"], "per_channel": False, "percentile": 99.9,
                  "calibration": "percentile"},
                 {"name": "int8", "calibration": ["minmax", "entropy"], "calib_samples": [16, 64]},
                 {"name": "b", "weight_bits": [8, 4], "op_types": [["Conv"], ["Conv", "Gemm"]]},
                 {"name": "dyn", "mode": "dynamic"},
                 {"name": "qat", "mode": "qat", "qat_steps": 5},
                 {"name": "trt", "precision": "int8", "builder": "trt-calibrate", "calibrator": "entropy",
                  "calib_samples": 32},
                 {"name": "bud", "accuracy_budget": 1.5, "num_bins": 512, "calibration": "entropy"}],
    "runtime_options": {"openvino": {"precision": ["default", "f32"], "streams": 1}, "ort-cpu": {"threads": [1, 2]}},
}
NONE = "74234e98afe7498f"  # no quantization settings
# config -> (timing group, [(variant, cell id, quantization settings group)])
AT_ADCAB9D = {
    "default": ("d93a03d7a6dc317b", [
        ("fp32", "bf447788c349cf8f", NONE), ("fp16", "4b9fbaa222e1872f", NONE),
        ("int8-minmax", "35a0cd02e1b69e11", "d808b75fb821417a"),
        ("int8-entropy", "f1fd94ee42620669", "344b71dbe5e9a4b1"),
        ("int8-percentile", "bfee707f76525647", "410d9517b9863ed4")]),
    "mixed": ("d479f6b5e0cab342", [
        ("fp32", "bf447788c349cf8f", NONE), ("f16", "fee2e8a4b4aecd05", NONE),
        ("q", "c22272bed6642c5e", "7f910cd126cb91c6"),
        ("int8[calibration=minmax,calib_samples=16]", "b4434921fc85e500", "4ddce69618a27fc7"),
        ("int8[calibration=minmax,calib_samples=64]", "174466fa894dc3c1", "96abff04ec846984"),
        ("int8[calibration=entropy,calib_samples=16]", "fdff407a47cf0031", "4e158a55178156a0"),
        ("int8[calibration=entropy,calib_samples=64]", "1ba433b846b42a2f", "465eefbf4ddf9388"),
        ("b[weight_bits=8,op_types=Conv]", "b4cb58e9275d313a", "e070cc2147dde8cd"),
        ("b[weight_bits=8,op_types=Conv+Gemm]", "4a40a05757ea995f", "9b9c3f0947ae76c0"),
        ("b[weight_bits=4,op_types=Conv]", "e35686b6ae101fdf", "d7188bd9582ada6f"),
        ("b[weight_bits=4,op_types=Conv+Gemm]", "4b746baa5390c86b", "527cdef9d9017c01"),
        ("dyn", "b72e88b5168ca463", "40fbc9a21bdcc015"), ("qat", "0818e6076e98ae09", "42e90eec5c789893"),
        ("trt", "48ba8a03ed6776a2", NONE), ("bud", "3eab43ee2265b151", "e0148995a03819df")]),
}


@pytest.mark.parametrize("name", sorted(AT_ADCAB9D))
def test_cell_ids_and_config_fingerprints_are_those_of_existing_results(name):
    from quantbench.harness.sweep.plan import Cell, RuntimeChoice

    cfg = load_config(None) if name == "default" else parse_config(MIXED)
    timing, expected = AT_ADCAB9D[name]
    assert _hash({f.name: getattr(cfg.run, f.name) for f in dataclasses.fields(MeasureSettings)}) == timing
    got = []
    for v in cfg.variants:
        built = v.quant_settings() if v.precision == "int8" and v.builder == "onnx" else None  # as the exporters get it
        cell = Cell(0, cfg.models[0], v, RuntimeChoice("ort-cpu", {"threads": 2}), "cpu", 1, {"source": "x"})
        got.append((v.name, cell.cell_id, _hash(built.to_dict() if built else None)))
    assert got == expected


def test_the_dumped_config_keeps_the_cell_ids():
    """A config written by --dump-config and loaded again identifies the same cells (a sweep resumed from it
    reuses the rows)."""
    from quantbench.harness.config import dump_toml
    from quantbench.harness.config.toml_io import read_toml_text

    cfg = parse_config(MIXED)
    again = parse_config(read_toml_text(dump_toml(cfg)))
    assert [v.identity() for v in again.variants] == [v.identity() for v in cfg.variants]
    assert [v.quant_settings() if v.precision == "int8" else None for v in again.variants] == [
        v.settings for v in cfg.variants]


def test_variant_settings_are_parsed_once_and_handed_on_as_they_are(monkeypatch):
    """Issue 17, finding 4: QuantSettings.from_dict ran in the config, in preparation and twice per TensorRT
    cell. Now the config parses each int8 variant once; the exporters get that object, the subprocesses its
    serialisation, which reads back to an equal object."""
    from quantbench.exporters.quantize import QuantSettings
    from quantbench.harness.sweep.prepare import variant_spec

    calls = []
    original = QuantSettings.from_dict.__func__
    monkeypatch.setattr(QuantSettings, "from_dict", classmethod(lambda cls, d: calls.append(d) or original(cls, d)))
    cfg = parse_config(MIXED)
    int8 = [v for v in cfg.variants if v.precision == "int8"]
    assert len(calls) == len(int8)
    for v in int8:
        for _ in range(3):
            spec = variant_spec(v)
            assert spec.quant is (v.settings if v.builder == "onnx" else None)
        assert v.quant_settings() is v.settings
    assert len(calls) == len(int8)
    for v in int8:  # what a quantize/QAT/sensitivity worker receives, and reads back
        assert original(QuantSettings, v.settings.to_config()) == v.settings
