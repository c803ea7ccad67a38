"""Data sources: real Fashion-MNIST (shipped subset and Debian's full set), digits, folders, npz."""
from __future__ import annotations

import gzip
import hashlib
import json

import numpy as np
import pytest

from quantbench.calibration_data import BatchReader, DataError, Preprocess, open_source, read_idx, write_idx
from quantbench.calibration_data.sources import DEBIAN_FASHION_MNIST, SHIPPED


def test_shipped_subset_is_real_balanced_and_checksummed():
    src = open_source("fashion-mnist-subset")
    assert src.describe()["variant"] == "shipped-subset" and src.num_classes == 10
    assert len(src.calibration) == 2000 and len(src.evaluation) == 2000
    assert np.bincount(src.calibration.labels).tolist() == [200] * 10
    manifest = json.loads((SHIPPED / "MANIFEST.json").read_text())
    assert manifest["license"] == "MIT"
    for name, digest in manifest["sha256"].items():
        assert hashlib.sha256((SHIPPED / name).read_bytes()).hexdigest() == digest
    img = src.evaluation.read(np.arange(5))
    assert img.dtype == np.uint8 and img.shape == (5, 28, 28) and img.max() > 100


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="apt-get install dataset-fashion-mnist for the full set")
def test_full_debian_set_and_subset_comes_from_it():
    full = open_source("fashion-mnist")
    assert full.describe()["variant"] == "full"
    assert (len(full.calibration), len(full.evaluation)) == (60000, 10000)
    manifest = json.loads((SHIPPED / "MANIFEST.json").read_text())
    sub = open_source("fashion-mnist-subset")
    idx = np.array(manifest["indices"]["t10k"])
    np.testing.assert_array_equal(full.evaluation.read(idx), sub.evaluation.read(np.arange(len(idx))))


def test_idx_round_trip_and_truncation(tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (7, 4, 3), dtype=np.uint8)
    write_idx(tmp_path / "a.gz", arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), arr)
    raw = gzip.open(tmp_path / "a.gz").read()
    (tmp_path / "cut").write_bytes(raw[:-10])
    with pytest.raises(DataError, match="truncated: expected 100 bytes, got 90"):
        read_idx(tmp_path / "cut")
    (tmp_path / "junk").write_bytes(b"\x01\x02\x03\x04garbage")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "junk")


def test_digits_split_does_not_overlap():
    pytest.importorskip("sklearn")
    src = open_source("digits")
    cal = {x.tobytes() + bytes([y]) for x, y in zip(src.calibration.images, src.calibration.labels, strict=True)}
    assert len(src.calibration) + len(src.evaluation) == 1797
    assert len(src.evaluation) > 500 and src.evaluation.image_shape == (8, 8)
    overlap = sum(x.tobytes() + bytes([y]) in cal
                  for x, y in zip(src.evaluation.images, src.evaluation.labels, strict=True))
    assert overlap < 5  # identical digit images can occur twice in the data set itself, never by index


def test_npz_sources(tmp_path):
    x = np.zeros((100, 2, 2), dtype=np.uint8)
    x[:, 0, 0] = np.arange(100)
    np.savez(tmp_path / "xy.npz", x=x, y=np.arange(100) % 3)
    src = open_source(f"npz:{tmp_path / 'xy.npz'}")

    def ids(split):
        return {int(img[0, 0]) for img in split.images}

    assert not ids(src.calibration) & ids(src.evaluation)
    assert len(src.calibration) + len(src.evaluation) == 100 and src.num_classes == 3
    np.savez(tmp_path / "bad.npz", a=x)
    with pytest.raises(DataError, match="needs arrays"):
        open_source(f"npz:{tmp_path / 'bad.npz'}")


def test_image_folder_and_non_image_file(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((6, 5, 3), 40 * i, np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    src = open_source(f"folder:{tmp_path}")
    assert src.num_classes == 2 and len(src.calibration) == 6 and src.evaluation.image_shape == (6, 5, 3)
    (tmp_path / "train" / "dog" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="not an image file: .*notes.txt"):
        open_source(f"folder:{tmp_path}")


def test_unknown_spec_and_missing_paths(tmp_path):
    with pytest.raises(DataError, match="did you mean 'fashion-mnist'"):
        open_source("fashion-mnst")
    with pytest.raises(DataError, match="not found"):
        open_source(f"idx:{tmp_path / 'none'}")


def test_select_is_deterministic_balanced_and_filters_classes():
    split = open_source("fashion-mnist-subset").calibration
    a, b = split.select(50, seed=3), split.select(50, seed=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, split.select(50, seed=4))
    assert np.bincount(split.labels[a], minlength=10).tolist() == [5] * 10
    only = split.select(30, seed=0, classes=[2, 7])
    assert set(split.labels[only].tolist()) == {2, 7}
    with pytest.raises(DataError, match="only 400 available"):
        split.select(401, classes=[2, 7])


def test_preprocess_values_and_shapes():
    raw = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    pre = Preprocess.from_dict({"mean": [0.5], "std": [0.25]})
    out = pre.apply(raw)
    np.testing.assert_allclose(out[0, 0], (raw[0] / 255 - 0.5) / 0.25, rtol=1e-6)
    big = Preprocess.from_dict({"resize": [8, 8], "crop": [6, 6], "channels": 3, "mean": [0.1, 0.2, 0.3],
                                "std": [1, 1, 1]})
    y = big.apply(raw)
    assert y.shape == (1, 3, 6, 6) == (1, *big.output_shape((2, 2)))
    np.testing.assert_allclose(y[0, 1] - y[0, 0], -0.1, atol=1e-6)  # grey replicated, per-channel mean
    const = Preprocess.from_dict({"resize": [5, 7]}).apply(np.full((2, 3, 3), 200, np.uint8))
    np.testing.assert_allclose(const, 200 / 255, rtol=1e-6)
    assert Preprocess.from_dict({"layout": "NHWC"}).apply(raw).shape == (1, 2, 2, 1)
    with pytest.raises(DataError, match="did you mean 'resize'"):
        Preprocess.from_dict({"resise": [2, 2]})


def test_batch_reader_protocol_and_padding():
    split = open_source("fashion-mnist-subset").evaluation
    reader = BatchReader(split, Preprocess(), np.arange(10), 4, "x", pad_last=True)
    batches = list(reader)
    assert len(reader) == 3 and [n for _, _, n in batches] == [4, 4, 2]
    assert batches[2][0].shape == (4, 1, 28, 28)
    np.testing.assert_array_equal(batches[2][0][3], batches[2][0][1])
    plain = BatchReader(split, Preprocess(), np.arange(10), 4, "x")
    shapes = []
    while (b := plain.get_next()) is not None:
        shapes.append(b["x"].shape[0])
    assert shapes == [4, 4, 2]
    plain.rewind()
    assert plain.get_next()["x"].shape == (4, 1, 28, 28)
