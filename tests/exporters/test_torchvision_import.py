"""Exports build torchvision's networks without importing torchvision's ops (torch._dynamo): the same ONNX
bytes, 160 MiB less in the export process, and a later ``import torchvision`` still gets the whole package."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.torch, pytest.mark.slow]

_EXPORT = """
import hashlib, json, sys, warnings
from pathlib import Path
if sys.argv[2] == "whole":
    import torchvision  # the ordinary import first: model_builder then uses it
from quantbench.exporters.registry import resolve_model
from quantbench.exporters.torch_export import export_onnx
out = {}
for name in sys.argv[3].split(","):
    path = Path(sys.argv[1]) / f"{sys.argv[2]}-{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(resolve_model(name, weights="random", input_shape=(3, 32, 32)), path)
    out[name] = hashlib.sha256(path.read_bytes()).hexdigest()
out["dynamo"] = "torch._dynamo" in sys.modules
out["left"] = sorted(m for m in sys.modules if m == "torchvision" or m.startswith("torchvision."))
import torchvision
out["whole_after"] = hasattr(torchvision, "__version__") and hasattr(torchvision.models, "resnet18")
print(json.dumps(out))
"""

NETS = "resnet18,mobilenet_v2,mobilenet_v3_small,squeezenet1_0,shufflenet_v2_x1_0"


def _export(tmp_path, mode: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _EXPORT, str(tmp_path), mode, NETS], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_exports_are_the_same_bytes_without_torchvisions_ops(tmp_path):
    alone, whole = _export(tmp_path, "alone"), _export(tmp_path, "whole")
    for name in NETS.split(","):
        assert alone[name] == whole[name], name
    assert not alone["dynamo"] and whole["dynamo"]  # what the ordinary import costs: torch._dynamo (+160 MiB)
    assert alone["left"] == []  # every torchvision module the builders loaded was forgotten again
    assert alone["whole_after"] and whole["whole_after"]
