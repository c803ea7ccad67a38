"""Per-model preprocessing: resize, centre crop, channels, scale, normalise, layout."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .sources import DataError


@dataclass(frozen=True)
class Preprocess:
    """How raw uint8 images become the model's float32 input."""

    resize: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    channels: int = 1
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 1 / 255
    layout: str = "NCHW"

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Preprocess":
        """Build from a config table; unknown keys raise :class:`DataError` naming the closest."""
        d = dict(d or {})
        names = [f.name for f in fields(cls)]
        for key in d:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f" (valid: {', '.join(names)})"
                raise DataError(f"unknown preprocess key '{key}'{hint}")
        for key in ("resize", "crop"):
            if d.get(key) is not None:
                d[key] = tuple(int(v) for v in d[key])
                if len(d[key]) != 2 or min(d[key]) < 1:
                    raise DataError(f"preprocess.{key} must be [height, width]")
        for key in ("mean", "std"):
            if key in d:
                d[key] = tuple(float(v) for v in (d[key] if isinstance(d[key], (list, tuple)) else [d[key]]))
        pre = cls(**d)
        if pre.channels not in (1, 3):
            raise DataError(f"preprocess.channels must be 1 or 3, not {pre.channels}")
        if pre.layout not in ("NCHW", "NHWC"):
            raise DataError(f"preprocess.layout must be NCHW or NHWC, not {pre.layout}")
        for key in ("mean", "std"):
            if len(getattr(pre, key)) not in (1, pre.channels):
                raise DataError(f"preprocess.{key} needs 1 or {pre.channels} values")
        if any(s == 0 for s in pre.std):
            raise DataError("preprocess.std must not contain 0")
        return pre

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    def output_shape(self, raw_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """Per-sample shape after :meth:`apply`, e.g. (1, 28, 28)."""
        h, w = raw_shape[:2]
        if self.resize:
            h, w = self.resize
        if self.crop:
            h, w = min(h, self.crop[0]), min(w, self.crop[1])
        return (self.channels, h, w) if self.layout == "NCHW" else (h, w, self.channels)

    def apply(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N,H,W) or (N,H,W,C) -> contiguous float32 batch in ``layout``."""
        x = images.astype(np.float32)
        if x.ndim == 3:
            x = x[..., None]
        if self.resize and tuple(x.shape[1:3]) != tuple(self.resize):
            x = resize_bilinear(x, self.resize)
        if self.crop:
            x = center_crop(x, self.crop)
        if x.shape[-1] != self.channels:
            x = np.repeat(x, self.channels, axis=-1) if x.shape[-1] == 1 else x.mean(axis=-1, keepdims=True)
        x *= self.scale
        x -= np.asarray(self.mean, np.float32)
        x /= np.asarray(self.std, np.float32)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=np.float32)


def _axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Half-pixel centres, as PIL/OpenCV/torchvision bilinear (without antialias) do.
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (pos - lo).astype(np.float32)


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Vectorised bilinear resize of an (N, H, W, C) float batch."""
    lo_h, hi_h, wh = _axis_weights(x.shape[1], size[0])
    lo_w, hi_w, ww = _axis_weights(x.shape[2], size[1])
    rows = x[:, lo_h] * (1 - wh)[None, :, None, None] + x[:, hi_h] * wh[None, :, None, None]
    return rows[:, :, lo_w] * (1 - ww)[None, None, :, None] + rows[:, :, hi_w] * ww[None, None, :, None]


def center_crop(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre crop an (N, H, W, C) batch to ``size`` (no-op on a smaller axis)."""
    h, w = x.shape[1:3]
    top, left = max(0, (h - size[0]) // 2), max(0, (w - size[1]) // 2)
    return x[:, top:top + size[0], left:left + size[1]]
