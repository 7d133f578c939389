"""The training mosaic in one step: four images placed around a centre and the random scale +
translate of the default recipes, drawn straight into the output (:func:`mosaic4_warp`), and
:func:`random_mosaic`, which draws the affine parameters as :func:`yoloattn.data.augment.
random_perspective` does and falls back to the ``2 * size`` canvas and a general warp when the
draw has rotation, shear or perspective.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from yoloattn.data.augment import FILL, _affine_matrix, _map_labels, mosaic4, warp
from yoloattn.data.boxes import xywhn2xyxy

__all__ = ["mosaic4_warp", "random_mosaic"]


def _tile_origin(k: int, centre: tuple[int, int], h: int, w: int) -> tuple[int, int]:
    """Canvas position of tile ``k``'s top-left corner in a mosaic centred at ``centre``."""
    xc, yc = centre
    return (xc - w if k in (0, 2) else xc), (yc - h if k in (0, 1) else yc)


def _tile_labels(lab: np.ndarray, w: int, h: int, x0: int, y0: int, side: int) -> np.ndarray:
    """Tile labels (cls, x, y, w, h normalised) as canvas corner boxes clipped to the canvas."""
    lab = np.asarray(lab, dtype=np.float32).reshape(-1, 5)
    out = np.concatenate([lab[:, :1], xywhn2xyxy(lab[:, 1:5], w, h, x0, y0)], 1).astype(np.float32)
    out[:, 1:] = out[:, 1:].clip(0, side)
    return out


def _resample_axis(
    o0: int, o1: int, scale: float, shift: float, lo: int, hi: int
) -> tuple[int, int, int, float] | None:
    """One axis of a tile drawn through ``x' = scale * x + shift`` (``x`` in tile pixels, its
    visible part ``[lo, hi)``) into output pixels ``[o0, o1)``: ``(src0, src1, n_out, shift')``.

    The source window starts at the whole pixel ``src0`` nearest to where the output's first
    pixel edge maps, so a resize with ``scale`` from ``src0`` lands on the output grid; ``shift'``
    is the translation this actually applies (within ``scale / 2`` pixels of ``shift``).
    """
    if o1 <= o0:
        return None
    src0 = min(max(round((o0 - shift) / scale), lo), hi - 1)
    src1 = min(hi, math.ceil(src0 + (o1 - o0) / scale) + 1)
    n_out = min(o1 - o0, math.floor((src1 - src0) * scale))
    if n_out <= 0:
        return None
    return src0, src1, n_out, o0 - scale * src0


