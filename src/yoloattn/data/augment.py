"""Image/box augmentations for YOLO training and the letterbox used at evaluation time.

Everything works on ``uint8`` RGB images as numpy arrays of shape ``[H, W, 3]`` and on label
arrays ``[n, 5]`` whose first column is the class id. Geometric steps take and return corner
boxes in pixels (``cls, x1, y1, x2, y2``); the flips take normalised centre-size boxes
(``cls, x, y, w, h``), as they run last in the pipeline.

The steps and their hyper-parameter keys follow the official YOLOv5/YOLOv7 recipes (spec
section 6.1): ``mosaic`` (4-image mosaic, probability), ``degrees``, ``translate``, ``scale``,
``shear``, ``perspective`` (random perspective/affine), ``mixup`` (probability; blend ratio
from ``Beta(mixup_alpha, mixup_alpha)``, 32 as in YOLOv5, YOLOv7 uses 8), ``hsv_h``,
``hsv_s``, ``hsv_v`` (HSV gains), ``flipud`` and ``fliplr`` (probabilities). ``copy_paste``
and ``paste_in`` need segment labels and are not supported: a non-zero value is ignored with
a warning. Other keys of a hyp file (lr0, box, ...) are ignored here.

Every random step draws from the generator it is given, and a probability or gain of 0
switches the step off without drawing anything and without touching the pixels.

Implementation notes (deliberate, documented differences from the official code):

- Pixels are resampled with Pillow (bilinear), not OpenCV, so pixel values differ slightly
  from the official pipeline; box arithmetic is exact in continuous coordinates (pixel ``i``
  covers ``[i, i+1)``, which is also Pillow's sampling convention). A warp that is only a
  scale + translation (the default recipes) is done as an antialiased resize of the visible
  region, much faster than a general warp and without aliasing when shrinking.
- :func:`letterbox` returns the exact per-axis scale ``(new_w / w, new_h / h)`` and the integer
  left/top padding actually applied, so :func:`yoloattn.data.boxes.scale_boxes` inverts it
  exactly (the official code returns ``(r, r)`` and half the total padding).
- Hue jitter rotates the hue by a fraction of the full circle drawn from ``U(-hsv_h, hsv_h)``;
  saturation and value are multiplied by gains drawn from ``U(1 - g, 1 + g)``, all in 8-bit HSV
  through lookup tables (:func:`yoloattn.data.colour.hsv_jitter`).
- Training mosaics whose warp is a scale + translation are built in one step by
  :mod:`yoloattn.data.mosaic` (tiles resized straight into the output, no ``2s`` canvas).
- ``torchvision.transforms.v2`` is not used: its affine takes a decomposed parameter set and
  its perspective a separate call, while one composed 3x3 matrix (needed for exact box
  mapping) warps in a single Pillow call on the uint8 HWC arrays used here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from PIL import Image

from yoloattn.data.boxes import letterbox_geometry, xywhn2xyxy
from yoloattn.data.colour import hsv_jitter

__all__ = [
    "DEFAULT_HYP",
    "AugmentParams",
    "augment_hsv",
    "box_candidates",
    "fliplr",
    "flipud",
    "letterbox",
    "mixup",
    "mosaic4",
    "random_perspective",
    "resize",
    "transform_boxes",
    "warp",
]

LOGGER = logging.getLogger(__name__)

FILL = 114
DEFAULT_HYP: dict[str, float] = {
    # YOLOv5 hyp.scratch-low augmentation values (spec 6.1).
    "hsv_h": 0.015,
    "hsv_s": 0.7,
    "hsv_v": 0.4,
    "degrees": 0.0,
    "translate": 0.1,
    "scale": 0.5,
    "shear": 0.0,
    "perspective": 0.0,
    "flipud": 0.0,
    "fliplr": 0.5,
    "mosaic": 1.0,
    "mixup": 0.0,
    "copy_paste": 0.0,
}
_UNSUPPORTED_KEYS = ("copy_paste", "paste_in")


@dataclass(frozen=True)
class AugmentParams:
    """Validated augmentation hyper-parameters (see the module docstring for the keys)."""

    hsv_h: float = DEFAULT_HYP["hsv_h"]
    hsv_s: float = DEFAULT_HYP["hsv_s"]
    hsv_v: float = DEFAULT_HYP["hsv_v"]
    degrees: float = DEFAULT_HYP["degrees"]
    translate: float = DEFAULT_HYP["translate"]
    scale: float = DEFAULT_HYP["scale"]
    shear: float = DEFAULT_HYP["shear"]
    perspective: float = DEFAULT_HYP["perspective"]
    flipud: float = DEFAULT_HYP["flipud"]
    fliplr: float = DEFAULT_HYP["fliplr"]
    mosaic: float = DEFAULT_HYP["mosaic"]
    mixup: float = DEFAULT_HYP["mixup"]
    mixup_alpha: float = 32.0

    @classmethod
    def from_hyp(cls, hyp: Mapping[str, Any] | None) -> AugmentParams:
        """Build from a hyp dict (e.g. a loaded hyp YAML); missing keys take the defaults."""
        if hyp is None:
            return cls()
        if not isinstance(hyp, Mapping):
            raise TypeError(f"hyp must be a mapping of hyper-parameters, got {type(hyp).__name__}")
        values: dict[str, float] = {}
        for f in fields(cls):
            if f.name not in hyp:
                continue
            v = hyp[f.name]
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise TypeError(f"hyp[{f.name!r}] must be a number, got {v!r}")
            values[f.name] = float(v)
        for key in _UNSUPPORTED_KEYS:
            v = hyp.get(key, 0.0)
            if isinstance(v, int | float) and v > 0:
                LOGGER.warning("hyp[%r]=%s is not supported (needs segment labels) and is ignored", key, v)
        return cls(**values)

    def __post_init__(self) -> None:
        for name in ("flipud", "fliplr", "mosaic", "mixup"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"hyp[{name!r}] is a probability and must be in [0, 1], got {v}")
        for name in ("hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "shear", "perspective"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0.0):
                raise ValueError(f"hyp[{name!r}] must be a finite number >= 0, got {v}")
        if not 0.0 <= self.scale < 1.0:
            raise ValueError(
                f"hyp['scale'] must be in [0, 1) (gain drawn from U(1-s, 1+s)), got {self.scale}"
            )
        if self.translate > 0.5:
            raise ValueError(f"hyp['translate'] must be <= 0.5, got {self.translate}")
        if self.hsv_s > 1.0 or self.hsv_v > 1.0:
            raise ValueError(f"hyp['hsv_s'] and hyp['hsv_v'] must be <= 1, got {self.hsv_s}, {self.hsv_v}")
        if self.mixup_alpha <= 0.0:
            raise ValueError(f"hyp['mixup_alpha'] must be > 0, got {self.mixup_alpha}")


# ----------------------------------------------------------------------------- pixels


def _fill(img: np.ndarray, color: Sequence[int] | int) -> int | tuple[int, ...]:
    if img.ndim == 2:
        return int(color if isinstance(color, int) else color[0])
    if isinstance(color, int):
        return (color,) * img.shape[2]
    return tuple(int(c) for c in color)


def _canvas(shape: tuple[int, ...], dtype: np.dtype, color: Sequence[int] | int) -> np.ndarray:
    """A new array filled with ``color`` (a scalar fill, i.e. a memset, when all channels agree)."""
    if isinstance(color, int) or len(set(color)) == 1 or len(shape) == 2:
        return np.full(shape, int(color if isinstance(color, int) else color[0]), dtype=dtype)
    out = np.empty(shape, dtype=dtype)
    out[...] = tuple(int(c) for c in color)
    return out


def resize(img: np.ndarray, size: tuple[int, int], resample: int = Image.Resampling.BILINEAR) -> np.ndarray:
    """Resize an ``[H, W, C]`` uint8 image to ``size = (w, h)`` with Pillow (no-op if equal)."""
    w, h = size
    if img.shape[0] == h and img.shape[1] == w:
        return img
    return np.asarray(Image.fromarray(img).resize((w, h), resample=resample))


def letterbox(
    img: np.ndarray,
    new_shape: int | tuple[int, int] = 640,
    color: Sequence[int] | int = (FILL, FILL, FILL),
    auto: bool = False,
    scaleup: bool = True,
    stride: int = 32,
    scale_fill: bool = False,
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Resize keeping the aspect ratio and pad to ``new_shape`` (``(h, w)`` or an int; spec 9.1).

    Returns ``(img, (rw, rh), (padw, padh))``: the exact per-axis scale and the left/top padding,
    so a point maps as ``x' = x * rw + padw``, ``y' = y * rh + padh``. ``auto=True`` pads only up
    to a multiple of ``stride``; ``scaleup=False`` never enlarges; ``scale_fill`` stretches.
    """
    if img.ndim not in (2, 3):
        raise ValueError(f"letterbox expects an [H, W] or [H, W, C] image, got shape {img.shape}")
    geo = letterbox_geometry(img.shape[:2], new_shape, auto, scaleup, stride, scale_fill)
    (unpad_w, unpad_h), ratio, (left, top, right, bottom) = geo
    out = resize(img, (unpad_w, unpad_h))
    if left or top or right or bottom:
        shape = (unpad_h + top + bottom, unpad_w + left + right, *img.shape[2:])
        canvas = _canvas(shape, img.dtype, color)
        canvas[top : top + unpad_h, left : left + unpad_w] = out
        out = canvas
    return out, ratio, (float(left), float(top))


