"""Image folders: class indices (list, labels file, integer names, sorted names), lazy reading, layouts."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from quantbench.calibration_data import BatchReader, DataError, FileSplit, Preprocess, open_source

Image = pytest.importorskip("PIL.Image")


def write_tree(root: Path, layout: dict[str, dict[str, int]], size: tuple[int, int] = (6, 5),
               grey: bool = False) -> None:
    """``layout``: split folder ('' = root) -> class folder -> image count. Pixel (0, 0) encodes the
    class folder's position in ``layout`` order plus 10 * the image number, so reads can be checked."""
    for split, classes in layout.items():
        for k, (cls, n) in enumerate(classes.items()):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = np.full((*size, 3), 7 * k, np.uint8)
                arr[0, 0] = 10 * i + k
                Image.fromarray(arr[..., 0] if grey else arr).save(folder / f"{i:03d}.png")


def test_integer_named_class_folders_with_gaps_keep_their_values(tmp_path):
    write_tree(tmp_path, {"train": {"003": 2, "017": 3}, "test": {"003": 2, "017": 2}})
    src = open_source(f"folder:{tmp_path}")
    assert sorted(set(src.calibration.labels.tolist())) == [3, 17]
    assert sorted(set(src.evaluation.labels.tolist())) == [3, 17]
    assert src.num_classes == 18
    d = src.describe()
    assert d["class_index"] == "integer-folder-names" and d["class_map"] == {"003": 3, "017": 17}
    assert d["max_label"] == 17 and d["n_classes_present"] == 2
    # images and labels stay paired: pixel (0,0) % 10 is the folder's position (0 -> '003', 1 -> '017')
    imgs = src.evaluation.read(np.arange(len(src.evaluation)))
    assert [int(im[0, 0, 0]) % 10 for im in imgs] == [0 if y == 3 else 1 for y in src.evaluation.labels]


def test_labels_file_maps_names_to_line_numbers(tmp_path):
    write_tree(tmp_path, {"train": {"n02": 1, "n05": 2}, "val": {"n05": 2}})
    labels = tmp_path / "synsets.txt"
    labels.write_text("n00 tench\nn01 goldfish\nn02 great white shark\nn03 x\nn04 y\nn05 hammerhead\nn06 z\n")
    src = open_source({"spec": f"folder:{tmp_path}", "labels": str(labels)})
    assert sorted(set(src.calibration.labels.tolist())) == [2, 5]
    assert set(src.evaluation.labels.tolist()) == {5}
    assert src.num_classes == 7
    d = src.describe()
    assert d["class_index"] == "labels-file" and d["class_map"] == {"n02": 2, "n05": 5}
    assert d["split"] == "train/val" and d["labels_file"] == str(labels)
    labels.write_text("n00\nn01\nn02\n")
    with pytest.raises(DataError, match=r"class folder\(s\) 'n05' not in the labels file .* \(3 names\)"):
        open_source({"spec": f"folder:{tmp_path}", "labels": str(labels)})
    labels.write_text("n02 a\nn02 b\nn05 c\n")
    with pytest.raises(DataError, match="'n02' matches the first word of several lines"):
        open_source({"spec": f"folder:{tmp_path}", "labels": str(labels)})
    with pytest.raises(DataError, match="labels file not found"):
        open_source({"spec": f"folder:{tmp_path}", "labels": str(tmp_path / "none.txt")})


def test_classes_list_wins_over_integer_names(tmp_path):
    write_tree(tmp_path, {"train": {"1": 1, "2": 1}, "test": {"1": 1, "2": 1}})
    src = open_source({"spec": f"folder:{tmp_path}", "classes": ["0", "2", "1", "x"]})
    assert src.describe()["class_index"] == "classes-list"
    assert src.describe()["class_map"] == {"1": 2, "2": 1} and src.num_classes == 4
    with pytest.raises(DataError, match="'1' not in the classes list"):
        open_source({"spec": f"folder:{tmp_path}", "classes": ["0", "2"]})
    with pytest.raises(DataError, match="appears twice"):
        open_source({"spec": f"folder:{tmp_path}", "classes": ["1", "2", "1"]})


