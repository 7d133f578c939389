"""COCO-standard box evaluation (AP@[.5:.95], AP50, AP75, APs/m/l, AR) via faster-coco-eval.

The published YOLOv5/YOLOv7 COCO numbers come from ``pycocotools`` run on the saved prediction
JSON (project spec ``yolo-architectures.md`` section 9.3). ``faster-coco-eval`` implements the
same protocol (101 recall points, greedy matching by score, crowd handling, area ranges
small < 32² <= medium < 96² <= large, at most 100 detections per image) in C++, and gives the
same numbers much faster. Everything is built in memory: no JSON files are written or read.
The protocol is the one of "Microsoft COCO: Common Objects in Context" (Lin et al., ECCV 2014)
and its official evaluation code.

Category ids are ``class + 1`` by default (1..nc), or any mapping passed as ``category_ids``;
:data:`COCO80_TO_91` maps the 80 contiguous COCO training classes to the official 91-id scheme
used by ``instances_val2017.json``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch

__all__ = [
    "COCO80_TO_91",
    "COCO_KEYS",
    "CocoEvaluator",
    "coco_evaluate",
    "to_coco_dets",
    "to_coco_gt",
]

LOGGER = logging.getLogger(__name__)

#: Names of the 12 standard COCO box statistics, in ``COCOeval.stats`` order.
COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")

#: COCO 2017 category id of each of the 80 contiguous training classes (index = class).
COCO80_TO_91: tuple[int, ...] = (
    *range(1, 12),
    *range(13, 26),
    27,
    28,
    *range(31, 45),
    *range(46, 66),
    67,
    70,
    *range(72, 83),
    *range(84, 91),
)

ArrayLike = np.ndarray | torch.Tensor | Sequence[Any]
CategoryMap = Sequence[int] | Mapping[int, int] | None


def _np2d(x: ArrayLike | None, cols: int, what: str) -> np.ndarray:
    if x is None:
        return np.zeros((0, cols))
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)
    if a.size == 0:
        return np.zeros((0, cols))
    if a.ndim != 2 or a.shape[1] < cols:
        raise ValueError(f"{what} must have shape [n, {cols}], got {a.shape}")
    return a.astype(np.float64)


def _category_lookup(category_ids: CategoryMap, nc: int | None) -> tuple[Any, int | None]:
    """A ``class -> category id`` callable and the number of classes it implies (or ``nc``)."""
    if category_ids is None:
        return (lambda c: c + 1), nc
    if isinstance(category_ids, Mapping):
        table = {int(k): int(v) for k, v in category_ids.items()}
        n = nc if nc is not None else (max(table) + 1 if table else 0)
    else:
        table = {i: int(v) for i, v in enumerate(category_ids)}
        n = nc if nc is not None else len(table)
    if len(set(table.values())) != len(table):
        raise ValueError(f"category_ids must map classes to distinct ids, got {category_ids}")

    def lookup(c: int) -> int:
        if c not in table:
            raise ValueError(f"class {c} has no entry in category_ids ({len(table)} entries)")
        return table[c]

    return lookup, n


def _xywh(box: np.ndarray) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    return [x1, y1, x2 - x1, y2 - y1]


def to_coco_gt(
    images: Sequence[tuple[int, int, int]],
    boxes: Sequence[ArrayLike],
    classes: Sequence[ArrayLike],
    *,
    nc: int | None = None,
    category_ids: CategoryMap = None,
    names: Sequence[str] | None = None,
    iscrowd: Sequence[ArrayLike] | None = None,
) -> dict[str, Any]:
    """Build a COCO-format ground-truth dict from per-image arrays.

    Args:
        images: ``(image_id, width, height)`` per image.
        boxes: per image, ``[k, 4]`` ``xyxy`` boxes in original-image pixels.
        classes: per image, ``[k]`` class indices (0-based).
        nc: number of classes (default: ``len(names)``, ``len(category_ids)`` or max class + 1).
        category_ids: category id of each class (sequence indexed by class, or a mapping);
            default ``class + 1``.
        names: class names for the ``categories`` entries (default: the class index).
        iscrowd: per image, ``[k]`` crowd flags (default all 0).

    Returns:
        ``{"info", "images", "annotations", "categories"}``; ``area`` is the box area.
    """
    if not (len(images) == len(boxes) == len(classes)):
        raise ValueError(
            f"to_coco_gt: images ({len(images)}), boxes ({len(boxes)}) and classes ({len(classes)}) "
            "must have one entry per image"
        )
    if iscrowd is not None and len(iscrowd) != len(images):
        raise ValueError(f"to_coco_gt: iscrowd has {len(iscrowd)} entries for {len(images)} images")
    if nc is None and names is not None:
        nc = len(names)
    lookup, nc = _category_lookup(category_ids, nc)

    img_entries: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    seen_ids: set[int] = set()
    max_cls = -1
    for i, (img, b, c) in enumerate(zip(images, boxes, classes)):
        if len(img) != 3:
            raise ValueError(f"to_coco_gt: images[{i}] must be (image_id, width, height), got {img}")
        image_id, width, height = int(img[0]), int(img[1]), int(img[2])
        if image_id in seen_ids:
            raise ValueError(f"to_coco_gt: duplicate image id {image_id} (images[{i}])")
        seen_ids.add(image_id)
        img_entries.append({"id": image_id, "width": width, "height": height, "file_name": f"{image_id}"})
        b = _np2d(b, 4, f"boxes[{i}]")
        c = np.asarray(c.detach().cpu() if isinstance(c, torch.Tensor) else c).reshape(-1)
        if c.size != b.shape[0]:
            raise ValueError(f"to_coco_gt: image {i} has {b.shape[0]} boxes but {c.size} classes")
        crowd = np.zeros(c.size, dtype=int)
        if iscrowd is not None:
            crowd = np.asarray(iscrowd[i]).reshape(-1).astype(int)
            if crowd.size != c.size:
                raise ValueError(f"to_coco_gt: image {i} has {c.size} boxes but {crowd.size} iscrowd flags")
        for box, cls, cr in zip(b, c, crowd):
            cls = int(cls)
            if cls < 0 or (nc is not None and cls >= nc):
                raise ValueError(f"to_coco_gt: image {i} has class {cls} outside [0, {nc})")
            max_cls = max(max_cls, cls)
            xywh = _xywh(box)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": lookup(cls),
                    "bbox": xywh,
                    "area": xywh[2] * xywh[3],
                    "iscrowd": int(cr),
                }
            )
    if nc is None:
        nc = max_cls + 1
    cat_names = list(names) if names is not None else [str(i) for i in range(nc)]
    categories = [{"id": lookup(i), "name": cat_names[i], "supercategory": "none"} for i in range(nc)]
    return {
        "info": {"description": "yoloattn"},
        "images": img_entries,
        "annotations": anns,
        "categories": categories,
    }


def to_coco_dets(
    image_ids: Sequence[int],
    preds: Sequence[ArrayLike | None],
    *,
    category_ids: CategoryMap = None,
    decimals: int | None = None,
) -> list[dict[str, Any]]:
    """COCO result list from per-image NMS outputs ``[n, 6]`` (``x1, y1, x2, y2, conf, cls``).

    ``decimals`` rounds the boxes and (``decimals + 2``) the scores, as JSON writers often do
    (YOLOv5 uses 3); ``None`` keeps full precision.
    """
    if len(image_ids) != len(preds):
        raise ValueError(f"to_coco_dets: {len(image_ids)} image ids for {len(preds)} prediction tensors")
    lookup, _ = _category_lookup(category_ids, None)
    out: list[dict[str, Any]] = []
    for image_id, p in zip(image_ids, preds):
        p = _np2d(p, 6, f"preds for image {image_id}")
        for row in p:
            box, score = _xywh(row), float(row[4])
            if decimals is not None:
                box, score = [round(v, decimals) for v in box], round(score, decimals + 2)
            out.append(
                {"image_id": int(image_id), "category_id": lookup(int(row[5])), "bbox": box, "score": score}
            )
    return out


_LISTS = ("images", "annotations", "categories")


def _validate(gt: Mapping[str, Any], dets: Sequence[Mapping[str, Any]]) -> None:
    if not isinstance(gt, Mapping):
        raise TypeError(f"coco_evaluate: gt must be a COCO-format dict, got {type(gt).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in gt:
            raise ValueError(f"coco_evaluate: gt has no {key!r} list; build it with to_coco_gt()")
    if not gt["annotations"]:
        raise ValueError(
            "coco_evaluate: the ground truth has no annotations, so COCO AP is undefined; "
            "evaluate on a split with labels (or skip COCO evaluation for it)"
        )
    for i, ann in enumerate(gt["annotations"][:1]):
        missing = {"id", "image_id", "category_id", "bbox", "area", "iscrowd"} - set(ann)
        if missing:
            raise ValueError(
                f"coco_evaluate: gt annotation {i} lacks {sorted(missing)}; build it with to_coco_gt()"
            )
    img_ids = {img["id"] for img in gt["images"]}
    cat_ids = {cat["id"] for cat in gt["categories"]}
    # one pass over the detections: the id sets, then the set differences
    det_imgs = {d["image_id"] for d in dets}
    det_cats = {d["category_id"] for d in dets}
    bad_img = det_imgs - img_ids
    if bad_img:
        raise ValueError(f"coco_evaluate: detections refer to image ids not in gt: {sorted(bad_img)[:10]}")
    bad_cat = det_cats - cat_ids
    if bad_cat:
        raise ValueError(
            f"coco_evaluate: detections use category ids not in gt: {sorted(bad_cat)[:10]} "
            f"(gt has {sorted(cat_ids)[:10]}...); check the class -> category id mapping"
        )
    for i, d in enumerate(dets[:1]):
        if "bbox" not in d or "score" not in d or len(d["bbox"]) != 4:
            raise ValueError(f"coco_evaluate: detection {i} needs 'bbox' [x, y, w, h] and 'score', got {d}")


def _plain_dets(dets: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Fresh detection dicts with plain Python numbers (the libraries annotate the dicts they get)."""
    return [
        {
            "image_id": int(d["image_id"]),
            "category_id": int(d["category_id"]),
            "bbox": list(map(float, d["bbox"])),
            "score": float(d["score"]),
        }
        for d in dets
    ]