def warp(
    img: np.ndarray,
    matrix: np.ndarray,
    out_shape: tuple[int, int],
    color: Sequence[int] | int = (FILL, FILL, FILL),
) -> np.ndarray:
    """Warp ``img`` with the 3x3 forward matrix (source -> output pixels) into ``out_shape = (h, w)``.

    Bilinear, constant ``color`` outside the source. A pure scale + translation (the default
    recipes: no rotation, shear or perspective) takes a fast path, a resize of the visible
    source region (antialiased when shrinking) pasted at its place; its visible edges are
    rounded to whole output pixels. Any other matrix is resampled with a Pillow transform.
    """
    m = np.asarray(matrix, dtype=np.float64)
    m = m / m[2, 2]
    h, w = out_shape
    if (
        m[0, 1] == 0.0
        and m[1, 0] == 0.0
        and m[2, 0] == 0.0
        and m[2, 1] == 0.0
        and m[0, 0] > 0
        and m[1, 1] > 0
    ):
        return _warp_scale_translate(img, m[0, 0], m[1, 1], m[0, 2], m[1, 2], out_shape, color)
    inv = np.linalg.inv(m)
    inv = inv / inv[2, 2]
    pil = Image.fromarray(img)
    fill = _fill(img, color)
    if inv[2, 0] == 0.0 and inv[2, 1] == 0.0:
        data = tuple(float(v) for v in inv[:2].ravel())
        out = pil.transform((w, h), Image.Transform.AFFINE, data, Image.Resampling.BILINEAR, fillcolor=fill)
    else:
        data = tuple(float(v) for v in inv.ravel()[:8])
        out = pil.transform(
            (w, h), Image.Transform.PERSPECTIVE, data, Image.Resampling.BILINEAR, fillcolor=fill
        )
    return np.asarray(out)


