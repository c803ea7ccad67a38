"""Spec forms (string, dict, ~ and $VARS), describe() fields, fingerprints, npz float data."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from quantbench.calibration_data import BatchReader, DataError, Preprocess, open_source, write_idx

REQUIRED = {"fingerprint", "fingerprint_method", "class_index", "max_label", "n_classes_present", "split"}


def folder(root, classes=("a", "b"), n=2):
    Image = pytest.importorskip("PIL.Image")
    for split in ("train", "test"):
        for k, cls in enumerate(classes):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(np.full((4, 4, 3), 10 * k + i, np.uint8)).save(root / split / cls / f"{i}.png")
    return root


def test_dict_spec_and_environment_variables(tmp_path, monkeypatch):
    folder(tmp_path / "data", classes=("cat", "dog"))
    monkeypatch.setenv("QB_TEST_DATA", str(tmp_path))
    spec = {"spec": "folder:$QB_TEST_DATA/data", "classes": ["dog", "cat"]}
    src = open_source(spec)
    d = src.describe()
    assert d["class_map"] == {"cat": 1, "dog": 0} and d["spec"] == "folder:$QB_TEST_DATA/data"
    assert d["path"] == str(tmp_path / "data")
    assert open_source({"spec": "folder:${QB_TEST_DATA}/data"}).describe()["class_index"] == "sorted-folder-names"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert open_source("folder:~/data").describe()["path"] == str(tmp_path / "data")
    monkeypatch.delenv("QB_TEST_DATA")
    with pytest.raises(DataError, match="environment variable QB_TEST_DATA is not set"):
        open_source(spec)


@pytest.mark.parametrize("spec, message", [
    ({"spec": "folder:/x", "clases": ["a"]}, "unknown data source key 'clases'; did you mean 'classes'"),
    ({"classes": ["a"]}, "needs 'spec'"),
    ({"spec": "folder:/x", "classes": "a"}, "classes must be a non-empty list"),
    ({"spec": "folder:/x", "classes": ["a"], "labels": "f.txt"}, "either classes or labels"),
    ({"spec": "npz:/x.npz", "classes": ["a"]}, "apply to folder: sources only"),
    (42, "a data source is a string or a table"),
])
def test_bad_dict_specs(spec, message):
    with pytest.raises(DataError, match=message):
        open_source(spec)


def test_every_source_describes_fingerprint_and_class_index(tmp_path):
    sub = open_source("fashion-mnist-subset").describe()
    assert REQUIRED <= sub.keys() and sub["class_index"] == "numeric-labels" and sub["max_label"] == 9
    assert "MANIFEST" in sub["fingerprint_method"] and sub["n_classes_present"] == 10
    assert open_source("fashion-mnist-subset").describe()["fingerprint"] == sub["fingerprint"]
    if importlib.util.find_spec("sklearn"):
        dig = open_source("digits").describe()
        assert REQUIRED <= dig.keys() and dig["fingerprint"] != sub["fingerprint"]
    fold = open_source(f"folder:{folder(tmp_path)}").describe()
    assert REQUIRED <= fold.keys() and fold["class_index"] == "sorted-folder-names"


def test_fingerprint_changes_when_a_file_changes(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    root = folder(tmp_path / "f")
    before = open_source(f"folder:{root}").describe()["fingerprint"]
    assert open_source(f"folder:{root}").describe()["fingerprint"] == before
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (9, 9, 3), np.uint8)).save(root / "test" / "a" / "0.png")
    assert open_source(f"folder:{root}").describe()["fingerprint"] != before
    # the class mapping is part of the data used: same files, other indices
    relabelled = open_source({"spec": f"folder:{root}", "classes": ["b", "a"]}).describe()["fingerprint"]
    assert relabelled != open_source(f"folder:{root}").describe()["fingerprint"]

    idx = tmp_path / "idx"
    idx.mkdir()
    for prefix in ("train", "t10k"):
        write_idx(idx / f"{prefix}-images-idx3-ubyte.gz", np.zeros((4, 2, 2), np.uint8))
        write_idx(idx / f"{prefix}-labels-idx1-ubyte.gz", np.arange(4))
    a = open_source(f"idx:{idx}").describe()["fingerprint"]
    write_idx(idx / "t10k-images-idx3-ubyte.gz", np.ones((4, 2, 2), np.uint8))
    assert open_source(f"idx:{idx}").describe()["fingerprint"] != a

    np.savez(tmp_path / "d.npz", x=np.zeros((10, 2, 2), np.uint8), y=np.arange(10) % 2)
    b = open_source(f"npz:{tmp_path / 'd.npz'}").describe()["fingerprint"]
    np.savez(tmp_path / "d.npz", x=np.ones((10, 2, 2), np.uint8), y=np.arange(10) % 2)
    assert open_source(f"npz:{tmp_path / 'd.npz'}").describe()["fingerprint"] != b


def test_npz_floats_in_minus_one_to_one_pass_unchanged(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (40, 5, 5)).astype(np.float32)
    np.savez(tmp_path / "f.npz", x_train=x[:20], y_train=np.arange(20) % 2, x_test=x[20:], y_test=np.arange(20) % 2)
    src = open_source(f"npz:{tmp_path / 'f.npz'}")
    assert src.describe()["pixels"] == "float32 (taken as already scaled)"
    np.testing.assert_array_equal(src.evaluation.read(np.arange(20)), x[20:])
    reader = BatchReader(src.evaluation, Preprocess(), np.arange(20), 8)
    got = np.concatenate([b for b, _, n in reader])
    np.testing.assert_array_equal(got[:, 0], x[20:])  # not clipped at 0, not divided by 255


def test_npz_uint8_unchanged_and_unit_floats_give_the_same_inputs(tmp_path):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (30, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "u.npz", x=pixels, y=np.arange(30) % 3)
    np.savez(tmp_path / "f.npz", x=pixels / 255.0, y=np.arange(30) % 3)
    pre = Preprocess.from_dict({"mean": [0.5], "std": [0.25]})
    u, f = open_source(f"npz:{tmp_path / 'u.npz'}"), open_source(f"npz:{tmp_path / 'f.npz'}")
    idx = np.arange(len(u.evaluation))
    from_u8 = pre.apply(u.evaluation.read(idx))
    np.testing.assert_allclose(from_u8[:, 0], (u.evaluation.read(idx) / 255 - 0.5) / 0.25, atol=1e-6)
    np.testing.assert_allclose(pre.apply(f.evaluation.read(idx)), from_u8, atol=1e-5)
    np.savez(tmp_path / "bad.npz", x=np.full((4, 2, 2), 300), y=np.zeros(4))
    with pytest.raises(DataError, match="integer images must be pixels in 0..255"):
        open_source(f"npz:{tmp_path / 'bad.npz'}")
    np.savez(tmp_path / "nan.npz", x=np.full((4, 2, 2), np.nan), y=np.zeros(4))
    with pytest.raises(DataError, match="NaN"):
        open_source(f"npz:{tmp_path / 'nan.npz'}")
    np.savez(tmp_path / "neg.npz", x=np.zeros((4, 2, 2)), y=-np.ones(4))
    with pytest.raises(DataError, match="labels must be >= 0"):
        open_source(f"npz:{tmp_path / 'neg.npz'}")


def test_absolute_spec_makes_relative_paths_absolute_and_keeps_absolute_spellings(tmp_path, monkeypatch):
    from quantbench.calibration_data import absolute_spec

    monkeypatch.setenv("ABS_DATA", "/srv/data")
    monkeypatch.setenv("REL_DATA", "rel/data")
    monkeypatch.delenv("UNSET_DATA", raising=False)
    base = tmp_path
    assert absolute_spec("folder:imgs", base) == f"folder:{tmp_path / 'imgs'}"
    assert absolute_spec("idx:../x/./y", base) == f"idx:{tmp_path.parent / 'x' / 'y'}"
    assert absolute_spec("npz:/abs/f.npz", base) == "npz:/abs/f.npz"
    assert absolute_spec("folder:$ABS_DATA/val", base) == "folder:$ABS_DATA/val"  # expands to an absolute path
    assert absolute_spec("folder:~/val", base) == "folder:~/val"
    assert absolute_spec("folder:$UNSET_DATA", base) == "folder:$UNSET_DATA"  # reported when opened
    assert absolute_spec("folder:$REL_DATA", base) == f"folder:{tmp_path / 'rel' / 'data'}"
    assert absolute_spec("fashion-mnist", base) == "fashion-mnist" and absolute_spec(None, base) is None
    table = absolute_spec({"spec": "folder:imgs", "labels": "l.txt", "classes": ["a"]}, base)
    assert table == {"spec": f"folder:{tmp_path / 'imgs'}", "labels": str(tmp_path / "l.txt"), "classes": ["a"]}
