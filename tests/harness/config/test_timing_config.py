"""The [run] keys of the timing guard: defaults that give a real 95% interval, bounds checked in one line."""
from __future__ import annotations

import pytest

from quantbench.harness.config import ConfigError, dump_toml, load_config, parse_config
from quantbench.harness.measure.stats import CI_LEVEL, median_ci

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


def _doc(**run) -> dict:
    return {"run": run, "models": ["fashion_cnn"], "variants": [{"name": "fp32"}]}


def test_defaults_give_a_95_percent_interval_from_the_minimum_rounds():
    run = load_config(None).run
    assert (run.interleave_rounds, run.interleave_max_rounds, run.speedup_rel_ci) == (6, 20, 0.03)
    assert (run.noisy_cpu_frac, run.quiet_wait_s, run.noisy_retries) == (0.10, 0.0, 1)
    assert median_ci(list(range(run.interleave_rounds))).confidence >= CI_LEVEL


@pytest.mark.parametrize(("run", "message"), [
    ({"interleave_max_rounds": 0}, "run.interleave_max_rounds must be an integer >= 1, not 0"),
    ({"speedup_rel_ci": -0.01}, "run.speedup_rel_ci must be a number >= 0, not -0.01"),
    ({"noisy_cpu_frac": "0.1"}, 'run.noisy_cpu_frac must be a finite number, not "0.1"'),
    ({"quiet_wait_s": -1}, "run.quiet_wait_s must be a number >= 0, not -1"),
    ({"noisy_retries": 1.5}, "run.noisy_retries must be an integer, not 1.5"),
    ({"interleave_max_s": float("inf")}, "run.interleave_max_s must be a finite number, not inf"),
    ({"speedup_rel_cl": 0.05}, "unknown key 'speedup_rel_cl' in [run]; did you mean 'speedup_rel_ci'?"),
])
def test_bad_timing_keys_fail_in_one_line(run, message):
    with pytest.raises(ConfigError) as err:
        parse_config(_doc(**run))
    assert str(err.value) == message


def test_timing_keys_round_trip_through_dump_config():
    cfg = parse_config(_doc(interleave_max_rounds=8, speedup_rel_ci=0.05, quiet_wait_s=2.5, noisy_retries=0))
    again = parse_config(tomllib.loads(dump_toml(cfg)))
    assert (again.run.interleave_max_rounds, again.run.speedup_rel_ci, again.run.quiet_wait_s,
            again.run.noisy_retries) == (8, 0.05, 2.5, 0)
