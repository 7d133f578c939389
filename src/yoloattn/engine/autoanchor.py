"""AutoAnchor: check the head's anchors against the dataset labels and evolve better ones.

Written from ``shared/spec/yolo-architectures.md`` section 6.2 (both YOLOv5 and YOLOv7): at
train start the anchor fit is measured with the loss threshold ``anchor_t``; when the best
possible recall is at most 0.98, new anchors are found by k-means and refined by a genetic
algorithm, and they replace the old ones only if they fit better.

Metric (``wh`` label sizes ``(N, 2)`` and anchors ``k`` ``(M, 2)``, both in pixels):

* ``r = wh[:, None] / k[None]``, ``x = min(r, 1 / r).min(over w, h)`` ``(N, M)``: 1 for a
  perfect match, ``1 / thr`` where the loss stops matching a target to that anchor;
* ``best = x.max(1)``; best possible recall ``bpr = mean(best > 1 / thr)``; anchors above
  threshold ``aat = mean(count(x > 1 / thr))``; fitness ``mean(best * (best > 1 / thr))``.

The clustering is Lloyd's algorithm ("Least squares quantization in PCM", S. P. Lloyd, IEEE
Transactions on Information Theory, 1982) on whitened sizes, seeded by k-means++ ("k-means++:
The Advantages of Careful Seeding", D. Arthur and S. Vassilvitskii, SODA 2007). All randomness
comes from local ``numpy.random.default_rng(seed)`` generators, so results are reproducible and
the global RNG state is untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from yoloattn.nn import Detect

__all__ = [
    "AnchorReport",
    "anchor_fitness",
    "anchor_metrics",
    "check_anchor_order",
    "check_anchors",
    "kmean_anchors",
    "label_wh",
]

LOGGER = logging.getLogger("yoloattn.train")

#: anchors are kept when the best possible recall is above this value.
BPR_KEEP = 0.98


# ---------------------------------------------------------------------------------- metrics


def _check_thr(thr: float) -> float:
    thr = float(thr)
    if not thr > 1.0:
        raise ValueError(
            f"AutoAnchor: thr (hyp 'anchor_t') must be > 1, it bounds max(ratio, 1/ratio) of a "
            f"target to anchor size; got {thr!r}"
        )
    return thr


def _as_wh(wh: Any, name: str = "wh") -> np.ndarray:
    a = np.asarray(wh, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"AutoAnchor: {name} must be an (N, 2) array of (w, h) in pixels, got {a.shape}")
    return a


def _ratio_metric(wh: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``x`` ``(N, M)``: the worse of the two side ratios, folded into (0, 1]."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rw = wh[:, :1] / k[None, :, 0]
        rh = wh[:, 1:] / k[None, :, 1]
        x = np.minimum(np.minimum(rw, 1.0 / rw), np.minimum(rh, 1.0 / rh))
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def anchor_metrics(wh: Any, anchors: Any, thr: float = 4.0) -> tuple[float, float]:
    """``(bpr, aat)`` of ``anchors`` ``(M, 2)`` for label sizes ``wh`` ``(N, 2)``, both in pixels.

    ``bpr``: fraction of labels whose best anchor is within ``thr`` in both sides;
    ``aat``: mean number of anchors per label within ``thr``. Empty ``wh`` gives ``(0, 0)``.
    """
    thr = _check_thr(thr)
    wh, k = _as_wh(wh), _as_wh(anchors, "anchors")
    if len(wh) == 0:
        return 0.0, 0.0
    x = _ratio_metric(wh, k)
    best = x.max(1)
    return float((best > 1.0 / thr).mean()), float((x > 1.0 / thr).sum(1).mean())


def anchor_fitness(wh: Any, anchors: Any, thr: float = 4.0) -> float:
    """``mean(best * (best > 1 / thr))``: the quantity the genetic refinement maximises."""
    thr = _check_thr(thr)
    wh, k = _as_wh(wh), _as_wh(anchors, "anchors")
    if len(wh) == 0:
        return 0.0
    best = _ratio_metric(wh, k).max(1)
    return float((best * (best > 1.0 / thr)).mean())


# ---------------------------------------------------------------------------------- labels


def _dataset_arrays(dataset: Any) -> tuple[list[np.ndarray], np.ndarray]:
    if not hasattr(dataset, "labels") or not hasattr(dataset, "shapes"):
        raise TypeError(
            f"AutoAnchor: the dataset ({type(dataset).__name__}) needs '.labels' (per-image "
            f"(n, 5) arrays: class, x, y, w, h normalised) and '.shapes' ((n_images, 2) = (h, w)), "
            f"as yoloattn.data.YoloDataset has"
        )
    labels = [np.asarray(lab, dtype=np.float64) for lab in dataset.labels]
    shapes = np.asarray(dataset.shapes, dtype=np.float64).reshape(-1, 2) if len(labels) else np.zeros((0, 2))
    if len(shapes) != len(labels):
        raise ValueError(
            f"AutoAnchor: dataset has {len(labels)} label arrays but {len(shapes)} image shapes; "
            f"'.labels' and '.shapes' must describe the same images in the same order"
        )
    return labels, shapes


def label_wh(
    labels: Sequence[Any],
    shapes: Any,
    imgsz: int = 640,
    seed: int = 0,
    scale_range: tuple[float, float] = (0.9, 1.1),
) -> np.ndarray:
    """Label sizes ``(N, 2)`` (w, h) in pixels at training size ``imgsz``.

    Args:
        labels: per-image arrays ``(n, 5)`` = class, x, y, w, h (normalised to [0, 1]).
        shapes: ``(n_images, 2)`` original ``(h, w)`` of each image.
        imgsz: training size; an image is scaled by ``imgsz / max(h, w)``.
        seed: seed of the per-image random scale (one draw per image, also for images without
            labels, so the draws do not depend on which images are backgrounds).
        scale_range: bounds of that uniform random scale (augmentation jitter).
    """
    if imgsz <= 0:
        raise ValueError(f"AutoAnchor: imgsz must be positive, got {imgsz!r}")
    shapes = np.asarray(shapes, dtype=np.float64).reshape(-1, 2)
    if len(shapes) != len(labels):
        raise ValueError(f"AutoAnchor: {len(labels)} label arrays but {len(shapes)} image shapes")
    if np.any(shapes <= 0):
        bad = int(np.flatnonzero((shapes <= 0).any(1))[0])
        raise ValueError(f"AutoAnchor: image {bad} has a non-positive shape (h, w) = {tuple(shapes[bad])}")
    rng = np.random.default_rng(seed)
    aug = rng.uniform(scale_range[0], scale_range[1], size=len(labels))
    img_wh = shapes[:, ::-1] * (imgsz / shapes.max(1, keepdims=True))  # (w, h) at imgsz
    out = []
    for i, lab in enumerate(labels):
        lab = np.asarray(lab, dtype=np.float64)
        if lab.size == 0:
            continue
        if lab.ndim != 2 or lab.shape[1] < 5:
            raise ValueError(
                f"AutoAnchor: labels of image {i} must be (n, 5) = class, x, y, w, h; got shape {lab.shape}"
            )
        out.append(lab[:, 3:5] * img_wh[i] * aug[i])
    if not out:
        return np.zeros((0, 2))
    wh = np.concatenate(out, 0)
    return wh[np.isfinite(wh).all(1)]


# ---------------------------------------------------------------------------------- k-means


def _sort_by_area(k: np.ndarray) -> np.ndarray:
    return k[np.argsort(k.prod(1), kind="stable")]


def _kmeans_pp_init(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    centres = [x[rng.integers(len(x))]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, n):
        total = d2.sum()
        idx = int(rng.choice(len(x), p=d2 / total)) if total > 0 else int(rng.integers(len(x)))
        centres.append(x[idx])
        d2 = np.minimum(d2, ((x - x[idx]) ** 2).sum(1))
    return np.stack(centres, 0)


def _kmeans(x: np.ndarray, n: int, rng: np.random.Generator, iters: int = 30) -> np.ndarray:
    """Lloyd's k-means on ``x`` ``(N, 2)``; returns ``n`` centres (never fails)."""
    n_unique = len(np.unique(x, axis=0))
    if n_unique >= n:
        c = _kmeans_pp_init(x, n, rng)
    else:
        LOGGER.warning(
            "AutoAnchor: only %d distinct label sizes for %d anchors; k-means starts from random "
            "jittered label sizes, so several anchors will be near-duplicates",
            n_unique,
            n,
        )
        c = x[rng.integers(len(x), size=n)] * rng.uniform(0.5, 1.5, size=(n, 2))
    assign = None
    for _ in range(iters):
        d2 = (x[:, :1] - c[None, :, 0]) ** 2 + (x[:, 1:] - c[None, :, 1]) ** 2  # (N, n)
        new = d2.argmin(1)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        count = np.bincount(assign, minlength=n)
        full = count > 0  # an empty cluster keeps its centre
        for d in range(2):
            c[full, d] = np.bincount(assign, weights=x[:, d], minlength=n)[full] / count[full]
    return c


