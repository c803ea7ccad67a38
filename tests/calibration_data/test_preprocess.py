"""Preprocessing: the ImageNet protocol (shorter side + centre crop) per image against PIL, exact resize, floats."""
from __future__ import annotations

import numpy as np
import pytest

from quantbench.calibration_data import DataError, Preprocess

Image = pytest.importorskip("PIL.Image")

# (height, width) -> size after resizing the shorter side to 36, written out by hand (torchvision truncates
# the longer side), and the top/left offsets of the 32×32 centre crop (round((size - 32) / 2)).
CASES = {(40, 60): ((36, 54), (2, 11)), (75, 33): ((81, 36), (24, 2)), (50, 50): ((36, 36), (2, 2)),
         (31, 90): ((36, 104), (2, 36)), (36, 37): ((36, 37), (2, 2))}


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_mixed_sizes_resize_shorter_and_crop_match_pil(interpolation):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in CASES]
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    pre = Preprocess.from_dict({"resize_shorter": 36, "crop": [32, 32], "interpolation": interpolation,
                                "channels": 3, "mean": mean, "std": std})
    out = pre.apply(images)
    assert out.shape == (5, 3, 32, 32) and out.dtype == np.float32
    resample = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}[interpolation]
    for got, im, ((h, w), (top, left)) in zip(out, images, CASES.values(), strict=True):
        ref = np.asarray(Image.fromarray(im).resize((w, h), resample), dtype=np.float32)[top:top + 32, left:left + 32]
        ref = ((ref / 255 - np.array(mean, np.float32)) / np.array(std, np.float32)).transpose(2, 0, 1)
        np.testing.assert_allclose(got, ref, atol=1e-5)
    assert pre.output_shape((40, 60, 3)) == (3, 32, 32)
    assert Preprocess.from_dict({"resize_shorter": 36}).output_shape((75, 33)) == (1, 81, 36)


def test_exact_resize_is_antialiased_like_pil_and_interpolation_matters():
    rng = np.random.default_rng(2)
    batch = rng.integers(0, 256, (3, 64, 48), dtype=np.uint8)
    out = Preprocess.from_dict({"resize": [16, 20]}).apply(batch)
    ref = np.stack([np.asarray(Image.fromarray(im).resize((20, 16), Image.Resampling.BILINEAR)) for im in batch])
    np.testing.assert_allclose(out[:, 0], ref / 255, atol=1e-6)
    cubic = Preprocess.from_dict({"resize": [16, 20], "interpolation": "bicubic"}).apply(batch)
    assert np.abs(cubic - out).max() > 0.01


def test_float_images_are_taken_as_scaled_and_resized_in_float():
    x = np.random.default_rng(3).uniform(-1, 1, (4, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(Preprocess().apply(x)[:, 0], x)  # scale (1/255) applies to uint8 only
    normed = Preprocess.from_dict({"mean": [0.5], "std": [2.0]}).apply(x)
    np.testing.assert_allclose(normed[:, 0], (x - 0.5) / 2.0, rtol=1e-6)
    up = Preprocess.from_dict({"resize": [12, 12]}).apply(x)
    assert up.shape == (4, 1, 12, 12) and up.min() < -0.5  # no clipping at 0, no uint8 rounding
    ref = np.asarray(Image.fromarray(x[0]).resize((12, 12), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(up[0, 0], ref, atol=1e-6)


def test_rgba_and_channel_conversion():
    rgba = np.zeros((1, 4, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 7
    out = Preprocess.from_dict({"channels": 3}).apply(rgba)
    assert out.shape == (1, 3, 4, 4) and out[0, 0].min() == 1.0 and out[0, 1].max() == 0.0
    assert Preprocess().apply(rgba).shape == (1, 1, 4, 4)  # RGB averaged to one channel


@pytest.mark.parametrize("table, message", [
    ({"resize": [8, 8], "resize_shorter": 8}, "not both"),
    ({"resize_shorter": 0}, "resize_shorter must be a positive integer"),
    ({"resize_shorter": "224"}, "resize_shorter must be a positive integer"),
    ({"interpolation": "lanczos"}, "interpolation must be one of bilinear, bicubic"),
    ({"crop": [8]}, r"crop must be \[height, width\] or one integer"),
    ({"resize": 8}, r"resize must be \[height, width\]"),
    ({"channels": "3"}, "channels must be 1 or 3"),
    ({"channels": 2}, "channels must be 1 or 3"),
    ({"mean": ["a"]}, "mean must be finite numbers"),
    ({"scale": float("nan")}, "scale must be a finite number > 0"),
    ({"std": [0.5, 0.0, 0.5]}, "std must be finite numbers > 0"),
    ({"channels": 1, "mean": [0.1, 0.2, 0.3]}, "mean has 3 values but channels = 1"),
    ({"layout": "CHW"}, "layout must be one of NCHW, NHWC"),
])
def test_bad_preprocess_values_name_the_key(table, message):
    with pytest.raises(DataError, match=message):
        Preprocess.from_dict(table)


def test_crop_accepts_one_integer():
    pre = Preprocess.from_dict({"crop": 4})
    assert pre.crop == (4, 4) and pre.apply(np.zeros((2, 7, 9), np.uint8)).shape == (2, 1, 4, 4)