def _warp_scale_translate(
    img: np.ndarray,
    sx: float,
    sy: float,
    tx: float,
    ty: float,
    out_shape: tuple[int, int],
    color: Sequence[int] | int,
) -> np.ndarray:
    h, w = out_shape
    src_h, src_w = img.shape[:2]
    canvas = _canvas((h, w, *img.shape[2:]), img.dtype, color)
    # visible output rectangle, rounded to whole pixels
    ox0, ox1 = max(0, round(tx)), min(w, round(sx * src_w + tx))
    oy0, oy1 = max(0, round(ty)), min(h, round(sy * src_h + ty))
    if ox1 <= ox0 or oy1 <= oy0:
        return canvas
    box = (
        min(max((ox0 - tx) / sx, 0.0), src_w),
        min(max((oy0 - ty) / sy, 0.0), src_h),
        min(max((ox1 - tx) / sx, 0.0), src_w),
        min(max((oy1 - ty) / sy, 0.0), src_h),
    )
    if box[2] <= box[0] or box[3] <= box[1]:
        return canvas
    size = (ox1 - ox0, oy1 - oy0)
    if size == (src_w, src_h) and box == (0.0, 0.0, float(src_w), float(src_h)):
        canvas[oy0:oy1, ox0:ox1] = img
        return canvas
    patch = Image.fromarray(img).resize(size, Image.Resampling.BILINEAR, box=box)
    canvas[oy0:oy1, ox0:ox1] = np.asarray(patch)
    return canvas


# ----------------------------------------------------------------------------- boxes


