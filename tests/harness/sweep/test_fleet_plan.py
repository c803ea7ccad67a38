"""Fleet pieces that need no cluster: resource names, ``devices --ray-resources``, config keys, the
node's data check, and the one-line errors of ``run --ray``."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from quantbench.harness.config import ConfigError, parse_config
from quantbench.harness.sweep.launch.ray_cells import data_mismatch
from quantbench.harness.sweep.resources import (
    SLOT,
    cpu_flag,
    cpu_kind,
    device_kind,
    gpu_kinds,
    node_resources,
    runtime_resource,
    split_runtime_resource,
    target_covers,
)
from tests.harness.conftest import ROOT

BASE = {"models": ["fashion_cnn"], "variants": [{"name": "fp32"}]}


@pytest.mark.parametrize(("model", "kind"), [
    ("Intel(R) Xeon(R) Platinum 8480+", "cpu-intel-xeon-platinum-8480"),
    ("AMD EPYC 7763 64-Core Processor", "cpu-amd-epyc-7763-64-core"),
    ("Intel(R) Core(TM) i7-9700K CPU @ 3.60GHz", "cpu-intel-core-i7-9700k"),
])
def test_cpu_kind_names_the_model(model, kind):
    assert cpu_kind(model) == kind


@pytest.mark.parametrize(("name", "kinds"), [
    ("NVIDIA H100 80GB HBM3", ["gpu-H100-80GB-HBM3", "gpu-H100"]),
    ("NVIDIA A100-SXM4-40GB", ["gpu-A100-SXM4-40GB", "gpu-A100"]),
    ("NVIDIA GeForce RTX 4090", ["gpu-GeForce-RTX-4090"]),
    ("NVIDIA H200", ["gpu-H200"]),
])
def test_gpu_kinds_full_name_first_then_the_chip(name, kinds):
    assert gpu_kinds(name) == kinds


def test_flags_and_runtime_resources():
    assert cpu_flag("avx512_vnni") == cpu_flag("avx512vnni") == "cpu-avx512-vnni"
    assert cpu_flag("amx_int8") == "cpu-amx-int8"
    res = runtime_resource("ort-cuda", "cuda:1")
    assert res == "ort-cuda@cuda:1"
    assert split_runtime_resource(res, ["ort-cpu", "ort-cuda"]) == ("ort-cuda", "cuda:1")
    assert split_runtime_resource("gpu-H100", ["ort-cuda"]) is None
    assert split_runtime_resource("nope@cpu", ["ort-cuda"]) is None


def test_device_kind_follows_the_device():
    env = {"cpu_model": "AMD EPYC 7763 64-Core Processor",
           "gpu": [{"name": "NVIDIA A100-SXM4-40GB"}, {"name": "NVIDIA H100 80GB HBM3"}]}
    assert device_kind(env, "cpu") == "cpu-amd-epyc-7763-64-core"
    assert device_kind(env, "cuda:0") == "gpu-A100-SXM4-40GB"
    assert device_kind(env, "cuda:1") == "gpu-H100-80GB-HBM3"
    assert device_kind({"cpu_model": "x", "gpu": []}, "GPU") == "cpu-x"  # no NVIDIA GPU behind it


def test_a_target_takes_the_devices_of_its_kind():
    """targets = ["cpu-avx512-vnni", "gpu-H100"]: CPU cells on VNNI machines, GPU cells on H100s."""
    env = {"cpu_model": "Intel(R) Xeon(R) Platinum 8480+",
           "gpu": [{"name": "NVIDIA A100-SXM4-40GB"}, {"name": "NVIDIA H100 80GB HBM3"}]}
    assert target_covers(env, "cpu", "cpu-avx512-vnni") and not target_covers(env, "cuda:0", "cpu-avx512-vnni")
    assert target_covers(env, "cuda:1", "gpu-H100") and target_covers(env, "cuda:1", "gpu-H100-80GB-HBM3")
    assert not target_covers(env, "cuda:0", "gpu-H100") and not target_covers(env, "cpu", "gpu-H100")
    assert target_covers(env, "cpu", "rack-3") and target_covers(env, "cuda:0", "rack-3")
    assert target_covers(None, "cuda:0", "gpu-H100") and not target_covers(None, "cpu", "gpu-H100")


@pytest.mark.ort_cpu
def test_node_resources_describe_the_machine(monkeypatch):
    """The resources follow the machine's fingerprint: written out here by hand for a known machine."""
    from quantbench.harness.sweep import environment

    env = {"cpu_model": "Intel(R) Xeon(R) Platinum 8480+", "cpu_flags": ["avx512_vnni", "amx_int8"],
           "gpu": [{"name": "NVIDIA H100 80GB HBM3"}, {"name": "NVIDIA H100 80GB HBM3"},
                   {"name": "NVIDIA A100-SXM4-40GB"}]}
    monkeypatch.setattr(environment, "fingerprint", lambda: env)
    res = node_resources(slots=2)
    assert {k: v for k, v in res.items() if "@" not in k} == {
        "quantbench-slot": 2, "cpu-intel-xeon-platinum-8480": 1, "cpu-avx512-vnni": 1, "cpu-amx-int8": 1,
        "gpu-H100-80GB-HBM3": 2, "gpu-H100": 2, "gpu-A100-SXM4-40GB": 1, "gpu-A100": 1}
    assert res["ort-cpu@cpu"] == 1  # onnxruntime is installed in this environment
    monkeypatch.setattr(environment, "fingerprint", lambda: {"cpu_model": "", "cpu_flags": [], "gpu": []})
    bare = node_resources(slots=1)
    assert {k: v for k, v in bare.items() if "@" not in k} == {"quantbench-slot": 1, "cpu-unknown": 1}