def test_sorted_names_union_of_splits_with_a_class_absent_from_one(tmp_path):
    write_tree(tmp_path, {"train": {"dog": 1, "cat": 1, "ant": 1}, "test": {"dog": 1, "cat": 1}})
    src = open_source(f"folder:{tmp_path}")
    d = src.describe()
    assert d["class_index"] == "sorted-folder-names" and d["class_map"] == {"ant": 0, "cat": 1, "dog": 2}
    assert src.num_classes == 3 and sorted(src.evaluation.labels.tolist()) == [1, 2]


def test_hidden_files_skipped_and_unreadable_image_fails_at_read_time(tmp_path):
    write_tree(tmp_path, {"train": {"a": 2, "b": 2}, "test": {"a": 2, "b": 2}})
    (tmp_path / "test" / "a" / ".DS_Store").write_bytes(b"\0\1junk")
    (tmp_path / "test" / "a" / "._000.png").write_bytes(b"resource fork")
    (tmp_path / "test" / ".cache").mkdir()
    (tmp_path / "test" / "b" / "999.png").write_bytes(b"this is not a png")
    src = open_source(f"folder:{tmp_path}")  # validation is cheap: the broken file is not opened yet
    assert len(src.evaluation) == 5 and src.num_classes == 2
    ok = src.evaluation.read([0, 1, 2])
    assert ok.shape == (3, 6, 5, 3)
    with pytest.raises(DataError, match=r"cannot read image .*b/999\.png"):
        src.evaluation.read(np.arange(5))


def test_layout_errors_are_one_line(tmp_path):
    write_tree(tmp_path / "a", {"train": {"x": 1}})
    (tmp_path / "b" / "test").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "b" / "test" / "loose.png")
    (tmp_path / "c" / "test" / "x").mkdir(parents=True)
    write_tree(tmp_path / "d", {"train": {"x": 1}, "test": {"x": 1}})
    (tmp_path / "d" / "test" / "x" / "notes.txt").write_text("hello")
    cases = {"a": "has train/ but no test/ or val/", "b": r"no class sub-folders \(1 images lie directly in it\)",
             "c": "no images found", "d": r"not an image file: .*notes\.txt", "missing": "image folder not found"}
    for name, message in cases.items():
        with pytest.raises(DataError, match=message) as info:
            open_source(f"folder:{tmp_path / name}")
        assert "\n" not in str(info.value)


def test_mixed_sizes_are_read_per_image_and_grey_folders_stay_grey(tmp_path):
    write_tree(tmp_path / "rgb", {"train": {"a": 1}, "test": {"a": 1}})
    Image.fromarray(np.zeros((9, 12, 3), np.uint8)).save(tmp_path / "rgb" / "test" / "a" / "big.png")
    split = open_source(f"folder:{tmp_path / 'rgb'}").evaluation
    images = split.read([0, 1])
    assert isinstance(images, list) and [im.shape for im in images] == [(6, 5, 3), (9, 12, 3)]
    assert split.image_shape == (6, 5, 3)  # the first image's, from its header
    pre = Preprocess.from_dict({"resize_shorter": 4, "crop": 4, "channels": 3})
    assert pre.apply(images).shape == (2, 3, 4, 4)
    with pytest.raises(DataError, match="different sizes after preprocessing"):
        Preprocess.from_dict({"resize_shorter": 4, "channels": 3}).apply(images)
    write_tree(tmp_path / "grey", {"train": {"a": 2}, "test": {"a": 2}}, grey=True)
    g = open_source(f"folder:{tmp_path / 'grey'}")
    assert g.evaluation.image_shape == (6, 5) and g.describe()["color_mode"] == "L"
    assert g.evaluation.read([0, 1]).shape == (2, 6, 5)


