"""The training-item pipeline as it was before the fast image path (#21), kept callable so that
``data_throughput.py`` can time old and new side by side in one run (interleaved).

:class:`LegacyDataset` is a :class:`yoloattn.data.YoloDataset` whose image reading, mosaic,
perspective and HSV steps are frozen copies of the Pillow-based code: PIL decode + EXIF
transpose + convert, PIL HSV round trip with a point() LUT, a 1280 x 1280 mosaic canvas and a
PIL box-resize for the scale + translate warp. Only used by the benchmarks.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from yoloattn.data import augment as A
from yoloattn.data import dataset as D
from yoloattn.data.boxes import xywhn2xyxy, xyxy2xywhn
from yoloattn.data.scan import exif_size, to_rgb

FILL = 114


def read_image(
    path: str | os.PathLike[str], long_side: int | None = None, shrink: int = Image.Resampling.BOX
) -> tuple[np.ndarray, tuple[int, int]]:
    """PIL decode, EXIF transpose, convert to RGB, optional resize (the old ``read_image``)."""
    with Image.open(path) as src:
        ws, hs = src.size
        w0, h0 = exif_size(src)
        r = long_side / max(ws, hs) if long_side else 1.0
        if r < 0.5 and src.format in ("JPEG", "MPO"):
            src.draft(None, (math.ceil(ws * r), math.ceil(hs * r)))
        im: Image.Image = to_rgb(ImageOps.exif_transpose(src), src.format)
        if long_side and r != 1.0:
            w, h = (min(long_side, max(1, math.ceil(v * r - 1e-9))) for v in (w0, h0))
            if im.size != (w, h):
                im = im.resize((w, h), Image.Resampling.BILINEAR if r > 1 else shrink)
        return np.asarray(im), (h0, w0)


def augment_hsv(
    img: np.ndarray, rng: np.random.Generator, hgain: float = 0.5, sgain: float = 0.5, vgain: float = 0.5
) -> np.ndarray:
    """The old HSV step: PIL RGB -> HSV, a point() LUT, HSV -> RGB."""
    if hgain == 0 and sgain == 0 and vgain == 0:
        return img
    dh, gs, gv = rng.uniform(-1.0, 1.0, 3) * (hgain, sgain, vgain)
    x = np.arange(256, dtype=np.float64)
    lut_h = np.mod(np.round(x + dh * 256.0), 256)
    lut_s = np.clip(np.round(x * (1.0 + gs)), 0, 255)
    lut_v = np.clip(np.round(x * (1.0 + gv)), 0, 255)
    lut = np.concatenate([lut_h, lut_s, lut_v]).astype(np.int64).tolist()
    hsv = Image.fromarray(img, "RGB").convert("HSV")
    return np.asarray(hsv.point(lut).convert("RGB"))


def _canvas(shape: tuple[int, ...], color: int = FILL) -> np.ndarray:
    return np.full(shape, color, dtype=np.uint8)


def warp_scale_translate(
    img: np.ndarray, sx: float, sy: float, tx: float, ty: float, out_shape: tuple[int, int]
) -> np.ndarray:
    """The old scale + translate fast path: a new grey canvas and one PIL box resize."""
    h, w = out_shape
    src_h, src_w = img.shape[:2]
    canvas = _canvas((h, w, *img.shape[2:]))
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
    patch = Image.fromarray(img).resize(size, Image.Resampling.BILINEAR, box=box)
    canvas[oy0:oy1, ox0:ox1] = np.asarray(patch)
    return canvas


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
) -> tuple[np.ndarray, np.ndarray]:
    """The old random perspective (scale + translate matrices only; others are not timed)."""
    h, w = img.shape[:2]
    out_shape = (h + 2 * border[0], w + 2 * border[1])
    labels = np.asarray(labels, dtype=np.float32).reshape(-1, 5)
    m, s = A._affine_matrix(rng, (h, w), out_shape, degrees, translate, scale, shear, perspective)
    if out_shape == (h, w) and np.array_equal(m, np.eye(3)):
        return img.copy(), labels.copy()
    if m[0, 1] or m[1, 0] or m[2, 0] or m[2, 1]:
        raise NotImplementedError("the legacy benchmark pipeline times scale + translate warps only")
    out = warp_scale_translate(img, m[0, 0], m[1, 1], m[0, 2], m[1, 2], out_shape)
    if len(labels):
        boxes = A.transform_boxes(labels[:, 1:5], m)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, out_shape[1])
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, out_shape[0])
        keep = A.box_candidates(labels[:, 1:5] * s, boxes)
        labels = np.concatenate([labels[keep, :1], boxes[keep]], axis=1).astype(np.float32)
    return out, labels


def mosaic4(
    images: list[np.ndarray], labels: list[np.ndarray], size: int, centre: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The old mosaic: four tiles pasted on a new ``2 * size`` grey canvas."""
    side = 2 * size
    xc, yc = centre
    canvas = _canvas((side, side, 3))
    out_labels = []
    for k, (im, lab) in enumerate(zip(images, labels)):
        h, w = im.shape[:2]
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


