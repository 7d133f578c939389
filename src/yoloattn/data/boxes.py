"""Box-coordinate helpers: format conversion, clipping and the letterbox geometry.

Box formats used throughout yoloattn:

- ``xyxy``: corner coordinates ``(x1, y1, x2, y2)``, pixels unless noted;
- ``xywh``: centre and size ``(x, y, w, h)``;
- ``...n``: the same, normalised by the image width and height (the YOLO label format).

Coordinates are continuous: pixel ``i`` covers ``[i, i + 1)``, so an image of width ``W``
spans ``[0, W]``. Every function accepts a numpy array or a torch tensor of shape ``[..., 4]``
(:func:`clip_boxes` and :func:`scale_boxes` also ``[..., 4 + k]``: the extra columns, e.g.
confidence and class, are copied unchanged) and returns a new object of the same kind (inputs
are never modified); integer inputs are promoted to floating point (``float32``), floating
inputs keep their dtype. Tensors keep autograd history.

The letterbox geometry (:func:`letterbox_geometry`) lives here so that both the forward
transform (:func:`yoloattn.data.augment.letterbox`) and its inverse (:func:`scale_boxes`)
share one definition. These are the only box helpers of the package:
:mod:`yoloattn.engine.nms` re-exports them (its ``scale_boxes`` fixes ``official=True``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeVar

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


def _check_last_dim(x: np.ndarray | torch.Tensor, extra_columns: bool = False) -> None:
    """Raise unless ``x`` is an array/tensor of shape ``[..., 4]`` (``[..., 4 + k]`` if allowed)."""
    if not isinstance(x, np.ndarray | torch.Tensor):
        raise TypeError(f"boxes must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    if x.ndim == 0 or (x.shape[-1] < 4 if extra_columns else x.shape[-1] != 4):
        extra = " (extra columns allowed)" if extra_columns else ""
        raise ValueError(f"boxes must have shape [..., 4]{extra}, got {tuple(x.shape)}")


def _image_hw(shape: int | Sequence[int] | Sequence[float], name: str) -> tuple[float, float]:
    """``(h, w)`` of an image shape given as ``(h, w)``, ``(h, w, c)`` or one int (square)."""
    if isinstance(shape, int | np.integer):
        return float(shape), float(shape)
    if len(shape) < 2:
        raise ValueError(f"{name} must be (height, width[, channels]), got {tuple(shape)}")
    return float(shape[0]), float(shape[1])


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


def clip_boxes(boxes: BoxArray, shape: Sequence[int] | Sequence[float]) -> BoxArray:
    """Clip corner boxes ``[..., 4 + k]`` to an image of ``shape = (h, w[, c])``.

    Only the four corner columns are clipped (x to ``[0, w]``, y to ``[0, h]``); extra columns
    are copied unchanged. Returns a new array/tensor.
    """
    _check_last_dim(boxes, extra_columns=True)
    h, w = _image_hw(shape, "shape")
    y = _float_copy(boxes)
    if isinstance(y, torch.Tensor):  # one column at a time, in place: autograd-safe
        y[..., 0].clamp_(0.0, w)
        y[..., 1].clamp_(0.0, h)
        y[..., 2].clamp_(0.0, w)
        y[..., 3].clamp_(0.0, h)
    else:
        y[..., 0:4:2] = np.clip(y[..., 0:4:2], 0.0, w)
        y[..., 1:4:2] = np.clip(y[..., 1:4:2], 0.0, h)
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


def _ratio_pair(ratio: Any) -> tuple[float, float]:
    """``(rh, rw)`` from a ``(rh, rw)`` pair or a single scalar ratio (used for both axes)."""
    if isinstance(ratio, np.ndarray | torch.Tensor) and ratio.ndim == 0:
        ratio = ratio.item()
    if isinstance(ratio, Sequence | np.ndarray | torch.Tensor):
        if len(ratio) == 1:
            return float(ratio[0]), float(ratio[0])
        return float(ratio[0]), float(ratio[1])
    return float(ratio), float(ratio)


def scale_boxes(
    img1_shape: int | Sequence[int],
    boxes: BoxArray,
    img0_shape: Sequence[int],
    ratio_pad: Sequence[Any] | None = None,
    clip: bool = True,
    *,
    official: bool = False,
) -> BoxArray:
    """Map corner boxes from a letterboxed image back to the original image.

    Each corner coordinate becomes ``(x - pad_w) / gain_x`` and ``(y - pad_h) / gain_y``. Two
    conventions exist for the gains and, when ``ratio_pad`` is None, for the padding:

    - ``official=False`` (default, yoloattn's exact inverse of
      :func:`yoloattn.data.augment.letterbox`): per-axis gains ``gain_y = rh``,
      ``gain_x = rw`` from ``ratio_pad``; without ``ratio_pad`` the geometry is recomputed with
      :func:`letterbox_geometry` (``auto=False``: rounded resized size, integer padding), which
      is exact for images letterboxed directly from ``img0_shape`` to ``img1_shape``.
    - ``official=True`` (the YOLOv5/YOLOv7 ``val.py``/``detect.py`` rule, used by
      :mod:`yoloattn.engine` through :func:`yoloattn.engine.nms.scale_boxes`): one gain for
      both axes, ``gain = ratio_pad[0][0]`` (``gain_h``; ``gain_w`` is ignored); without
      ``ratio_pad``, ``gain = min(h / h0, w / w0)`` and the centred, unrounded padding
      ``((w - w0 * gain) / 2, (h - h0 * gain) / 2)``.

    Args:
        img1_shape: ``(h, w[, c])`` (or one int, square) of the letterboxed image (network
            input) the boxes refer to.
        boxes: ``[..., 4 + k]`` corner boxes in ``img1`` pixels (not modified); the ``k`` extra
            columns (e.g. confidence, class) are copied unchanged.
        img0_shape: ``(h0, w0[, c])`` of the original image.
        ratio_pad: ``((rh, rw), (pad_w, pad_h))`` as stored in the dataset's ``shapes`` (the
            ratio may also be one scalar used for both axes); None recomputes it (see above).
        clip: clip the result to the original image.
        official: gain/padding convention, see above.
    """
    (h1, w1), (h0, w0) = _image_hw(img1_shape, "img1_shape"), _image_hw(img0_shape, "img0_shape")
    if ratio_pad is None:
        if official:
            if min(h1, w1, h0, w0) <= 0:
                raise ValueError(
                    f"scale_boxes needs positive sizes, got img1={img1_shape}, img0={img0_shape}"
                )
            rh = rw = min(h1 / h0, w1 / w0)
            padw, padh = (w1 - w0 * rw) / 2, (h1 - h0 * rh) / 2
        else:
            geo = letterbox_geometry((int(h0), int(w0)), (int(h1), int(w1)), auto=False, scaleup=True)
            rw, rh = geo.ratio
            padw, padh = float(geo.pad[0]), float(geo.pad[1])
    else:
        ratio, pad = ratio_pad[0], ratio_pad[1]
        rh, rw = _ratio_pair(ratio)
        if official:
            rw = rh  # the official code uses gain_h for both axes
        padw, padh = float(pad[0]), float(pad[1])
        if not (math.isfinite(rh) and math.isfinite(rw)) or rh <= 0 or rw <= 0:
            raise ValueError(f"ratio_pad has a non-positive or non-finite ratio: {ratio_pad!r}")
    _check_last_dim(boxes, extra_columns=True)
    y = _float_copy(boxes)
    y[..., 0] = (y[..., 0] - padw) / rw
    y[..., 2] = (y[..., 2] - padw) / rw
    y[..., 1] = (y[..., 1] - padh) / rh
    y[..., 3] = (y[..., 3] - padh) / rh
    return clip_boxes(y, img0_shape) if clip else y
