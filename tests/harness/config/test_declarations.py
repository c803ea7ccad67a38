"""Each config key is declared once (type, default, bound, help); the README's key table, the flags' help and
the validator all read that declaration, so none of them can drift from it."""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from quantbench.exporters.quantize import QuantSettings
from quantbench.harness.config import ConfigError, ModelConfig, RunConfig, VariantConfig, parse_config
from quantbench.harness.config.docs import declared, flag_help, key_tables, readme_section

README = Path(__file__).resolve().parents[3] / "README.md"


def test_the_readme_key_table_is_the_declarations():
    """Regenerate with `python -m quantbench.harness.config.docs --write README.md`."""
    assert readme_section(README.read_text()) == key_tables()


def test_the_readme_check_sees_a_changed_declaration(monkeypatch):
    """A help text, default or bound edited in the code alone makes the README check fail."""
    readme = readme_section(README.read_text())
    f = next(f for f in dataclasses.fields(RunConfig) if f.name == "eval_samples")
    monkeypatch.setattr(f, "metadata", {**f.metadata, "ge": 2})
    assert readme != key_tables()
    monkeypatch.setattr(f, "default", 3000)
    monkeypatch.setattr(f, "metadata", {**f.metadata, "ge": 1})
    assert readme != key_tables()


@pytest.mark.parametrize("cls", [RunConfig, ModelConfig, VariantConfig, QuantSettings])
def test_every_key_a_table_accepts_is_declared_with_help(cls):
    keys = {f.name for f in declared(cls)}
    accepted = ({"name", "precision", "builder", "calibrator", "onnx"} if cls is VariantConfig  # + QuantSettings'
                else {f.name for f in dataclasses.fields(cls) if f.init})
    assert keys == accepted
    assert all(f.metadata["help"].strip() and "\n" not in f.metadata["help"] for f in declared(cls))


def test_every_flagged_key_gets_its_flag_and_help_from_the_declaration():
    from quantbench.harness.cli import build_parser

    parser = build_parser()
    run = parser._subparsers._group_actions[0].choices["run"]
    by_dest = {a.dest: a for a in run._actions}
    flagged = [f for f in dataclasses.fields(RunConfig) if "flag" in f.metadata]
    assert {f.name for f in flagged} >= {"output", "runtimes", "devices", "batch_sizes", "threads", "eval_samples",
                                         "min_time_s", "max_time_s", "ray", "targets"}
    for f in flagged:
        action = by_dest[f.name]
        assert f.metadata["flag"] in action.option_strings
        assert action.help == flag_help(RunConfig, f.name)
        assert f"run.{f.name}" in action.help and f.metadata["help"] in action.help


def test_a_declared_bound_is_what_the_validator_enforces(monkeypatch):
    """The validator reads the bound from the declaration (no second table of minimums)."""
    doc = {"run": {"cells_per_node": 1, "io_batches": 1}, "models": ["fashion_cnn"], "variants": [{"name": "fp32"}]}
    parse_config(doc)
    f = next(f for f in dataclasses.fields(RunConfig) if f.name == "io_batches")
    monkeypatch.setattr(f, "metadata", {**f.metadata, "ge": 2})
    with pytest.raises(ConfigError, match=r"run.io_batches must be an integer >= 2, not 1"):
        parse_config(doc)


def test_quantization_bounds_live_on_quant_settings_alone(monkeypatch):
    """One statement of each quantization bound: the config and QuantSettings both read it."""
    import quantbench.harness.config.schema as schema
    import quantbench.harness.config.variants as variants

    assert not hasattr(schema, "QUANT_MINIMUM") and not hasattr(variants, "QUANT_MINIMUM")
    f = next(f for f in dataclasses.fields(QuantSettings) if f.name == "calib_batch")
    monkeypatch.setattr(f, "metadata", {**f.metadata, "ge": 8})
    with pytest.raises(ValueError, match="calib_batch must be >= 8, not 4"):
        QuantSettings(calib_batch=4)
    with pytest.raises(ConfigError, match="variant 'q': calib_batch must be an integer >= 8, not 4"):
        parse_config({"models": ["fashion_cnn"], "variants": [{"name": "q", "calib_batch": 4}]})


def test_declared_types_are_the_annotations():
    hints = typing.get_type_hints(RunConfig)
    assert hints["batch_sizes"] == list[int] and hints["timeout_s"] is float