class LegacyDataset(D.YoloDataset):
    """A YoloDataset running the pre-#21 training pipeline (mosaic items only)."""

    def load_image(self, i: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
        shrink = Image.Resampling.BILINEAR if self.augment else Image.Resampling.BOX
        img, (h0, w0) = read_image(self.im_files[i], self.imgsz, shrink)
        return img, (h0, w0), img.shape[:2]

    def _mosaic_old(self, index: int, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.imgsz
        layout_rng = self._rng(seed, epoch, index, D._S_MOSAIC, 1)
        centre = (
            int(layout_rng.integers(s // 2, s + s // 2 + 1)),
            int(layout_rng.integers(s // 2, s + s // 2 + 1)),
        )
        indices = [index, *(int(j) for j in layout_rng.integers(0, len(self), 3))]
        imgs = [self.load_image(j)[0] for j in indices]
        canvas, labels = mosaic4(imgs, [self.labels[j] for j in indices], s, centre)
        p = self.hyp
        return random_perspective(
            canvas,
            labels,
            self._rng(seed, epoch, index, D._S_AFFINE),
            degrees=p.degrees,
            translate=p.translate,
            scale=p.scale,
            shear=p.shear,
            perspective=p.perspective,
            border=(-(s // 2), -(s // 2)),
        )

    def __getitem__(self, key: Any) -> tuple[torch.Tensor, torch.Tensor, str, None]:
        index, epoch, seed = self._unpack(key)
        p = self.hyp
        if not (self.mosaic and self._rng(seed, epoch, index, D._S_MOSAIC).random() < p.mosaic):
            raise NotImplementedError("the legacy benchmark pipeline times mosaic items only")
        img, labels = self._mosaic_old(index, seed, epoch)
        h, w = img.shape[:2]
        labels = np.asarray(labels, dtype=np.float32).reshape(-1, 5)
        labels = np.concatenate([labels[:, :1], xyxy2xywhn(labels[:, 1:5], w, h, clip=True)], 1)
        img = augment_hsv(img, self._rng(seed, epoch, index, D._S_HSV), p.hsv_h, p.hsv_s, p.hsv_v)
        if p.flipud > 0 and self._rng(seed, epoch, index, D._S_FLIPUD).random() < p.flipud:
            img, labels = A.flipud(img, labels)
        if p.fliplr > 0 and self._rng(seed, epoch, index, D._S_FLIPLR).random() < p.fliplr:
            img, labels = A.fliplr(img, labels)
        targets = torch.zeros((len(labels), 6), dtype=torch.float32)
        targets[:, 1:] = torch.from_numpy(labels.astype(np.float32))
        chw = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        return chw, targets, self.im_files[index], None