def coco_evaluate(
    gt: Mapping[str, Any],
    dets: Sequence[Mapping[str, Any]],
    *,
    img_ids: Sequence[int] | None = None,
    backend: Literal["faster", "pycocotools"] = "faster",
    copy_dets: bool = True,
) -> dict[str, float]:
    """COCO bbox evaluation of ``dets`` against ``gt`` (both in memory; ``gt`` is not modified).

    Args:
        gt: COCO-format ground truth (see :func:`to_coco_gt`); must contain annotations.
        dets: COCO results ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.
        img_ids: evaluate only these images (default: all images in ``gt``).
        backend: ``"faster"`` (faster-coco-eval, default) or ``"pycocotools"`` (if installed).
        copy_dets: ``False`` hands ``dets`` over: the library then annotates those dicts (``id``,
            ``area``, ...), and they must already hold plain Python numbers, as
            :func:`to_coco_dets` makes them. Saves a copy of every detection (the evaluator's path).

    Returns:
        The 12 standard statistics keyed by :data:`COCO_KEYS` (``AP`` is AP@[.5:.95]). As in
        pycocotools, ``-1`` marks a statistic with no ground truth (e.g. ``APs`` without small
        objects). No detections give 0.

    Raises:
        ValueError: no gt annotations, or detections with unknown image / category ids.
    """
    _validate(gt, dets)
    # both libraries add keys (e.g. "ignore") to the annotation dicts: copy them one level deep
    gt_copy: dict[str, Any] = {k: copy.deepcopy(v) for k, v in gt.items() if k not in _LISTS}
    gt_copy.update({k: [dict(x) for x in gt[k]] for k in _LISTS})
    det_list = _plain_dets(dets) if copy_dets else list(dets)
    if backend == "faster":
        from faster_coco_eval import COCO, COCOeval_faster

        coco_gt = COCO(gt_copy, print_function=LOGGER.debug)
        coco_dt = coco_gt.loadRes(det_list)
        ev = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=LOGGER.debug)
        if img_ids is not None:
            ev.params.imgIds = [int(i) for i in img_ids]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    elif backend == "pycocotools":
        try:
            from pycocotools.coco import COCO as PyCOCO
            from pycocotools.cocoeval import COCOeval
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("backend='pycocotools' needs `pip install pycocotools`") from e
        with contextlib.redirect_stdout(io.StringIO()) as buf:
            coco_gt = PyCOCO()
            coco_gt.dataset = gt_copy
            coco_gt.createIndex()
            if det_list:
                coco_dt = coco_gt.loadRes(det_list)
            else:  # pycocotools' loadRes cannot take an empty list
                coco_dt = PyCOCO()
                coco_dt.dataset = {
                    "images": gt_copy["images"],
                    "annotations": [],
                    "categories": gt_copy["categories"],
                }
                coco_dt.createIndex()
            ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
            if img_ids is not None:
                ev.params.imgIds = [int(i) for i in img_ids]
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        LOGGER.debug(buf.getvalue())
    else:
        raise ValueError(f"backend must be 'faster' or 'pycocotools', got {backend!r}")
    return {k: float(v) for k, v in zip(COCO_KEYS, ev.stats[: len(COCO_KEYS)])}