def mosaic4_warp(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    size: int,
    centre: tuple[int, int],
    matrix: np.ndarray,
    out: np.ndarray | None = None,
    color: int = FILL,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`mosaic4` followed by a scale + translate ``matrix`` (canvas -> output pixels), in
    one step: each tile's visible part is resized straight into the ``size`` x ``size`` output,
    without the ``2 * size`` canvas. Returns a **channels-first** ``uint8 [3, size, size]`` image
    (written into ``out`` when given) and the labels as :func:`random_perspective` returns them.

    Bilinear (antialiased when shrinking) with ``torch.nn.functional.interpolate``, which needs
    each tile's source window to start on a whole pixel: each tile's translation is moved by at
    most half an output pixel per scale unit to get there, and its boxes are mapped through that
    tile's own matrix, so boxes follow their pixels exactly; tiles may then meet with a one-pixel
    seam of ``color`` or overlap by one pixel. The tiles' edges are not blended with their
    neighbours (the canvas path interpolates across them).
    """
    m = np.asarray(matrix, dtype=np.float64)
    m = m / m[2, 2]
    if m[0, 1] != 0.0 or m[1, 0] != 0.0 or m[2, 0] != 0.0 or m[2, 1] != 0.0 or m[0, 0] <= 0 or m[1, 1] <= 0:
        raise ValueError("mosaic4_warp needs a scale + translate matrix; use mosaic4 and warp")
    if len(images) != 4 or len(labels) != 4:
        raise ValueError(
            f"mosaic4_warp needs 4 images and 4 label arrays, got {len(images)} and {len(labels)}"
        )
    sx, sy, tx, ty = float(m[0, 0]), float(m[1, 1]), float(m[0, 2]), float(m[1, 2])
    side = 2 * size
    if out is None:
        out = np.empty((3, size, size), np.uint8)
    out.fill(color)
    scale = math.sqrt(sx * sy)
    out_labels = []
    for k, (im, lab) in enumerate(zip(images, labels)):
        h, w = im.shape[:2]
        x0, y0 = _tile_origin(k, centre, h, w)
        cx1, cy1, cx2, cy2 = max(x0, 0), max(y0, 0), min(x0 + w, side), min(y0 + h, side)
        # the tile's visible output rectangle, edges rounded to whole pixels
        ox = _resample_axis(
            max(0, round(sx * cx1 + tx)),
            min(size, round(sx * cx2 + tx)),
            sx,
            tx + sx * x0,
            cx1 - x0,
            cx2 - x0,
        )
        oy = _resample_axis(
            max(0, round(sy * cy1 + ty)),
            min(size, round(sy * cy2 + ty)),
            sy,
            ty + sy * y0,
            cy1 - y0,
            cy2 - y0,
        )
        tkx, tky = tx, ty
        if ox is not None and oy is not None and cx2 > cx1 and cy2 > cy1:
            (u0, u1, nx, sxk), (v0, v1, ny, syk) = ox, oy
            with warnings.catch_warnings():  # a read-only (cached) image: the crop is only read
                warnings.simplefilter("ignore", UserWarning)
                crop = torch.from_numpy(np.ascontiguousarray(im[v0:v1, u0:u1])).permute(2, 0, 1)[None]
            if (u1 - u0, v1 - v0) == (nx, ny) and sx == 1.0 and sy == 1.0:
                patch = crop[0]
            else:
                patch = F.interpolate(
                    crop,
                    scale_factor=(sy, sx),
                    mode="bilinear",
                    align_corners=False,
                    antialias=True,
                    recompute_scale_factor=False,
                )[0]
            ox0, oy0 = round(sxk + sx * u0), round(syk + sy * v0)
            out[:, oy0 : oy0 + ny, ox0 : ox0 + nx] = patch[:, :ny, :nx].numpy()
            tkx, tky = sxk - sx * x0, syk - sy * y0
        lab = _tile_labels(lab, w, h, x0, y0, side)
        if len(lab):
            mk = np.array([[sx, 0.0, tkx], [0.0, sy, tky], [0.0, 0.0, 1.0]])
            out_labels.append(_map_labels(lab, mk, scale, (size, size)))
    merged = np.concatenate(out_labels, 0) if out_labels else np.zeros((0, 5), np.float32)
    return out, merged


def random_mosaic(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    size: int,
    centre: tuple[int, int],
    rng: np.random.Generator,
    degrees: float = 0.0,
    translate: float = 0.0,
    scale: float = 0.0,
    shear: float = 0.0,
    perspective: float = 0.0,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A 4-image mosaic and its random perspective, as :func:`mosaic4` then
    :func:`random_perspective` with ``border = -size // 2`` (the same draws from ``rng``), into a
    **channels-first** ``uint8 [3, size, size]`` image. A scale + translate draw (no rotation,
    shear or perspective: the default recipes) takes :func:`mosaic4_warp`, written into ``out``
    when given."""
    side = 2 * size
    out_shape = (side - 2 * (size // 2), side - 2 * (size // 2))
    m, s = _affine_matrix(rng, (side, side), out_shape, degrees, translate, scale, shear, perspective)
    if m[0, 1] == 0.0 and m[1, 0] == 0.0 and m[2, 0] == 0.0 and m[2, 1] == 0.0 and out_shape == (size, size):
        return mosaic4_warp(images, labels, size, centre, m, out)
    canvas, lab = mosaic4(images, labels, size, centre)
    img = warp(canvas, m, out_shape)
    return np.ascontiguousarray(img.transpose(2, 0, 1)), _map_labels(lab, m, s, out_shape)
