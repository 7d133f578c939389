"""Non-maximum suppression and box-coordinate helpers for YOLOv5/YOLOv7 inference and validation.

Behaviour follows the official YOLOv5 (v6.0+) and YOLOv7 post-processing as described in the
project spec (``yolo-architectures.md`` sections 9.1 and 9.2):

1. candidates are the rows whose objectness is ``> conf_thres``;
2. each class score becomes ``obj * cls_prob`` (YOLOv7 with one class uses ``obj`` alone);
3. boxes go from centre ``xywh`` to corner ``xyxy``;
4. multi-label mode keeps every (box, class) pair scoring ``> conf_thres``, otherwise only the
   best class of each box is kept if it scores ``> conf_thres``;
5. the ``max_nms`` best scores are kept, then class-aware NMS runs with the class-offset trick
   (boxes shifted by ``class * max_wh``, then ``torchvision.ops.nms``) and the best ``max_det``
   survive.

YOLOv8 / YOLO11 (``anchor_free=True``; yolov8-yolo11 spec, section 6) take the anchor-free head's
``[N, 4 + nc, A]`` output, which has no objectness: candidates are the anchors whose best class
probability is ``> conf_thres`` and a score is the class probability itself; everything after
that is the same procedure (validation: IoU 0.7, conf 0.001, multi-label, 300 detections).

The letterbox inverse of section 9.1 (remove the padding, divide by the resize gain, clip to
the original image) is :func:`yoloattn.data.boxes.scale_boxes`; the engine calls it with
``official=True`` (the official single-gain rule). The box-format helpers ``xywh2xyxy``,
``xyxy2xywh`` and ``clip_boxes`` are implemented once, in :mod:`yoloattn.data.boxes`, and
re-exported here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import torch
import torchvision
from torchvision.ops import box_convert

from yoloattn.data.boxes import clip_boxes, xywh2xyxy, xyxy2xywh

__all__ = [
    "VAL_NMS",
    "PREDICT_NMS",
    "NMS_PRESETS",
    "non_max_suppression",
    "clip_boxes",
    "xywh2xyxy",
    "xyxy2xywh",
]

LOGGER = logging.getLogger(__name__)

#: Validation settings of YOLOv5 ``val.py`` (spec 9.2 table). Copy before editing:
#: ``non_max_suppression(pred, **{**VAL_NMS, "iou_thres": 0.65})``.
VAL_NMS: dict[str, Any] = dict(conf_thres=0.001, iou_thres=0.6, multi_label=True, max_det=300)
#: Prediction settings of YOLOv5 ``detect.py`` (spec 9.2 table).
PREDICT_NMS: dict[str, Any] = dict(conf_thres=0.25, iou_thres=0.45, multi_label=False, max_det=1000)
#: All four official settings of spec 9.2, by name. The v7 entries also carry the v7 ``max_wh``
#: and the single-class objectness rule.
NMS_PRESETS: dict[str, dict[str, Any]] = {
    "v5-val": dict(VAL_NMS),
    "v5-detect": dict(PREDICT_NMS),
    "v7-test": dict(
        conf_thres=0.001, iou_thres=0.65, multi_label=True, max_det=300, max_wh=4096, nc1_obj_only=True
    ),
    "v7-detect": dict(
        conf_thres=0.25, iou_thres=0.45, multi_label=False, max_det=300, max_wh=4096, nc1_obj_only=True
    ),
    # YOLOv8 / YOLO11 (yolov8-yolo11 spec, section 6): validation and prediction defaults
    "v8-val": dict(conf_thres=0.001, iou_thres=0.7, multi_label=True, max_det=300, anchor_free=True),
    "v8-predict": dict(conf_thres=0.25, iou_thres=0.7, multi_label=False, max_det=300, anchor_free=True),
}


# --------------------------------------------------------------------------------------------
# NMS
# --------------------------------------------------------------------------------------------
def _check_thresholds(conf_thres: float, iou_thres: float, max_det: int, max_nms: int) -> None:
    if not 0.0 <= conf_thres <= 1.0:
        raise ValueError(f"conf_thres={conf_thres} is outside [0, 1]; pass a confidence such as 0.25")
    if not 0.0 <= iou_thres <= 1.0:
        raise ValueError(f"iou_thres={iou_thres} is outside [0, 1]; pass an IoU such as 0.45")
    if max_det < 1 or max_nms < 1:
        raise ValueError(f"max_det={max_det} and max_nms={max_nms} must both be >= 1")


def non_max_suppression(
    prediction: torch.Tensor | Sequence[Any],
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    classes: Sequence[int] | None = None,
    agnostic: bool = False,
    multi_label: bool = False,
    max_det: int = 300,
    max_nms: int = 30000,
    max_wh: int = 7680,
    *,
    nc1_obj_only: bool = False,
    anchor_free: bool = False,
    time_limit: float | None = None,
) -> list[torch.Tensor]:
    """Filter decoded YOLO outputs into final detections, one ``[n, 6]`` tensor per image.

    Args:
        prediction: decoded head output ``[N, A, 5 + nc]`` with rows ``(cx, cy, w, h, obj,
            cls_1..cls_nc)`` in input-image pixels and probabilities (after sigmoid). The eval-mode
            model output ``(decoded, raw_list)`` is accepted too; its first element is used.
        conf_thres: minimum objectness for a candidate, and minimum ``obj * cls`` score.
        iou_thres: boxes of the same class overlapping a better one by IoU ``> iou_thres`` are dropped.
        classes: keep only these class indices (``None``: all).
        agnostic: suppress across classes (no class offset).
        multi_label: keep every class scoring above ``conf_thres`` for a box (validation mode);
            ignored when ``nc == 1``.
        max_det: most detections kept per image.
        max_nms: most candidates handed to NMS per image (the best scores).
        max_wh: class offset in pixels (7680 in YOLOv5, 4096 in YOLOv7). When the boxes span more
            than ``max_wh`` pixels the offset trick would mix classes, so
            ``torchvision.ops.batched_nms`` is used instead (same result, correct for any size).
        nc1_obj_only: YOLOv7 rule: with a single class the score is the objectness alone.
        anchor_free: YOLOv8 / YOLO11 output: ``prediction`` is ``[N, 4 + nc, A]`` (channels first,
            rows ``(cx, cy, w, h, cls_1..cls_nc)``, no objectness); candidates need their best class
            probability ``> conf_thres`` and scores are the class probabilities.
        time_limit: seconds after which the remaining images are skipped with a warning, as the
            official code does (YOLOv5 uses ``0.5 + 0.05 * N``, YOLOv7 10 s). ``None`` (default)
            disables it, so results never depend on machine speed.

    Returns:
        ``N`` tensors ``[n_i, 6]``: ``(x1, y1, x2, y2, conf, cls)`` sorted by confidence, on the
        input device and dtype.
    """
    if isinstance(prediction, (list, tuple)):
        if not prediction:
            raise ValueError("prediction is an empty sequence; pass the decoded [N, A, 5+nc] tensor")
        prediction = prediction[0]
    if not isinstance(prediction, torch.Tensor):
        raise TypeError(f"prediction must be a torch.Tensor [N, A, 5+nc], got {type(prediction).__name__}")
    if anchor_free:
        if prediction.ndim != 3 or prediction.shape[1] < 5:
            raise ValueError(
                f"anchor_free prediction must have shape [N, 4+nc, A] with nc >= 1, got "
                f"{tuple(prediction.shape)}; pass the decoded output of a YOLOv8/YOLO11 model in eval mode"
            )
        prediction = prediction.transpose(1, 2)  # [N, A, 4 + nc]
    elif prediction.ndim != 3 or prediction.shape[-1] < 6:
        raise ValueError(
            f"prediction must have shape [N, A, 5+nc] with nc >= 1, got {tuple(prediction.shape)}; "
            "pass the decoded output of the model in eval mode"
        )
    _check_thresholds(conf_thres, iou_thres, max_det, max_nms)
    if classes is not None:
        classes = [int(c) for c in classes]

    nc = prediction.shape[-1] - (4 if anchor_free else 5)
    multi_label = multi_label and nc > 1
    device, dtype = prediction.device, prediction.dtype
    output = [torch.zeros((0, 6), device=device, dtype=dtype) for _ in range(prediction.shape[0])]
    start = time.perf_counter()

    for b, x in enumerate(prediction):
        if anchor_free:
            x = x[x[:, 4:].amax(1) > conf_thres]
            scores = x[:, 4:]
        else:
            x = x[x[:, 4] > conf_thres]
            obj = x[:, 4:5]
            scores = obj if (nc == 1 and nc1_obj_only) else x[:, 5:] * obj
        if x.shape[0] == 0:
            continue
        boxes = box_convert(x[:, :4], "cxcywh", "xyxy")

        if multi_label:
            box_i, cls_j = (scores > conf_thres).nonzero(as_tuple=True)
            det = torch.cat((boxes[box_i], scores[box_i, cls_j, None], cls_j[:, None].to(dtype)), 1)
        else:
            best, cls_j = scores.max(1, keepdim=True)
            det = torch.cat((boxes, best, cls_j.to(dtype)), 1)[best[:, 0] > conf_thres]

        if classes is not None and det.shape[0]:
            wanted = torch.tensor(classes, device=device, dtype=dtype)
            det = det[(det[:, 5:6] == wanted).any(1)]
        if det.shape[0] == 0:
            continue

        order = torch.sort(det[:, 4], descending=True, stable=True).indices[:max_nms]
        det = det[order]
        keep = _class_aware_nms(det, iou_thres, agnostic, max_wh)[:max_det]
        output[b] = det[keep]

        if time_limit is not None and time.perf_counter() - start > time_limit:
            LOGGER.warning(
                "NMS time limit %.3fs exceeded after image %d of %d; the remaining images get no "
                "detections (raise time_limit or pass None to disable it)",
                time_limit,
                b + 1,
                prediction.shape[0],
            )
            break
    return output


def _class_aware_nms(det: torch.Tensor, iou_thres: float, agnostic: bool, max_wh: int) -> torch.Tensor:
    """Indices kept by NMS over ``det`` ``[n, 6]`` (sorted by score), in decreasing score order."""
    boxes, scores = det[:, :4], det[:, 4]
    if agnostic:
        return torchvision.ops.nms(boxes, scores, iou_thres)
    span = float(boxes.max() - boxes.min())
    if span >= max_wh:  # the offset trick would let boxes of neighbouring classes overlap
        return torchvision.ops.batched_nms(boxes, scores, det[:, 5].long(), iou_thres)
    return torchvision.ops.nms(boxes + det[:, 5:6] * max_wh, scores, iou_thres)
