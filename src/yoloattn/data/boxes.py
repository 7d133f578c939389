"""Box-coordinate helpers: format conversion, clipping and the letterbox geometry.

Box formats used throughout yoloattn:

- ``xyxy``: corner coordinates ``(x1, y1, x2, y2)``, pixels unless noted;
- ``xywh``: centre and size ``(x, y, w, h)``;
- ``...n``: the same, normalised by the image width and height (the YOLO label format).

Coordinates are continuous: pixel ``i`` covers ``[i, i + 1)``, so an image of width ``W``
spans ``[0, W]``. Every function accepts a numpy array or a torch tensor of shape ``[..., 4]``
and returns a new object of the same kind (inputs are never modified); integer inputs are
promoted to floating point.

The letterbox geometry (:func:`letterbox_geometry`) lives here so that both the forward
transform (:func:`yoloattn.data.augment.letterbox`) and its inverse (:func:`scale_boxes`)
share one definition.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch

__all__ = [
    "LetterboxGeometry",
    "clip_boxes",
    "letterbox_geometry",
    "scale_boxes",
    "xywh2xyxy",
    "xywhn2xyxy",
    "xyxy2xywh",
    "xyxy2xywhn",
]

BoxArray = TypeVar("BoxArray", np.ndarray, torch.Tensor)


def _float_copy(x: BoxArray) -> BoxArray:
    if isinstance(x, torch.Tensor):
        return x.clone() if x.is_floating_point() else x.to(torch.float32)
    arr = np.asarray(x)
    return arr.astype(arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float32, copy=True)


def _check_last_dim(x: np.ndarray | torch.Tensor) -> None:
    if x.shape[-1] != 4:
        raise ValueError(f"boxes must have shape [..., 4], got {tuple(x.shape)}")


def xywh2xyxy(x: BoxArray) -> BoxArray:
    """Centre-size boxes to corner boxes (same units)."""
    _check_last_dim(x)
    y = _float_copy(x)
    half_w, half_h = y[..., 2] / 2, y[..., 3] / 2
    cx, cy = y[..., 0] + 0, y[..., 1] + 0
    y[..., 0], y[..., 1] = cx - half_w, cy - half_h
    y[..., 2], y[..., 3] = cx + half_w, cy + half_h
    return y


def xyxy2xywh(x: BoxArray) -> BoxArray:
    """Corner boxes to centre-size boxes (same units)."""
    _check_last_dim(x)
    y = _float_copy(x)
    x1, y1, x2, y2 = y[..., 0] + 0, y[..., 1] + 0, y[..., 2] + 0, y[..., 3] + 0
    y[..., 0], y[..., 1] = (x1 + x2) / 2, (y1 + y2) / 2
    y[..., 2], y[..., 3] = x2 - x1, y2 - y1
    return y


def xywhn2xyxy(x: BoxArray, w: float, h: float, padw: float = 0.0, padh: float = 0.0) -> BoxArray:
    """Normalised centre-size boxes to pixel corner boxes in a ``w`` x ``h`` image placed at
    offset ``(padw, padh)`` (e.g. the letterbox padding or a mosaic tile position)."""
    y = xywh2xyxy(x)
    y[..., 0] = y[..., 0] * w + padw
    y[..., 2] = y[..., 2] * w + padw
    y[..., 1] = y[..., 1] * h + padh
    y[..., 3] = y[..., 3] * h + padh
    return y


def xyxy2xywhn(x: BoxArray, w: float, h: float, clip: bool = False) -> BoxArray:
    """Pixel corner boxes to normalised centre-size boxes for a ``w`` x ``h`` image.

    With ``clip=True`` the corners are first clipped to the image ``[0, w] x [0, h]``.
    """
    y = clip_boxes(x, (h, w)) if clip else _float_copy(x)
    y = xyxy2xywh(y)
    y[..., 0] = y[..., 0] / w
    y[..., 2] = y[..., 2] / w
    y[..., 1] = y[..., 1] / h
    y[..., 3] = y[..., 3] / h
    return y


def clip_boxes(boxes: BoxArray, shape: tuple[int, int] | tuple[float, float]) -> BoxArray:
    """Clip corner boxes to an image of ``shape = (h, w)``; returns a new array/tensor."""
    _check_last_dim(boxes)
    h, w = float(shape[0]), float(shape[1])
    y = _float_copy(boxes)
    if isinstance(y, torch.Tensor):
        y[..., 0::2] = y[..., 0::2].clamp(0.0, w)
        y[..., 1::2] = y[..., 1::2].clamp(0.0, h)
    else:
        y[..., 0::2] = np.clip(y[..., 0::2], 0.0, w)
        y[..., 1::2] = np.clip(y[..., 1::2], 0.0, h)
    return y


class LetterboxGeometry(tuple):
    """``(new_unpad, ratio, pad)`` of a letterbox, as computed by :func:`letterbox_geometry`.

    - ``new_unpad = (w, h)``: the size the image is resized to before padding (integers);
    - ``ratio = (rw, rh)``: the exact per-axis scale ``new_w / w0``, ``new_h / h0``;
    - ``pad = (left, top, right, bottom)``: integer padding on each side.
    """

    __slots__ = ()

    def __new__(
        cls, new_unpad: tuple[int, int], ratio: tuple[float, float], pad: tuple[int, int, int, int]
    ) -> LetterboxGeometry:
        return super().__new__(cls, (new_unpad, ratio, pad))

    @property
    def new_unpad(self) -> tuple[int, int]:
        return self[0]

    @property
    def ratio(self) -> tuple[float, float]:
        return self[1]

    @property
    def pad(self) -> tuple[int, int, int, int]:
        return self[2]


def _as_hw(shape: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(shape, int | np.integer):
        return int(shape), int(shape)
    if len(shape) != 2:
        raise ValueError(f"shape must be an int or (h, w), got {shape!r}")
    return int(shape[0]), int(shape[1])


def letterbox_geometry(
    src_shape: tuple[int, int],
    new_shape: int | tuple[int, int],
    auto: bool = False,
    scaleup: bool = True,
    stride: int = 32,
    scale_fill: bool = False,
) -> LetterboxGeometry:
    """Geometry of letterboxing an image of ``src_shape = (h, w)`` into ``new_shape``.

    The scale is ``r = min(new_h / h, new_w / w)`` (capped at 1 without ``scaleup``); the
    resized size is ``(round(w r), round(h r))``; with ``auto`` the padding is reduced modulo
    ``stride`` (minimum stride-aligned rectangle); with ``scale_fill`` the image is stretched to
    ``new_shape`` with no padding. Odd padding puts the extra pixel on the right/bottom side.
    """
    h0, w0 = _as_hw(src_shape)
    new_h, new_w = _as_hw(new_shape)
    if h0 <= 0 or w0 <= 0 or new_h <= 0 or new_w <= 0:
        raise ValueError(f"letterbox needs positive sizes, got source {(h0, w0)} and target {(new_h, new_w)}")
    if scale_fill:
        unpad_w, unpad_h = new_w, new_h
        dw = dh = 0
    else:
        r = min(new_h / h0, new_w / w0)
        if not scaleup:
            r = min(r, 1.0)
        unpad_w, unpad_h = max(1, int(round(w0 * r))), max(1, int(round(h0 * r)))
        dw, dh = new_w - unpad_w, new_h - unpad_h
        if auto:
            dw, dh = dw % stride, dh % stride
    left, top = dw // 2, dh // 2
    return LetterboxGeometry(
        (unpad_w, unpad_h), (unpad_w / w0, unpad_h / h0), (left, top, dw - left, dh - top)
    )


def scale_boxes(
    img1_shape: tuple[int, int],
    boxes: BoxArray,
    img0_shape: tuple[int, int],
    ratio_pad: tuple[tuple[float, float], tuple[float, float]] | None = None,
    clip: bool = True,
) -> BoxArray:
    """Map corner boxes from a letterboxed image back to the original image.

    Args:
        img1_shape: ``(h, w)`` of the letterboxed image the boxes refer to.
        boxes: ``[..., 4]`` corner boxes in ``img1`` pixels (not modified).
        img0_shape: ``(h0, w0)`` of the original image.
        ratio_pad: ``((rh, rw), (padw, padh))`` as stored in the dataset's ``shapes``; when
            None it is recomputed with :func:`letterbox_geometry` (``auto=False``), which is
            exact for images letterboxed directly from ``img0_shape`` to ``img1_shape``.
        clip: clip the result to the original image.
    """
    if ratio_pad is None:
        geo = letterbox_geometry(img0_shape, img1_shape, auto=False, scaleup=True)
        rw, rh = geo.ratio
        padw, padh = float(geo.pad[0]), float(geo.pad[1])
    else:
        (rh, rw), (padw, padh) = ratio_pad
        if not (math.isfinite(rh) and math.isfinite(rw)) or rh <= 0 or rw <= 0:
            raise ValueError(f"ratio_pad has a non-positive or non-finite ratio: {ratio_pad!r}")
    _check_last_dim(boxes)
    y = _float_copy(boxes)
    y[..., 0] = (y[..., 0] - padw) / rw
    y[..., 2] = (y[..., 2] - padw) / rw
    y[..., 1] = (y[..., 1] - padh) / rh
    y[..., 3] = (y[..., 3] - padh) / rh
    return clip_boxes(y, img0_shape) if clip else y
