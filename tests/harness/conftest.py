"""Helpers for end-to-end CLI tests: a tiny, fast sweep on the shipped model and real data (the session's
artifact cache, ``shared_cache``, is defined in tests/conftest.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FAST_RUN = """
[run]
output = "{out}"
runtimes = ["ort-cpu"]
batch_sizes = {batches}
eval_samples = {eval_samples}
warmup_iters = 2
min_iters = 10
min_time_s = 0.05
max_time_s = 2.0
io_batches = 3
report = false
"""


def write_config(path: Path, out: Path, variants: str, batches: str = "[1]", eval_samples: int = 200,
                 models: str = '[[models]]\nname = "fashion_cnn"\n') -> Path:
    path.write_text(FAST_RUN.format(out=out, batches=batches, eval_samples=eval_samples)
                    + "\n" + models + "\n" + variants)
    return path


def run_cli(*args: str, cache: Path, timeout: int = 600, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, QUANTBENCH_CACHE=str(cache),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "quantbench.harness.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=kw.get("cwd", ROOT))