class CocoEvaluator:
    """Collects per-image predictions and labels, then runs :func:`coco_evaluate`.

    Args:
        nc: number of classes.
        category_ids: class -> COCO category id (default ``class + 1``).
        names: class names.
    """

    def __init__(self, nc: int, category_ids: CategoryMap = None, names: Sequence[str] | None = None) -> None:
        if nc < 1:
            raise ValueError(f"nc must be >= 1, got {nc}")
        self.nc = nc
        self.category_ids = category_ids
        self.names = names
        self.reset()

    def reset(self) -> None:
        """Forget all accumulated images."""
        self.images: list[tuple[int, int, int]] = []
        self.gt_boxes: list[np.ndarray] = []
        self.gt_classes: list[np.ndarray] = []
        self.preds: list[np.ndarray] = []

    def update(
        self,
        image_id: int,
        width: int,
        height: int,
        preds: ArrayLike | None,
        labels: ArrayLike | None,
    ) -> None:
        """Add one image: ``preds`` ``[n, 6]`` (xyxy, conf, cls), ``labels`` ``[m, 5]`` (cls, xyxy),
        both in original-image pixels."""
        lab = _np2d(labels, 5, "labels")
        self.images.append((int(image_id), int(width), int(height)))
        self.gt_boxes.append(lab[:, 1:5])
        self.gt_classes.append(lab[:, 0].astype(int))
        self.preds.append(_np2d(preds, 6, "preds"))

    def build(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The COCO-format ``(gt, dets)`` of everything added so far."""
        gt = to_coco_gt(
            self.images,
            self.gt_boxes,
            self.gt_classes,
            nc=self.nc,
            category_ids=self.category_ids,
            names=self.names,
        )
        dets = to_coco_dets([i for i, _, _ in self.images], self.preds, category_ids=self.category_ids)
        return gt, dets

    def compute(self, backend: Literal["faster", "pycocotools"] = "faster") -> dict[str, float]:
        """:func:`coco_evaluate` over all images added so far."""
        gt, dets = self.build()
        return coco_evaluate(gt, dets, backend=backend, copy_dets=False)
