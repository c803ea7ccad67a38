"""Test-only sources (IDX t10k only, a folder with only test/ or val/, npz with only x_test): held-out calibration."""
from __future__ import annotations

import numpy as np
import pytest

from quantbench.calibration_data import DataError, open_source, write_idx
from quantbench.calibration_data.base import held_out_size


def ids_of(split) -> list[int]:
    """Every test image here carries its own index in pixels (0,0) and (0,1) (high, low byte)."""
    imgs = split.read(np.arange(len(split)))
    return [int(im[0, 0]) * 256 + int(im[0, 1]) for im in imgs]


def numbered_images(n: int) -> np.ndarray:
    x = np.zeros((n, 3, 3), np.uint8)
    x[:, 0, 0], x[:, 0, 1] = np.arange(n) // 256, np.arange(n) % 256
    return x


def test_held_out_size_rule():
    assert [held_out_size(n) for n in (2, 9, 50, 4999, 5000, 60000)] == [1, 1, 10, 999, 1000, 1000]


def test_idx_with_only_t10k_files(tmp_path):
    n = 300
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", numbered_images(n))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(n) % 10)
    src = open_source(f"idx:{tmp_path}")
    cal, ev = ids_of(src.calibration), ids_of(src.evaluation)
    assert len(cal) == 60 and len(ev) == 240 and not set(cal) & set(ev) and set(cal) | set(ev) == set(range(n))
    assert np.bincount(src.calibration.labels).tolist() == [6] * 10  # class-balanced slice
    assert src.evaluation.labels.tolist() == [i % 10 for i in ev]  # labels stay with their images
    again = open_source(f"idx:{tmp_path}")
    assert ids_of(again.calibration) == cal and ids_of(again.evaluation) == ev
    d = src.describe()
    assert d["split"].startswith("test-only: calibration = seeded class-balanced held-out slice of 60 of 300")
    assert d["n_calibration"] == 60 and d["n_evaluation"] == 240 and d["num_classes"] == 10


def test_idx_missing_splits_are_one_line(tmp_path):
    with pytest.raises(DataError, match="has no train-\\* or t10k-\\* files"):
        open_source(f"idx:{tmp_path}")
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", numbered_images(5))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(5))
    with pytest.raises(DataError, match="has only train-\\* files: an evaluation split needs t10k"):
        open_source(f"idx:{tmp_path}")
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", numbered_images(5))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz is missing"):
        open_source(f"idx:{tmp_path}")


def test_folder_with_only_val(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    for i in range(40):
        folder = tmp_path / "val" / f"{i % 4:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(numbered_images(40)[i]).save(folder / f"{i}.png")
    src = open_source(f"folder:{tmp_path}")
    cal, ev = ids_of(src.calibration), ids_of(src.evaluation)
    assert len(cal) == 8 and len(ev) == 32 and not set(cal) & set(ev)
    assert "held-out slice of 8 of 40 val/ images" in src.describe()["split"]
    assert ids_of(open_source(f"folder:{tmp_path}").calibration) == cal


def test_npz_with_only_test_arrays(tmp_path):
    x = numbered_images(100)
    np.savez(tmp_path / "t.npz", x_test=x, y_test=np.arange(100) % 5)
    src = open_source(f"npz:{tmp_path / 't.npz'}")
    cal, ev = ids_of(src.calibration), ids_of(src.evaluation)
    assert len(cal) == 20 and len(ev) == 80 and not set(cal) & set(ev)
    assert src.describe()["split"].startswith("test-only")
    np.savez(tmp_path / "train_only.npz", x_train=x, y_train=np.zeros(100))
    with pytest.raises(DataError, match="needs arrays"):
        open_source(f"npz:{tmp_path / 'train_only.npz'}")
