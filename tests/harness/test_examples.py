"""Every shipped example config and every TOML block of the README loads (a recipe that rots is caught here,
not by a user)."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from quantbench.harness.cli import main
from quantbench.harness.config import load_config, parse_config

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))
README_BLOCKS = re.findall(r"^```toml\n(.*?)^```", (ROOT / "README.md").read_text(), re.DOTALL | re.MULTILINE)
# A README block that shows only part of a sweep (no [[variants]]) is completed with this one variant.
MINIMAL_VARIANT = '\n[[variants]]\nname = "fp32"\nprecision = "fp32"\n'
# An example's own file-making steps, as its comments give them ("#   python -m quantbench.exporters.qat --out F").
STEP = re.compile(r"^#\s+((?:python -m quantbench\.\S+|quantbench train) .*)$", re.MULTILINE)
WITH_STEPS = {p.name for p in EXAMPLES if STEP.search(p.read_text())}
STEP_MARKS = [pytest.mark.torch, pytest.mark.slow]  # the steps: a (short) QAT fine-tune, one training step


def _example_params(ids):
    return [pytest.param(v, marks=STEP_MARKS if Path(str(v)).name in WITH_STEPS else ()) for v in ids]


@pytest.fixture(scope="session")
def recipe_root(tmp_path_factory) -> Path:
    """A stand-in checkout root with the examples in examples/ where each example's own steps have run from
    the root, as its comments say; QAT is cut to 2 training steps (the config needs the file, not its accuracy)."""
    root = tmp_path_factory.mktemp("recipes")
    (root / "examples").mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    for path in EXAMPLES:
        text = path.read_text()
        (root / "examples" / path.name).write_text(text)
        for line in STEP.findall(text):
            argv = shlex.split(line)
            if argv[0] == "quantbench":  # quantbench train: one step, a few evaluation images
                argv = ["python", "-m", "quantbench.harness.cli", *argv[1:], "--max-steps", "1", "--eval-samples", "8",
                        "--quiet"]
            elif argv[2] == "quantbench.exporters.qat":
                argv += ["--max-batches", "2"]
            proc = subprocess.run([sys.executable, *argv[1:]], check=False, cwd=root, env=env, capture_output=True,
                                  text=True, timeout=900)
            assert proc.returncode == 0, f"{path.name}: step `{line}` failed: {proc.stdout}{proc.stderr}"
    return root


def test_there_are_examples():
    assert len(EXAMPLES) >= 5 and len(README_BLOCKS) >= 2


@pytest.mark.parametrize("path", _example_params(EXAMPLES), ids=[p.name for p in EXAMPLES])
def test_example_config_parses(path, tmp_path, monkeypatch, request):
    # Data paths come from the environment (folder:$CIFAR10_DIR); prebuilt files must exist to parse: an
    # example that makes them in a step of its own is loaded where that step has run.
    monkeypatch.setenv("CIFAR10_DIR", str(tmp_path))
    if path.name in WITH_STEPS:
        path = request.getfixturevalue("recipe_root") / "examples" / path.name
    cfg = load_config(path)
    assert cfg.models and cfg.variants
    cfg.validate()


def _placeholders(doc: dict, folder: Path) -> None:
    """Empty stand-ins for the files a block names by relative path (labels, weights, prebuilt onnx): the
    config check only asks that they exist. Their content is the recipe's business, not this test's."""
    names = []
    for m in doc.get("models", []):
        names += [m.get("labels"), m.get("weights") if m.get("weights") not in ("random", "builtin") else None]
        for key in ("dataset", "calib_dataset"):
            if isinstance(m.get(key), dict):
                names.append(m[key].get("labels"))
    names += [v.get("onnx") for v in doc.get("variants", [])]
    for name in filter(None, names):
        if not Path(name).is_absolute() and "$" not in name and not name.startswith("~"):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text("")


@pytest.mark.parametrize("source", _example_params(["README.md"] + [f"examples/{p.name}" for p in EXAMPLES]))
def test_every_toml_block_and_example_loads_with_dump_config(source, tmp_path, monkeypatch, capsys, request):
    """`quantbench run FILE --dump-config` accepts every TOML block of the README and every example as
    written (README fragments without [[variants]] get one fp32 variant), and what it prints loads again."""
    monkeypatch.setenv("CIFAR10_DIR", str(tmp_path))
    monkeypatch.setenv("IMAGENET_VAL", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    texts = README_BLOCKS if source == "README.md" else [(ROOT / source).read_text()]
    for i, text in enumerate(texts):
        doc = tomllib.loads(text)  # invalid TOML fails here, naming the block
        if "variants" not in doc:
            text += MINIMAL_VARIANT
        if source == "README.md":
            folder = tmp_path / f"block{i}"
            folder.mkdir()
            _placeholders(doc, folder)
            path = folder / "sweep.toml"
            path.write_text(text)
        elif Path(source).name in WITH_STEPS:  # where its own steps made the files it names
            path = request.getfixturevalue("recipe_root") / source
        else:  # an example's relative paths point from examples/: load it where it is
            path = ROOT / source
        capsys.readouterr()
        code = main(["run", str(path), "--dump-config"])
        out, err = capsys.readouterr()
        assert code == 0, f"{source} block {i}: {err}"
        dumped = parse_config(tomllib.loads(out), "dump")
        assert [m.name for m in dumped.models] == [m.name for m in load_config(path).models]