def transform_boxes(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Map ``[n, 4]`` corner boxes through a 3x3 matrix; returns the enclosing corner boxes."""
    n = len(boxes)
    if n == 0:
        return np.zeros((0, 4), dtype=np.float32)
    b = np.asarray(boxes, dtype=np.float64)
    corners = np.ones((n * 4, 3), dtype=np.float64)
    corners[:, :2] = b[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)
    m = np.asarray(matrix, dtype=np.float64)
    pts = corners @ m.T
    if m[2, 0] != 0.0 or m[2, 1] != 0.0:
        xy = pts[:, :2] / pts[:, 2:3]
    else:
        xy = pts[:, :2]
    x = xy[:, 0].reshape(n, 4)
    y = xy[:, 1].reshape(n, 4)
    return np.stack([x.min(1), y.min(1), x.max(1), y.max(1)], axis=1).astype(np.float32)


def box_candidates(
    before: np.ndarray,
    after: np.ndarray,
    wh_thr: float = 2.0,
    ar_thr: float = 20.0,
    area_thr: float = 0.1,
    eps: float = 1e-16,
) -> np.ndarray:
    """Boolean mask of boxes worth keeping after a transform.

    ``before`` and ``after`` are ``[n, 4]`` corner boxes (``before`` already multiplied by the
    transform's scale). A box is kept if both sides of ``after`` exceed ``wh_thr`` pixels, it
    keeps more than ``area_thr`` of its (scaled) area, and its aspect ratio stays below ``ar_thr``.
    """
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    aspect = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (aspect < ar_thr)


def _affine_matrix(
    rng: np.random.Generator,
    in_shape: tuple[int, int],
    out_shape: tuple[int, int],
    degrees: float,
    translate: float,
    scale: float,
    shear: float,
    perspective: float,
) -> tuple[np.ndarray, float]:
    """Compose centre -> perspective -> rotate/scale -> shear -> translate; returns (M, scale)."""
    in_h, in_w = in_shape
    out_h, out_w = out_shape
    centre = np.array([[1.0, 0.0, -in_w / 2], [0.0, 1.0, -in_h / 2], [0.0, 0.0, 1.0]])
    persp = np.eye(3)
    if perspective > 0:
        persp[2, 0] = rng.uniform(-perspective, perspective)
        persp[2, 1] = rng.uniform(-perspective, perspective)
    angle = rng.uniform(-degrees, degrees) if degrees > 0 else 0.0
    s = 1.0 + rng.uniform(-scale, scale) if scale > 0 else 1.0
    rot = np.eye(3)
    if angle != 0.0 or s != 1.0:
        a = math.radians(angle)
        c, si = math.cos(a) * s, math.sin(a) * s
        rot[:2, :2] = [[c, si], [-si, c]]
    shr = np.eye(3)
    if shear > 0:
        shr[0, 1] = math.tan(math.radians(rng.uniform(-shear, shear)))
        shr[1, 0] = math.tan(math.radians(rng.uniform(-shear, shear)))
    tx = 0.5 + rng.uniform(-translate, translate) if translate > 0 else 0.5
    ty = 0.5 + rng.uniform(-translate, translate) if translate > 0 else 0.5
    trans = np.array([[1.0, 0.0, tx * out_w], [0.0, 1.0, ty * out_h], [0.0, 0.0, 1.0]])
    return trans @ shr @ rot @ persp @ centre, s


def random_perspective(
    img: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    degrees: float = 0.0,
    translate: float = 0.0,
    scale: float = 0.0,
    shear: float = 0.0,
    perspective: float = 0.0,
    border: tuple[int, int] = (0, 0),
    color: Sequence[int] | int = (FILL, FILL, FILL),
) -> tuple[np.ndarray, np.ndarray]:
    """Random perspective/affine warp of an image and its ``[n, 5]`` (cls, x1, y1, x2, y2) labels.

    The output is ``(H + 2*border[0], W + 2*border[1])``; a negative border crops (the mosaic
    passes ``-imgsz // 2`` to go from its ``2s`` canvas to ``s``). Rotation is drawn from
    ``U(-degrees, degrees)``, scale gain from ``U(1-scale, 1+scale)``, shear angles from
    ``U(-shear, shear)`` degrees, translation from ``U(-translate, translate)`` of the output
    size and the perspective terms from ``U(-perspective, perspective)``. Boxes are mapped
    through the same matrix, clipped to the output and filtered by :func:`box_candidates`.
    With all parameters 0 and no border the image and labels are returned unchanged (copies).
    """
    h, w = img.shape[:2]
    out_shape = (h + 2 * border[0], w + 2 * border[1])
    if out_shape[0] <= 0 or out_shape[1] <= 0:
        raise ValueError(f"border {border} leaves no output for an image of shape {(h, w)}")
    labels = np.asarray(labels, dtype=np.float32).reshape(-1, 5)
    m, s = _affine_matrix(rng, (h, w), out_shape, degrees, translate, scale, shear, perspective)
    if out_shape == (h, w) and np.array_equal(m, np.eye(3)):
        return img.copy(), labels.copy()
    return warp(img, m, out_shape, color), _map_labels(labels, m, s, out_shape)


def _map_labels(labels: np.ndarray, m: np.ndarray, s: float, out_shape: tuple[int, int]) -> np.ndarray:
    """``[n, 5]`` (cls, x1, y1, x2, y2) labels through ``m``, clipped to ``out_shape = (h, w)`` and
    filtered by :func:`box_candidates` (``s``: the transform's scale)."""
    if not len(labels):
        return labels
    boxes = transform_boxes(labels[:, 1:5], m)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, out_shape[1])
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, out_shape[0])
    keep = box_candidates(labels[:, 1:5] * s, boxes)
    return np.concatenate([labels[keep, :1], boxes[keep]], axis=1).astype(np.float32)


def mosaic4(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    size: int,
    centre: tuple[int, int],
    color: Sequence[int] | int = (FILL, FILL, FILL),
) -> tuple[np.ndarray, np.ndarray]:
    """Place four images around ``centre = (xc, yc)`` on a ``2*size`` square canvas.

    Image 0 goes top-left of the centre (its bottom-right corner at the centre), 1 top-right,
    2 bottom-left, 3 bottom-right; each is cropped where it leaves the canvas. ``labels[i]`` is
    ``[n, 5]`` (cls, x, y, w, h) normalised to image ``i``. Returns the canvas and the labels as
    ``[n, 5]`` (cls, x1, y1, x2, y2) canvas pixels, clipped to the canvas (boxes that end up
    empty are left for the following :func:`random_perspective` to filter).
    """
    if len(images) != 4 or len(labels) != 4:
        raise ValueError(f"mosaic4 needs 4 images and 4 label arrays, got {len(images)} and {len(labels)}")
    side = 2 * size
    xc, yc = centre
    canvas = _canvas((side, side, 3), np.dtype(np.uint8), color)
    out_labels = []
    for k, (im, lab) in enumerate(zip(images, labels)):
        h, w = im.shape[:2]
        # canvas-space rectangle occupied by the full image (may extend beyond the canvas)
        x0 = xc - w if k in (0, 2) else xc
        y0 = yc - h if k in (0, 1) else yc
        cx1, cy1 = max(x0, 0), max(y0, 0)
        cx2, cy2 = min(x0 + w, side), min(y0 + h, side)
        if cx2 > cx1 and cy2 > cy1:
            canvas[cy1:cy2, cx1:cx2] = im[cy1 - y0 : cy2 - y0, cx1 - x0 : cx2 - x0]
        lab = np.asarray(lab, dtype=np.float32).reshape(-1, 5)
        if len(lab):
            out_labels.append(np.concatenate([lab[:, :1], xywhn2xyxy(lab[:, 1:5], w, h, x0, y0)], 1))
    merged = np.concatenate(out_labels, 0) if out_labels else np.zeros((0, 5), np.float32)
    merged[:, 1:] = merged[:, 1:].clip(0, side)
    return canvas, merged


def mixup(
    img1: np.ndarray, labels1: np.ndarray, img2: np.ndarray, labels2: np.ndarray, ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """Blend two same-size images ``ratio * img1 + (1 - ratio) * img2`` and concatenate labels."""
    if img1.shape != img2.shape:
        raise ValueError(f"mixup needs images of the same shape, got {img1.shape} and {img2.shape}")
    blended = img1.astype(np.float32) * ratio + img2.astype(np.float32) * (1.0 - ratio)
    out = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    return out, np.concatenate([labels1, labels2], 0)


def augment_hsv(
    img: np.ndarray,
    rng: np.random.Generator,
    hgain: float = 0.5,
    sgain: float = 0.5,
    vgain: float = 0.5,
    channels_first: bool = False,
) -> np.ndarray:
    """Random hue rotation and saturation/value gains (:func:`hsv_jitter`); all gains 0 returns
    the image unchanged, drawing nothing. ``img`` is ``uint8 [H, W, 3]``, or ``[3, H, W]`` with
    ``channels_first`` (then the result is channels-first too)."""
    if hgain == 0 and sgain == 0 and vgain == 0:
        return img
    dh, gs, gv = rng.uniform(-1.0, 1.0, 3) * (hgain, sgain, vgain)
    if channels_first:
        return hsv_jitter(img, float(dh), float(gs), float(gv))
    out = hsv_jitter(np.ascontiguousarray(img.transpose(2, 0, 1)), float(dh), float(gs), float(gv))
    return np.ascontiguousarray(out.transpose(1, 2, 0))


def fliplr(img: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right; ``labels`` are ``[n, 5]`` (cls, x, y, w, h) normalised."""
    out = labels.copy()
    out[:, 1] = 1.0 - out[:, 1]
    return np.ascontiguousarray(img[:, ::-1]), out


def flipud(img: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror top-bottom; ``labels`` are ``[n, 5]`` (cls, x, y, w, h) normalised."""
    out = labels.copy()
    out[:, 2] = 1.0 - out[:, 2]
    return np.ascontiguousarray(img[::-1]), out