def _cli(*args: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    full = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "quantbench.harness.cli", *args], check=False, capture_output=True,
                          text=True, timeout=timeout, env=full, cwd=ROOT)


@pytest.mark.ort_cpu
@pytest.mark.slow
def test_devices_ray_resources_prints_only_json():
    res = _cli("devices", "--ray-resources", "--slots", "3")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)  # nothing but the JSON on stdout
    assert data[SLOT] == 3 and data["ort-cpu@cpu"] == 1
    bad = _cli("devices", "--ray-resources", "--slots", "0")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "--slots" in bad.stderr


@pytest.mark.parametrize(("run", "message"), [
    ({"targets": ["gpu-H100"]}, "run.targets applies to a Ray cluster only"),
    ({"cells_per_node": 2}, "run.cells_per_node applies to a Ray cluster only"),
    ({"ray": "auto", "cells_per_node": 0}, "run.cells_per_node must be an integer >= 1"),
    ({"ray": "auto", "targets": ["a", "a"]}, "run.targets lists \"a\" twice"),
    ({"ray": "auto", "targets": [""]}, "run.targets must be a list of Ray resource names"),
    ({"ray": "auto", "targets": [3]}, "run.targets must be a list of strings"),
    ({"ray": 1}, "run.ray must be a string"),
    ({"ray": "host :6379"}, "run.ray must be \"auto\", a Ray address"),
])
def test_fleet_config_errors_name_the_key(run, message):
    with pytest.raises(ConfigError, match=None) as info:
        parse_config(dict(BASE, run=run))
    assert str(info.value).startswith(message), str(info.value)


def test_fleet_config_accepts_a_single_target():
    cfg = parse_config(dict(BASE, run={"ray": "auto", "targets": "gpu-H100", "cells_per_node": 2}))
    assert (cfg.run.ray, cfg.run.targets, cfg.run.cells_per_node) == ("auto", ["gpu-H100"], 2)


def test_fleet_keys_do_not_change_the_timing_fingerprint():
    """Where a cell runs is its target (part of its id), not one of its timing settings."""
    from dataclasses import fields

    from quantbench.harness.measure.cell import MeasureSettings

    names = {f.name for f in fields(MeasureSettings)}
    assert not names & {"ray", "targets", "cells_per_node"}


def test_run_without_ray_installed_is_one_line(tmp_path):
    """A fake ``ray`` package that fails to import stands for a machine without Ray."""
    fake = tmp_path / "site" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    res = _cli("run", "--ray", "auto", "-o", str(tmp_path / "out"), "--no-report",
               env={"PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(ROOT)])})
    assert res.returncode == 2
    assert res.stderr.strip() == "error: run.ray is set but Ray is not installed: pip install 'quantbench[ray]'"
    assert not (tmp_path / "out" / "results.jsonl").exists()


def _npz(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, x=(rng.random((20, 4, 4)) * 255).astype(np.uint8), y=np.arange(20) % 2)
    return path


def test_node_refuses_data_that_differs_from_the_drivers(tmp_path):
    from quantbench.calibration_data import open_source

    ours = _npz(tmp_path / "ours.npz", 0)
    theirs = open_source(f"npz:{_npz(tmp_path / 'theirs.npz', 1)}").describe()["fingerprint"]
    same = open_source(f"npz:{ours}").describe()["fingerprint"]
    assert data_mismatch([{"what": "evaluation data", "spec": f"npz:{ours}", "fingerprint": same}]) == ""
    why = data_mismatch([{"what": "evaluation data", "spec": f"npz:{ours}", "fingerprint": theirs}])
    assert why.startswith(f"evaluation data 'npz:{ours}' differs from the driver's")
    assert "same data at the same path" in why
    missing = data_mismatch([{"what": "calibration data", "spec": f"npz:{tmp_path / 'gone.npz'}", "fingerprint": "x"}])
    assert missing.startswith("calibration data") and "cannot be opened here" in missing


def test_a_fleet_cells_id_is_that_of_existing_fleet_results():
    """A fleet cell's id is its local id hashed with its target, as fleet rows were written before the sweep was
    planned once for every launcher (the values were computed by the FleetCell class of launch/ray.py at 89eb63b):
    a fleet results folder still resumes."""
    from quantbench.harness.config import load_config
    from quantbench.harness.sweep.plan import Cell, RuntimeChoice

    cfg = load_config(None)
    here = Cell(0, cfg.models[0], cfg.variants[0], RuntimeChoice("ort-cpu", {"threads": 2}), "cpu", 1, {"source": "x"})
    assert here.cell_id == "bf447788c349cf8f"
    on = {t: dataclasses.replace(here, target=t).cell_id for t in ("gpu-H100", "cpu-amd-epyc-7763-64-core")}
    assert on == {"gpu-H100": "56c308f392b5bb33", "cpu-amd-epyc-7763-64-core": "0f538750d1c0e066"}
