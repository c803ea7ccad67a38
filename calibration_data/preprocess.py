"""Per-model preprocessing: resize (exact, or shorter side + centre crop), channels, scale, normalise, layout."""
from __future__ import annotations

import difflib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .base import DataError

INTERPOLATIONS = ("bilinear", "bicubic")
LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class Preprocess:
    """How raw images become the model's float32 input.

    Per image: ``resize = [H, W]`` (exact, aspect ratio not kept) or ``resize_shorter = S``
    (shorter side to S, aspect kept, the longer side truncated as torchvision does), then
    ``crop = [H, W]`` (centre, torchvision's offsets; no-op on an axis already smaller), with
    PIL's ``interpolation`` (antialiased, like torchvision on PIL images). uint8 images are
    resized as uint8 (rounded, as PIL does), float images per channel in float32.

    Then per batch: ``channels`` (grey repeated to 3, or RGB averaged to 1), ``scale`` (applied
    to uint8/integer pixels only: float images are taken as already scaled), ``mean``/``std``
    and ``layout``.
    """

    resize: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    channels: int = 1
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 1 / 255
    layout: str = "NCHW"
    resize_shorter: int | None = None
    interpolation: str = "bilinear"

    @classmethod
    def check_table(cls, d: dict[str, Any] | None) -> dict[str, Any]:
        """Check a (possibly partial) config table key by key; returns it with values normalised.

        The one validator of preprocessing values: the config checker and :meth:`from_dict` both call
        it. Checks that need keys the table leaves out (``mean`` against ``channels``) wait for
        :meth:`from_dict`, once the table is merged over the model's defaults (:func:`merge_tables`).
        """
        if d is not None and not isinstance(d, dict):
            raise DataError(f"preprocess must be a table, not {_show(d)}")
        names = [f.name for f in fields(cls)]
        out: dict[str, Any] = {}
        for key, value in (d or {}).items():
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f" (valid: {', '.join(names)})"
                raise DataError(f"unknown preprocess key '{key}'{hint}")
            # None (from to_dict, never from TOML) leaves an optional step out
            out[key] = None if value is None and key in _OPTIONAL else _CHECKS[key](value, key)
        if out.get("resize") is not None and out.get("resize_shorter") is not None:
            raise DataError("preprocess: give resize (exact [height, width]) or resize_shorter, not both")
        if "channels" in out:
            _check_lengths(out, out["channels"])
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Preprocess:
        """Build from a complete table (keys left out take the class defaults); bad values raise
        :class:`DataError` naming the key."""
        pre = cls(**cls.check_table(d))
        _check_lengths(pre.to_dict(), pre.channels)
        return pre

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    def _resized_hw(self, h: int, w: int) -> tuple[int, int]:
        if self.resize:
            return self.resize
        if self.resize_shorter:
            return shorter_side_size(h, w, self.resize_shorter)
        return h, w

    def output_shape(self, raw_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """Per-sample shape after :meth:`apply` for a raw image of ``raw_shape``, e.g. (1, 28, 28)."""
        h, w = self._resized_hw(int(raw_shape[0]), int(raw_shape[1]))
        if self.crop:
            h, w = min(h, self.crop[0]), min(w, self.crop[1])
        return (self.channels, h, w) if self.layout == "NCHW" else (h, w, self.channels)

    def apply(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Raw images -> contiguous float32 batch in ``layout``.

        ``images`` is an (N, H, W[, C]) array or a list of (H, W[, C]) arrays of any sizes; after
        resizing and cropping they must agree in size (else :class:`DataError`).
        """
        if isinstance(images, np.ndarray) and not self.resize_shorter and (
                not self.resize or tuple(images.shape[1:3]) == tuple(self.resize)):
            x = images
            if self.crop:  # crop before converting: only the kept pixels become float32
                top, left = crop_offsets(x.shape[1], x.shape[2], self.crop)
                x = x[:, top:top + self.crop[0], left:left + self.crop[1]]
            return self._finish(x.astype(np.float32), _is_pixels(images))
        per_image = [self._geometry(np.asarray(im)) for im in images]
        if not per_image:
            raise DataError("preprocess: empty batch")
        shapes = {im.shape for im in per_image}
        if len(shapes) > 1:
            sizes = sorted({s[:2] for s in shapes})
            raise DataError(f"images have different sizes after preprocessing ({sizes[0]} and {sizes[-1]}): "
                            "set preprocess.crop (or an exact resize)")
        pixels = [_is_pixels(im) for im in images]
        x = np.empty((len(per_image), *per_image[0].shape), dtype=np.float32)
        for i, im in enumerate(per_image):  # converted while copied into the batch (no per-image float copy)
            x[i] = im
        if all(pixels) or not any(pixels):
            return self._finish(x, pixels[0])
        for i, p in enumerate(pixels):  # mixed pixel/float batch: scale only the pixel images
            if p:
                x[i] *= np.float32(self.scale)
        return self._finish(x, False)

    def _geometry(self, im: np.ndarray) -> np.ndarray:
        """Resize then centre-crop one (H, W[, C]) image, keeping its dtype family."""
        if im.ndim not in (2, 3):
            raise DataError(f"preprocess: an image must be (H, W) or (H, W, C), got shape {im.shape}")
        size = self._resized_hw(im.shape[0], im.shape[1])
        if size != im.shape[:2]:
            im = resize_image(im, size, self.interpolation)
        if self.crop:
            im = center_crop(im, self.crop)
        return im

    def _finish(self, x: np.ndarray, pixels: bool) -> np.ndarray:
        """Float32 (N, H, W[, C]) after geometry -> channels, scale, mean/std, layout."""
        if x.ndim == 3:
            x = x[..., None]
        if x.shape[-1] == 4:  # RGBA: drop alpha
            x = x[..., :3]
        if x.shape[-1] not in (1, 3):
            raise DataError(f"preprocess: images with {x.shape[-1]} channels are not supported (1, 3 or 4)")
        if x.shape[-1] != self.channels:
            x = np.repeat(x, self.channels, axis=-1) if x.shape[-1] == 1 else x.mean(axis=-1, keepdims=True)
        if pixels:
            x *= np.float32(self.scale)
        x -= np.asarray(self.mean, np.float32)
        x /= np.asarray(self.std, np.float32)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=np.float32)


def _is_pixels(images: np.ndarray) -> bool:
    return bool(np.issubdtype(np.asarray(images).dtype, np.integer))


def merge_tables(defaults: dict[str, Any] | None, given: dict[str, Any] | None) -> dict[str, Any]:
    """A model's default preprocessing with a (partial) user table on top: keys not given keep their
    defaults; giving ``resize`` drops a default ``resize_shorter`` and the other way round."""
    out = dict(defaults or {})
    given = dict(given or {})
    for key, other in (("resize", "resize_shorter"), ("resize_shorter", "resize")):
        if key in given:
            out.pop(other, None)
    out.update(given)
    return out


def _show(v: Any) -> str:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, tuple):
        v = list(v)
    try:
        return json.dumps(v)
    except (TypeError, ValueError):
        return repr(v)


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive_int(v: Any, key: str) -> int:
    if not _whole(v) or v < 1:
        raise DataError(f"preprocess.{key} must be a positive integer, not {_show(v)}")
    return v


def _size(v: Any, key: str) -> tuple[int, int]:
    square_ok = key == "crop"
    if square_ok and _whole(v):
        v = [v, v]
    if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(_whole(x) and x >= 1 for x in v)):
        raise DataError(f"preprocess.{key} must be [height, width]{' or one integer' if square_ok else ''} "
                        f"(integers >= 1), not {_show(v)}")
    return (int(v[0]), int(v[1]))


def _values(v: Any, key: str) -> tuple[float, ...]:
    values = list(v) if isinstance(v, (list, tuple)) else [v]
    positive = key == "std"
    if not values or not all(_finite(x) and (x > 0 or not positive) for x in values):
        raise DataError(f"preprocess.{key} must be finite numbers{' > 0' if positive else ''} (one, or one per "
                        f"channel), not {_show(v)}")
    return tuple(float(x) for x in values)


def _scale(v: Any, key: str) -> float:
    if not _finite(v) or v <= 0:
        raise DataError(f"preprocess.{key} must be a finite number > 0, not {_show(v)}")
    return float(v)


def _channels(v: Any, key: str) -> int:
    if not _whole(v) or v not in (1, 3):
        raise DataError(f"preprocess.{key} must be 1 or 3, not {_show(v)}")
    return v


def _choice(options: tuple[str, ...]) -> Any:
    def check(v: Any, key: str) -> str:
        if v not in options:
            raise DataError(f"preprocess.{key} must be one of {', '.join(options)}, not {_show(v)}")
        return v
    return check


def _check_lengths(table: dict[str, Any], channels: int) -> None:
    for key in ("mean", "std"):
        values = table.get(key)
        if values is not None and len(values) not in (1, channels):
            allowed = "1" if channels == 1 else f"1 or {channels}"
            raise DataError(f"preprocess.{key} has {len(values)} values but channels = {channels} (give {allowed})")


_OPTIONAL = ("resize", "crop", "resize_shorter")
_CHECKS = {"resize": _size, "crop": _size, "channels": _channels, "mean": _values, "std": _values, "scale": _scale,
           "layout": _choice(LAYOUTS), "resize_shorter": _positive_int, "interpolation": _choice(INTERPOLATIONS)}


def shorter_side_size(h: int, w: int, size: int) -> tuple[int, int]:
    """(H, W) with the shorter side ``size`` and the longer one scaled and truncated (torchvision's rule)."""
    if w <= h:
        return int(size * h / w), size
    return size, int(size * w / h)


def resize_image(im: np.ndarray, size: tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """Resize one (H, W[, C]) image to ``size`` = (H, W) with PIL (antialiased).

    uint8 grey/RGB images go through PIL as they are (the result is rounded to uint8, as
    torchvision on PIL images does); anything else is resized per channel in float32 (mode "F").
    """
    try:
        from PIL import Image
    except ImportError:
        raise DataError("resizing images needs Pillow: pip install .[data]") from None
    resample = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}[interpolation]
    target = (int(size[1]), int(size[0]))
    if im.dtype == np.uint8 and (im.ndim == 2 or im.shape[2] in (1, 3)):
        squeeze = im.ndim == 3 and im.shape[2] == 1
        out = np.asarray(Image.fromarray(im[..., 0] if squeeze else im).resize(target, resample))
        return out[..., None] if squeeze else out
    planes = im[..., None] if im.ndim == 2 else im
    out = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(planes[..., c], dtype=np.float32))
                               .resize(target, resample)) for c in range(planes.shape[2])], axis=-1)
    return out[..., 0] if im.ndim == 2 else out


def crop_offsets(h: int, w: int, size: tuple[int, int]) -> tuple[int, int]:
    """(top, left) of a centre crop, as torchvision computes them (0 on an axis already smaller)."""
    top = round((h - size[0]) / 2.0) if h > size[0] else 0
    left = round((w - size[1]) / 2.0) if w > size[1] else 0
    return top, left


def center_crop(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre crop one (H, W[, C]) image to ``size`` (no-op on an axis already smaller)."""
    top, left = crop_offsets(x.shape[0], x.shape[1], size)
    return x[top:top + size[0], left:left + size[1]]
