"""The torch ``Dataset`` of a checked YOLO-format split (:class:`YoloDataset`) and image reading.

A :class:`YoloDataset` scans its sources once (:func:`yoloattn.data.scan.scan_split`, through the
scan cache), logs the report's summary and first problems, and serves letterboxed (validation)
or augmented (training: mosaic, mixup, perspective, HSV, flips) items. Every random draw of an
item comes from ``numpy.random.default_rng([seed, epoch, index, stream])``, so an item depends
only on those numbers.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from yoloattn.data.augment import (
    AugmentParams,
    augment_hsv,
    letterbox,
    mixup,
    random_perspective,
)
from yoloattn.data.boxes import xywhn2xyxy, xyxy2xywhn
from yoloattn.data.mosaic import random_mosaic
from yoloattn.data.report import ScanReport
from yoloattn.data.scan import scan_split, to_rgb

__all__ = ["YoloDataset", "read_image"]

LOGGER = logging.getLogger(__name__)

# Random streams of one sample: np.random.default_rng([seed, epoch, index, *stream]).
_S_MOSAIC, _S_AFFINE, _S_MIXUP, _S_HSV, _S_FLIPUD, _S_FLIPLR = 1, 2, 3, 4, 5, 6


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation tag of ``im`` (1 when absent or unreadable)."""
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block must not reject a decodable image (as the scan)
        return 1