def kmean_anchors(
    wh: Any,
    n: int = 9,
    thr: float = 4.0,
    gen: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """Evolve ``n`` anchors ``(n, 2)`` in pixels for label sizes ``wh`` ``(N, 2)``, sorted by area.

    Boxes under 2 px in both sides are dropped; k-means (30 Lloyd iterations, k-means++ seeds)
    on sizes divided by their per-dimension std gives the start, then ``gen`` generations of
    multiplicative mutation of the best anchors keep a candidate when its fitness
    (:func:`anchor_fitness`) improves. Deterministic for a given ``seed``.
    """
    thr = _check_thr(thr)
    wh0 = _as_wh(wh)
    if len(wh0) == 0:
        raise ValueError("AutoAnchor: kmean_anchors needs at least one label size, got an empty array")
    if not np.isfinite(wh0).all():
        raise ValueError("AutoAnchor: kmean_anchors got non-finite label sizes (NaN or inf) in wh")
    if int(n) < 1:
        raise ValueError(f"AutoAnchor: number of anchors must be >= 1, got {n!r}")
    if int(gen) < 0:
        raise ValueError(f"AutoAnchor: number of generations must be >= 0, got {gen!r}")
    n, gen = int(n), int(gen)
    rng = np.random.default_rng(seed)

    n_small = int((wh0 < 3.0).any(1).sum())
    if n_small:
        LOGGER.warning(
            "AutoAnchor: %d of %d labels are smaller than 3 pixels; consider a larger image size",
            n_small,
            len(wh0),
        )
    wh_ = wh0[(wh0 >= 2.0).any(1)]  # as officially: a box stays if either side reaches 2 px
    if len(wh_) == 0:
        LOGGER.warning(
            "AutoAnchor: every label is under 2 pixels in both sides; clustering them clipped to 2 px"
        )
        wh_ = wh0.clip(min=2.0)

    # k-means on whitened sizes
    s = wh_.std(0)
    s[s <= 0] = 1.0
    k = _kmeans(wh_ / s, n, rng) * s
    k = _sort_by_area(k.clip(min=2.0))

    # genetic refinement; fitness in log space (float32): best = exp(-min_k max_wh |log(wh / k)|)
    # (the (M, N) layout keeps every reduction along the long, contiguous box axis: fast)
    lw, lh = np.ascontiguousarray(np.log(wh_).astype(np.float32).T)
    log_thr = np.float32(np.log(thr))

    def fitness(k: np.ndarray) -> float:
        lk = np.log(k).astype(np.float32)
        d = np.maximum(np.abs(lw[None] - lk[:, :1]), np.abs(lh[None] - lk[:, 1:])).min(0)
        return float((np.exp(-d) * (d < log_thr)).mean(dtype=np.float64))

    f = f0 = fitness(k)
    mp, sigma = 0.9, 0.1
    for _ in range(gen):
        v = np.ones_like(k)
        while (v == 1.0).all():
            v = 1.0 + (rng.random(k.shape) < mp) * rng.random(k.shape) * rng.standard_normal(k.shape) * sigma
        v = v.clip(0.3, 3.0)
        kg = (k * v).clip(min=2.0)
        fg = fitness(kg)
        if fg > f:
            f, k = fg, kg
    k = _sort_by_area(k)
    bpr, aat = anchor_metrics(wh_, k, thr)
    LOGGER.debug(
        "AutoAnchor: k-means fitness %.4f -> evolved %.4f after %d generations; "
        "BPR %.4f, %.2f anchors/target",
        f0,
        f,
        gen,
        bpr,
        aat,
    )
    return k


# ---------------------------------------------------------------------------------- model side


def _find_detect(model: nn.Module) -> Detect:
    if isinstance(model, Detect):
        return model
    m = cast(nn.Module, model.module) if isinstance(getattr(model, "module", None), nn.Module) else model
    if isinstance(m, Detect):
        return m
    heads = [x for x in m.modules() if isinstance(x, Detect)]
    if not heads:
        raise ValueError(
            f"AutoAnchor: no Detect/IDetect head found in {type(model).__name__}; "
            f"anchors can only be checked on a detection model"
        )
    return heads[-1]


def _strides(detect: Detect) -> torch.Tensor:
    s = detect.stride.detach().to("cpu", torch.float64).view(-1)
    if len(s) != detect.nl or not bool((s > 0).all()):
        raise ValueError(
            f"AutoAnchor: the head strides are not set ({s.tolist()}); build the model with "
            f"yoloattn.models.build_model so the strides are measured"
        )
    return s


def _write_anchors_px(detect: Detect, px: torch.Tensor) -> None:
    """Store ``px`` ``(nl, na, 2)`` pixel anchors as grid units, plus any pixel anchor buffer."""
    s = _strides(detect)
    a = detect.anchors
    with torch.no_grad():
        a.copy_((px / s.view(-1, 1, 1)).to(a.device, a.dtype))
        ag = getattr(detect, "anchor_grid", None)  # IDetect keeps the pixel anchors too
        if isinstance(ag, torch.Tensor) and ag.numel() == px.numel():
            ag.copy_(px.reshape(ag.shape).to(ag.device, ag.dtype))


def check_anchor_order(detect: nn.Module) -> bool:
    """Reverse the anchor levels if their mean pixel area falls while the stride rises.

    Accepts a head or a model containing one. Works in pixel space, so each level's grid-unit
    anchors stay consistent with its stride. Returns True when the order was flipped.
    """
    head = _find_detect(detect)
    s = head.stride.detach().to("cpu", torch.float64).view(-1)
    if not bool((s > 0).all()):
        return False  # strides unknown: nothing to compare with
    px = head.anchors.detach().to("cpu", torch.float64) * s.view(-1, 1, 1)
    area = px.prod(-1).mean(-1)
    da, ds = float(area[-1] - area[0]), float(s[-1] - s[0])
    if da and ds and (da > 0) != (ds > 0):
        LOGGER.info("AutoAnchor: reversing anchor order to match the level strides")
        _write_anchors_px(head, px.flip(0))
        return True
    return False


@dataclass
class AnchorReport:
    """Outcome of :func:`check_anchors`.

    ``anchors_px`` holds the head's anchors after the check, one flat ``[w1, h1, w2, h2, ...]``
    list per level in pixels (the model-YAML ``anchors`` format).
    """

    checked: bool
    n_labels: int = 0
    bpr_before: float | None = None
    aat_before: float | None = None
    bpr_after: float | None = None
    replaced: bool = False
    anchors_px: list[list[float]] = field(default_factory=list)

    def summary(self) -> str:
        if not self.checked:
            return "AutoAnchor: no labels in the dataset, anchors not checked"
        head = f"AutoAnchor: {self.aat_before:.2f} anchors/target, BPR {self.bpr_before:.4f} -> "
        if self.bpr_after is None:
            return head + "current anchors fit the dataset"
        if self.replaced:
            return head + f"evolved anchors, BPR {self.bpr_after:.4f} (replaced)"
        return head + f"evolved anchors, BPR {self.bpr_after:.4f} (not better, original anchors kept)"


def _anchors_px_list(detect: Detect) -> list[list[float]]:
    s = detect.stride.detach().to("cpu", torch.float64).view(-1, 1, 1)
    px = detect.anchors.detach().to("cpu", torch.float64) * s
    return [[round(float(v), 3) for v in lvl.reshape(-1)] for lvl in px]


def check_anchors(
    dataset: Any,
    model: nn.Module,
    thr: float = 4.0,
    imgsz: int = 640,
    seed: int = 0,
    gen: int = 1000,
) -> AnchorReport:
    """Check the model's anchors against the dataset labels; evolve and replace them if needed.

    Args:
        dataset: any object with ``.labels`` (per-image ``(n, 5)`` arrays: class, x, y, w, h
            normalised) and ``.shapes`` (``(n_images, 2)`` original ``(h, w)``), e.g.
            :class:`yoloattn.data.YoloDataset`. Nothing else is read.
        model: a built detection model (or its head, or a DDP/DP wrapper of it).
        thr: hyp ``anchor_t``.
        imgsz: training image size.
        seed: seed of the label-scale jitter and of the evolution.
        gen: generations of the genetic refinement.

    Anchors are kept when ``bpr > 0.98``. Otherwise ``nl * na`` anchors are evolved
    (:func:`kmean_anchors`); if their BPR is higher they are sorted by area, given to the levels
    in stride order (smallest stride: smallest ``na``), stored in grid units on the anchors'
    device/dtype (and IDetect's pixel ``anchor_grid``), and the level order is re-checked.
    Call it before building an EMA copy or optimiser state that should see the new anchors.
    """
    thr = _check_thr(thr)
    detect = _find_detect(model)
    labels, shapes = _dataset_arrays(dataset)
    wh = label_wh(labels, shapes, imgsz=imgsz, seed=seed)
    if len(wh) == 0:
        rep = AnchorReport(checked=False, anchors_px=_anchors_px_list(detect))
        LOGGER.info(rep.summary())
        return rep

    s = _strides(detect)
    nl, na = detect.nl, detect.na
    px = detect.anchors.detach().to("cpu", torch.float64) * s.view(-1, 1, 1)
    bpr, aat = anchor_metrics(wh, px.reshape(-1, 2).numpy(), thr)
    rep = AnchorReport(checked=True, n_labels=len(wh), bpr_before=bpr, aat_before=aat)
    if bpr > BPR_KEEP:
        rep.anchors_px = _anchors_px_list(detect)
        LOGGER.info(rep.summary())
        return rep

    LOGGER.info(
        "AutoAnchor: BPR %.4f of %d labels is at most %.2f, evolving %d anchors",
        bpr,
        len(wh),
        BPR_KEEP,
        nl * na,
    )
    new = kmean_anchors(wh, nl * na, thr=thr, gen=gen, seed=seed)
    rep.bpr_after, _ = anchor_metrics(wh, new, thr)
    if rep.bpr_after > bpr:
        levels = torch.from_numpy(_sort_by_area(new).copy()).view(nl, na, 2)
        out = torch.empty_like(levels)
        out[torch.argsort(s, stable=True)] = levels  # smallest stride gets the smallest anchors
        _write_anchors_px(detect, out)
        check_anchor_order(detect)
        rep.replaced = True
    rep.anchors_px = _anchors_px_list(detect)
    LOGGER.info(rep.summary())
    if rep.replaced:
        LOGGER.info("AutoAnchor: new anchors (pixels) %s", rep.anchors_px)
    return rep