def test_batch_reader_over_a_lazy_split(tmp_path):
    write_tree(tmp_path, {"train": {"0": 3, "1": 2}, "test": {"0": 3, "1": 2}})
    split = open_source(f"folder:{tmp_path}").evaluation
    assert isinstance(split, FileSplit)
    reader = BatchReader(split, Preprocess.from_dict({"channels": 3}), split.select(None), 2, "x", pad_last=True)
    batches = list(reader)
    assert [n for _, _, n in batches] == [2, 2, 1] and batches[-1][0].shape == (2, 3, 6, 5)
    assert np.concatenate([y[:n] for _, y, n in batches]).tolist() == [0, 0, 0, 1, 1]
    count = 0
    while reader.get_next() is not None:
        count += 1
    reader.rewind()
    assert count == 3 and reader.get_next()["x"].shape == (2, 3, 6, 5)


PROBE = textwrap.dedent("""
    import json, sys, tracemalloc
    from quantbench.calibration_data import BatchReader, Preprocess, open_source
    pre = Preprocess.from_dict({"resize_shorter": 40, "crop": 40, "channels": 3})

    def run(n_batches):
        split = open_source("folder:" + sys.argv[1]).evaluation
        reader = BatchReader(split, pre, split.select(None), 16)
        return sum(reader.load_batch(i)[2] for i in range(min(n_batches, len(reader))))

    run(1)  # warm-up: lazy imports (PIL plugins, numpy helpers) are code, not data
    tracemalloc.start()
    n = run(10**9)
    print(json.dumps({"n": n, "peak": tracemalloc.get_traced_memory()[1]}))
""")


def test_lazy_reading_keeps_memory_flat(tmp_path):
    """Iterating every batch of 2,500 images peaks far below holding the decoded images at once."""
    rng = np.random.default_rng(0)
    decoded = 0
    for i in range(2500):
        folder = tmp_path / "test" / f"{i % 5}"
        folder.mkdir(parents=True, exist_ok=True)
        h, w = 48 + i % 7, 48 + i % 5
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png", compress_level=0)
        decoded += h * w * 3
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["n"] == 2500 - 500  # test-only folder: 20% held out for calibration
    assert res["peak"] < 0.15 * decoded, (res["peak"], decoded)


def test_stray_hidden_and_empty_folders_do_not_change_the_class_index_rule(tmp_path):
    """Integer class folders 0..11 plus an empty __MACOSX (and a .git, and an empty folder) keep the
    integer rule: '10' is class 10, not 2 as sorted names would make it."""
    write_tree(tmp_path, {"": {str(c): 2 for c in range(12)}}, grey=True)
    (tmp_path / "__MACOSX" / "3").mkdir(parents=True)
    (tmp_path / "__MACOSX" / "3" / "._000.png").write_bytes(b"\0\5\26\7")  # what macOS zips leave
    (tmp_path / ".git" / "objects").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    d = open_source(f"folder:{tmp_path}").describe()
    assert d["class_index"] == "integer-folder-names" and d["class_map"]["10"] == 10 and d["num_classes"] == 12
    assert d["ignored_folders"] == [".git", "__MACOSX", "empty"]
    assert d["class_index_rule"].startswith("integer folder names (folder '0' is class 0)")
    assert "__MACOSX" in d["class_index_rule"]


def test_mostly_integer_folder_names_with_odd_ones_stop_with_one_line_naming_them(tmp_path):
    write_tree(tmp_path, {"": {**{str(c): 1 for c in range(10)}, "misc": 1, "10b": 1}}, grey=True)
    with pytest.raises(DataError) as err:
        open_source(f"folder:{tmp_path}")
    msg = str(err.value)
    assert "'10b', 'misc'" in msg and "integer" in msg and "\n" not in msg
    # an explicit classes list settles it
    names = [str(c) for c in range(10)] + ["misc", "10b"]
    assert open_source({"spec": f"folder:{tmp_path}", "classes": names}).class_map["10b"] == 11
    # names that are mostly not integers keep the sorted-names rule
    other = tmp_path.parent / "words"
    write_tree(other, {"": {"cat": 1, "dog": 1, "7": 1}}, grey=True)
    assert open_source(f"folder:{other}").class_index == "sorted-folder-names"