def _decode_jpeg(path: str | os.PathLike[str]) -> np.ndarray | None:
    """A JPEG decoded by torchvision (libjpeg-turbo, EXIF orientation applied) as ``uint8
    [H, W, 3]`` RGB, or None when torchvision cannot decode it or no longer has the decoder
    (its image decoders are deprecated since 0.29): the caller then reads it with Pillow."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None
    with open(path, "rb") as f:
        data = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            chw = decode_jpeg(data, mode=ImageReadMode.RGB, apply_exif_orientation=True)
    except (RuntimeError, ValueError):  # e.g. 12-bit or damaged data: Pillow's reading decides
        return None
    if chw.ndim != 3 or chw.shape[0] != 3:
        return None
    return np.ascontiguousarray(chw.permute(1, 2, 0).numpy())  # decoded HWC: usually no copy


def read_image(
    path: str | os.PathLike[str], long_side: int | None = None, shrink: int = Image.Resampling.BOX
) -> tuple[np.ndarray, tuple[int, int]]:
    """Read an image as ``uint8 [H, W, 3]`` RGB with the EXIF orientation applied (greyscale,
    palette, RGBA and CMYK are converted to RGB, 16-bit greyscale keeps its high byte; see
    :func:`yoloattn.data.scan.to_rgb`). Returns ``(img, (h0, w0))``, the original size.

    With ``long_side`` the image is resized so that its long side is ``long_side`` (the other
    side ``ceil``-ed), bilinear when enlarging and with ``shrink`` when reducing; a JPEG more
    than twice too large is first decoded by Pillow at a reduced DCT scale (1/2, 1/4 or 1/8).
    Other RGB and greyscale JPEGs are decoded by torchvision (the same libjpeg-turbo pixels as
    Pillow's, straight into the array), the rest by Pillow; an image that needs no rotation is
    not copied for it.
    """
    with Image.open(path) as src:
        ws, hs = src.size
        orientation = _orientation(src)
        w0, h0 = (hs, ws) if orientation in (5, 6, 7, 8) else (ws, hs)
        r = long_side / max(ws, hs) if long_side else 1.0
        arr = None
        if src.format in ("JPEG", "MPO") and r >= 0.5 and src.mode in ("RGB", "L"):
            arr = _decode_jpeg(path)
            if arr is not None and arr.shape[:2] != (h0, w0):  # EXIF read differently: Pillow's way
                arr = None
        if arr is None:
            if r < 0.5 and src.format in ("JPEG", "MPO"):
                src.draft(None, (math.ceil(ws * r), math.ceil(hs * r)))
            im: Image.Image = ImageOps.exif_transpose(src) if orientation in range(2, 9) else src
            im = to_rgb(im, src.format)
        if long_side and r != 1.0:
            w, h = (min(long_side, max(1, math.ceil(v * r - 1e-9))) for v in (w0, h0))
            if arr is not None and arr.shape[:2] != (h, w):
                im, arr = Image.fromarray(arr), None
            if arr is None and im.size != (w, h):
                im = im.resize((w, h), Image.Resampling.BILINEAR if r > 1 else shrink)
        return (arr if arr is not None else np.asarray(im)), (h0, w0)


def _log_report(report: ScanReport, max_problems: int = 10) -> None:
    """Log the report's summary line and its first ``max_problems`` problems."""
    LOGGER.info("%s", report.summary())
    lines = report.problem_lines(max_problems)
    for line in lines:
        LOGGER.warning("%s%s", report.prefix, line)
    if len(report.problems) > max_problems:
        LOGGER.warning("%srun `yoloattn data check DATA.yaml` to list every problem", report.prefix)


class YoloDataset(torch.utils.data.Dataset):
    """A checked YOLO-format split as a torch ``Dataset``.

    Items are ``(img, targets, path, shapes)``: ``img`` a ``uint8 [3, H, W]`` RGB tensor;
    ``targets`` float32 ``[n, 6]`` = (0, class, x, y, w, h) normalised to the returned image
    (column 0 is filled with the batch index by :func:`yoloattn.data.loader.collate_fn`);
    ``shapes`` = ``((h0, w0), ((h / h0, w / w0), (padw, padh)))`` to map boxes back to the
    original image, or None for a mosaic.

    Indexing with an int uses ``self.seed``/``self.epoch``; the loader's batch sampler passes
    ``(index, epoch, seed)`` keys so augmentation depends only on those three numbers (not on
    worker count or global RNG state).

    Args:
        sources: image folder(s) / ``.txt`` list(s) (e.g. ``DatasetConfig.train``).
        imgsz: training/validation size (a multiple of ``stride``).
        augment: enable the training augmentations driven by ``hyp``.
        hyp: hyper-parameters (see :class:`yoloattn.data.augment.AugmentParams`); None = defaults.
        rect: rectangular batches: ``im_files``/``labels``/``shapes`` are re-ordered by aspect
            ratio h/w and each run of ``batch_size`` images gets the shape
            ``ceil(ratio * imgsz / stride + pad) * stride`` (``batch_shapes``); disables mosaic.
        batch_size, stride, pad: rect batch-shape parameters.
        per_image: with ``rect``, no image is padded to another image's shape: each image gets
            its own shape ``ceil(ratio * imgsz / stride + pad) * stride`` (its aspect ratio
            alone; with ``pad=0`` the long side is ``imgsz`` and the short side is padded up to
            the next multiple of ``stride``) and a batch group holds only images of one shape,
            at most ``batch_size`` of them. The groups do not depend on ``batch_size`` beyond
            how each run of equal shapes is cut, so every image is served identically whatever
            the batch size (the batch-size-independent validation protocol).
        seed: augmentation seed for int indexing.
        cache_dir: scan-cache location override.
        prefix: log/error prefix.
        nc: number of classes for the class-id check (None: ids only need to be >= 0).
        use_cache: read the scan cache when valid.
        cache_images: decode and resize every image once and keep it in RAM (the official
            ``--cache ram``); skipped with a warning when it would take more than half of the
            available memory. Items are identical with and without it.
        single_cls: train/validate as one class: every label's class becomes 0 (after the
            class ids were checked against ``nc``).
    """

    def __init__(
        self,
        sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        imgsz: int = 640,
        augment: bool = False,
        hyp: Mapping[str, Any] | None = None,
        rect: bool = False,
        batch_size: int = 16,
        stride: int = 32,
        pad: float = 0.0,
        seed: int = 0,
        cache_dir: str | os.PathLike[str] | None = None,
        prefix: str = "",
        *,
        nc: int | None = None,
        use_cache: bool = True,
        cache_images: bool = False,
        single_cls: bool = False,
        per_image: bool = False,
    ) -> None:
        if stride <= 0 or imgsz <= 0 or imgsz % stride:
            raise ValueError(f"{prefix}imgsz={imgsz} must be a positive multiple of the stride {stride}")
        if batch_size <= 0:
            raise ValueError(f"{prefix}batch_size must be positive, got {batch_size}")
        if seed < 0:
            raise ValueError(f"{prefix}seed must be >= 0, got {seed}")
        self.sources = [sources] if isinstance(sources, str | os.PathLike) else list(sources)
        self.imgsz = int(imgsz)
        self.augment = bool(augment)
        self.hyp = AugmentParams.from_hyp(hyp)
        self.rect = bool(rect)
        self.per_image = bool(per_image)
        self.batch_size = int(batch_size)
        self.stride = int(stride)
        self.pad = float(pad)
        self.seed = int(seed)
        self.epoch = 0
        self.prefix = prefix
        self.report = scan_split(self.sources, nc=nc, cache_dir=cache_dir, prefix=prefix, use_cache=use_cache)
        _log_report(self.report)
        self.report.raise_if_empty(self.sources)
        self.im_files: list[str] = list(self.report.im_files)
        self.label_files: list[str] = list(self.report.label_files)
        self.labels: list[np.ndarray] = list(self.report.labels)
        if single_cls:
            self.labels = [np.concatenate((np.zeros_like(lab[:, :1]), lab[:, 1:]), 1) for lab in self.labels]
        self.shapes: np.ndarray = self.report.shapes.copy()  # (h, w) per image
        self.mosaic = self.augment and not self.rect and self.hyp.mosaic > 0
        self.batch_shapes: np.ndarray | None = None
        self.batch_index: np.ndarray | None = None
        self._groups: list[list[int]] | None = None
        if self.rect:
            self._init_per_image() if self.per_image else self._init_rect()
        self._ims: list[np.ndarray] | None = None
        if cache_images:
            self._cache_images()

    # ------------------------------------------------------------------ structure
    def __len__(self) -> int:
        return len(self.im_files)

    def set_epoch(self, epoch: int) -> None:
        """Epoch used by int indexing (the loader passes it explicitly with each index)."""
        self.epoch = int(epoch)

    def _init_rect(self) -> None:
        h, w = self.shapes[:, 0].astype(np.float64), self.shapes[:, 1].astype(np.float64)
        order = np.argsort(h / w, kind="stable")
        self.im_files = [self.im_files[i] for i in order]
        self.label_files = [self.label_files[i] for i in order]
        self.labels = [self.labels[i] for i in order]
        self.shapes = self.shapes[order]
        ar = (self.shapes[:, 0] / self.shapes[:, 1]).astype(np.float64)
        bi = np.arange(len(ar)) // self.batch_size
        nb = int(bi[-1]) + 1
        rel = np.ones((nb, 2), dtype=np.float64)  # (h, w) relative to imgsz
        for b in range(nb):
            a = ar[bi == b]
            lo, hi = a.min(), a.max()
            if hi < 1:
                rel[b] = (hi, 1.0)
            elif lo > 1:
                rel[b] = (1.0, 1.0 / lo)
        self.batch_shapes = np.ceil(rel * self.imgsz / self.stride + self.pad).astype(np.int64) * self.stride
        self.batch_index = bi

    def _init_per_image(self) -> None:
        h, w = self.shapes[:, 0].astype(np.float64), self.shapes[:, 1].astype(np.float64)
        ar = h / w
        rel = np.ones((len(ar), 2), dtype=np.float64)  # (h, w) relative to imgsz, per image
        rel[ar < 1, 0] = ar[ar < 1]
        rel[ar > 1, 1] = 1.0 / ar[ar > 1]
        own = np.ceil(rel * self.imgsz / self.stride + self.pad).astype(np.int64) * self.stride
        # order by (shape, aspect ratio, scan order): equal shapes are contiguous and the order
        # does not depend on batch_size
        order = np.lexsort((np.arange(len(ar)), ar, own[:, 1], own[:, 0]))
        self.im_files = [self.im_files[i] for i in order]
        self.label_files = [self.label_files[i] for i in order]
        self.labels = [self.labels[i] for i in order]
        self.shapes = self.shapes[order]
        own = own[order]
        groups: list[list[int]] = []
        shapes: list[np.ndarray] = []
        index = np.zeros(len(order), dtype=np.int64)
        start = 0
        for i in range(1, len(order) + 1):
            if i == len(order) or (own[i] != own[start]).any():
                for s in range(start, i, self.batch_size):
                    index[s : min(s + self.batch_size, i)] = len(groups)
                    groups.append(list(range(s, min(s + self.batch_size, i))))
                    shapes.append(own[start])
                start = i
        self.batch_shapes = np.stack(shapes).astype(np.int64)
        self.batch_index = index
        self._groups = groups

    def batch_groups(self) -> list[list[int]] | None:
        """Index groups that must form one batch (rect mode), else None."""
        if self.batch_index is None:
            return None
        if self._groups is not None:
            return [list(g) for g in self._groups]
        n = len(self)
        return [list(range(s, min(s + self.batch_size, n))) for s in range(0, n, self.batch_size)]

    # ------------------------------------------------------------------ loading
    def _cache_images(self) -> None:
        scale = self.imgsz / self.shapes.max(1)
        need = int(sum(round(h * r) * round(w * r) * 3 for (h, w), r in zip(self.shapes, scale)))
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # not available on this platform
            avail = None
        procs = max(int(os.environ.get("LOCAL_WORLD_SIZE", 1)), 1)  # every DDP process on this node caches
        if avail is not None and need * procs > avail / 2:
            LOGGER.warning(
                "%snot caching images: %d process(es) x %.1f GB is more than half of the %.1f GB available",
                self.prefix,
                procs,
                need / 1e9,
                avail / 1e9,
            )
            return
        ims = []
        for i in range(len(self)):
            img = self.load_image(i)[0]
            img.flags.writeable = False  # shared by every epoch (and forked workers): never mutated
            ims.append(img)
        self._ims = ims
        LOGGER.info("%scached %d images in RAM (%.2f GB)", self.prefix, len(ims), need / 1e9)

    def load_image(self, i: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
        """Image ``i`` resized so its long side is ``imgsz``: ``(img, (h0, w0), (h, w))``.

        Shrinking is bilinear when augmenting and area-like (box filter) otherwise, as in
        the official loaders (INTER_LINEAR / INTER_AREA). With ``cache_images`` the array is
        the cached, read-only one.
        """
        if self._ims is not None:
            img = self._ims[i]
            h0, w0 = (int(v) for v in self.shapes[i])
            return img, (h0, w0), img.shape[:2]
        shrink = Image.Resampling.BILINEAR if self.augment else Image.Resampling.BOX
        img, (h0, w0) = read_image(self.im_files[i], self.imgsz, shrink)
        return img, (h0, w0), img.shape[:2]

    @staticmethod
    def _rng(seed: int, epoch: int, index: int, *stream: int) -> np.random.Generator:
        return np.random.default_rng([seed, epoch, index, *stream])

    def _mosaic(
        self, index: int, layout_rng: np.random.Generator, affine_rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """A mosaic around image ``index`` and its random perspective: a channels-first
        ``uint8 [3, imgsz, imgsz]`` image and (cls, x1, y1, x2, y2) pixel labels."""
        s = self.imgsz
        centre = (
            int(layout_rng.integers(s // 2, s + s // 2 + 1)),
            int(layout_rng.integers(s // 2, s + s // 2 + 1)),
        )
        indices = [index, *(int(j) for j in layout_rng.integers(0, len(self), 3))]
        imgs = [self.load_image(j)[0] for j in indices]
        p = self.hyp
        return random_mosaic(
            imgs,
            [self.labels[j] for j in indices],
            s,
            centre,
            affine_rng,
            degrees=p.degrees,
            translate=p.translate,
            scale=p.scale,
            shear=p.shear,
            perspective=p.perspective,
        )

    def _warp(
        self, img: np.ndarray, labels: np.ndarray, rng: np.random.Generator, border: tuple[int, int] = (0, 0)
    ) -> tuple[np.ndarray, np.ndarray]:
        """The random perspective/affine step with this dataset's ``hyp``."""
        p = self.hyp
        return random_perspective(
            img,
            labels,
            rng,
            degrees=p.degrees,
            translate=p.translate,
            scale=p.scale,
            shear=p.shear,
            perspective=p.perspective,
            border=border,
        )

    def _unpack(self, key: int | tuple[int, int, int] | Sequence[int]) -> tuple[int, int, int]:
        if isinstance(key, int | np.integer):
            index, epoch, seed = int(key), self.epoch, self.seed
        else:
            index, epoch, seed = (int(k) for k in key)
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{self.prefix}index {index} out of range for {n} images")
        return index % n, epoch, seed

    def __getitem__(
        self, key: int | tuple[int, int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, str, tuple[Any, ...] | None]:
        index, epoch, seed = self._unpack(key)
        p = self.hyp
        shapes: tuple[Any, ...] | None = None
        if self.mosaic and self._rng(seed, epoch, index, _S_MOSAIC).random() < p.mosaic:
            img, labels = self._mosaic(
                index, self._rng(seed, epoch, index, _S_MOSAIC, 1), self._rng(seed, epoch, index, _S_AFFINE)
            )
            if p.mixup > 0:
                mrng = self._rng(seed, epoch, index, _S_MIXUP)
                if mrng.random() < p.mixup:
                    j = int(mrng.integers(0, len(self)))
                    img2, labels2 = self._mosaic(
                        j,
                        self._rng(seed, epoch, index, _S_MIXUP, 1),
                        self._rng(seed, epoch, index, _S_MIXUP, 2),
                    )
                    img, labels = mixup(
                        img, labels, img2, labels2, float(mrng.beta(p.mixup_alpha, p.mixup_alpha))
                    )
        else:
            img, (h0, w0), (h, w) = self.load_image(index)
            shape = (self.imgsz, self.imgsz)
            if self.batch_shapes is not None and self.batch_index is not None:
                bh, bw = (int(v) for v in self.batch_shapes[self.batch_index[index]])
                shape = (bh, bw)
            img, (rw, rh), (padw, padh) = letterbox(img, shape, auto=False, scaleup=self.augment)
            uw, uh = int(round(w * rw)), int(round(h * rh))
            shapes = ((h0, w0), ((uh / h0, uw / w0), (padw, padh)))
            lab = self.labels[index]
            labels = np.concatenate([lab[:, :1], xywhn2xyxy(lab[:, 1:5], uw, uh, padw, padh)], 1)
            if self.augment:
                img, labels = self._warp(img, labels, self._rng(seed, epoch, index, _S_AFFINE))
            img = np.ascontiguousarray(img.transpose(2, 0, 1))  # channels first from here on
        h, w = img.shape[1:]
        labels = np.asarray(labels, dtype=np.float32).reshape(-1, 5)
        labels = np.concatenate([labels[:, :1], xyxy2xywhn(labels[:, 1:5], w, h, clip=True)], 1)
        if self.augment:
            hsv_rng = self._rng(seed, epoch, index, _S_HSV)
            img = augment_hsv(img, hsv_rng, p.hsv_h, p.hsv_s, p.hsv_v, channels_first=True)
            if p.flipud > 0 and self._rng(seed, epoch, index, _S_FLIPUD).random() < p.flipud:
                img = np.ascontiguousarray(img[:, ::-1])
                labels[:, 2] = 1.0 - labels[:, 2]
            if p.fliplr > 0 and self._rng(seed, epoch, index, _S_FLIPLR).random() < p.fliplr:
                img = np.ascontiguousarray(img[:, :, ::-1])
                labels[:, 1] = 1.0 - labels[:, 1]
        targets = torch.zeros((len(labels), 6), dtype=torch.float32)
        targets[:, 1:] = torch.from_numpy(labels.astype(np.float32))
        return torch.from_numpy(img), targets, self.im_files[index], shapes
