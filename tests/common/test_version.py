"""The version is written once (quantbench/__init__.py); the package metadata and the CLI read it."""
from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import quantbench

ROOT = Path(__file__).resolve().parents[2]


def test_version_is_written_in_one_place():
    ours = [ROOT / "quantbench", ROOT / "harness", ROOT / "exporters", ROOT / "runtimes", ROOT / "reports",
            ROOT / "calibration_data"]  # tests may fake other packages' versions
    written = [p for d in ours for p in d.rglob("*.py")
               if re.search(r"^__version__\s*=", p.read_text(errors="replace"), re.M)]
    assert [p.relative_to(ROOT).as_posix() for p in written] == ["quantbench/__init__.py"]
    assert not re.search(r'^version\s*=\s*"', (ROOT / "pyproject.toml").read_text(), re.M)


def test_metadata_and_cli_report_that_version():
    assert importlib.metadata.version("quantbench") == quantbench.__version__
    out = subprocess.run([sys.executable, "-m", "quantbench.harness.cli", "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ["quantbench", quantbench.__version__]