def _sixteen_bit_tree(root: Path, images: np.ndarray, labels: np.ndarray, mode: str) -> None:
    """The same grey images written as real files: 8-bit PNG ("L"), 16-bit PNG ("I;16", value * 257),
    big-endian 16-bit TIFF ("I;16B") or 32-bit integer TIFF ("I")."""
    for i, (im, y) in enumerate(zip(images, labels, strict=True)):
        folder = root / str(int(y))
        folder.mkdir(parents=True, exist_ok=True)
        wide = im.astype(np.uint16) * 257
        if mode == "L":
            Image.fromarray(im).save(folder / f"{i:04d}.png")
        elif mode == "I;16":
            Image.fromarray(wide).save(folder / f"{i:04d}.png")
        elif mode == "I;16B":
            Image.frombytes("I;16B", im.shape[::-1], wide.astype(">u2").tobytes()).save(folder / f"{i:04d}.tif")
        else:
            Image.fromarray(wide.astype(np.int32)).save(folder / f"{i:04d}.tif")
        if i == 0:
            with Image.open(next(folder.iterdir())) as check:
                assert check.mode == mode  # the file really is of that kind


@pytest.mark.ort_cpu
@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_16_bit_images_are_scaled_not_clipped_and_predict_like_8_bit(tmp_path, mode):
    """Fashion-MNIST images saved at 8 and at 16 bits read as the same pixels, so the shipped model predicts
    the same classes (PIL's convert clipped 16-bit values: 99.5% of pixels became 255)."""
    import onnxruntime as ort

    from quantbench.exporters.registry import ASSETS, FASHION

    src = open_source("fashion-mnist-subset").evaluation
    idx = np.arange(60)
    images, labels = np.asarray(src.read(idx)), src.labels[idx]
    _sixteen_bit_tree(tmp_path / "eight", images, labels, "L")
    _sixteen_bit_tree(tmp_path / "sixteen", images, labels, mode)
    eight, sixteen = open_source(f"folder:{tmp_path / 'eight'}"), open_source(f"folder:{tmp_path / 'sixteen'}")
    assert sixteen.describe()["color_mode"].startswith("L; 16-bit grey images scaled to 0..255")
    assert eight.describe()["color_mode"] == "L" and eight.fingerprint != sixteen.fingerprint
    pre = Preprocess.from_dict(FASHION)
    sess = ort.InferenceSession(str(ASSETS / "fashion_cnn.onnx"), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    preds = {}
    for key, source in (("eight", eight), ("sixteen", sixteen)):
        split = source.evaluation
        pixels = split.read(np.arange(len(split)))
        assert pixels.dtype == np.uint8 and pixels.max() > 200 and (pixels == 255).mean() < 0.2
        preds[key] = sess.run(None, {name: pre.apply(pixels)})[0].argmax(1)
        assert (split.labels == eight.evaluation.labels).all()
    np.testing.assert_array_equal(eight.evaluation.read(np.arange(5)), sixteen.evaluation.read(np.arange(5)))
    np.testing.assert_array_equal(preds["eight"], preds["sixteen"])


def test_32_bit_integer_pixels_beyond_16_bits_are_refused(tmp_path):
    (tmp_path / "0").mkdir()
    Image.fromarray(np.full((4, 4), 70000, np.int32)).save(tmp_path / "0" / "big.tif")
    (tmp_path / "1").mkdir()
    Image.fromarray(np.full((4, 4), 7, np.int32)).save(tmp_path / "1" / "ok.tif")
    src = open_source(f"folder:{tmp_path}")
    with pytest.raises(DataError, match="outside 0..65535"):
        for split in (src.calibration, src.evaluation):
            split.read(np.arange(len(split)))
