"""Detection confusion matrix with a background class (YOLOv5 style), for ``val`` and plots.

The detection/label checks are shared with :mod:`yoloattn.engine.metrics`; the matrix is drawn
by :func:`yoloattn.engine.plots.plot_confusion_matrix`.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou

from yoloattn.engine.metrics import _check_dets_labels

__all__ = ["ConfusionMatrix"]


class ConfusionMatrix:
    """Detection confusion matrix with a background class (YOLOv5 style).

    ``matrix[pred, true]`` has ``nc + 1`` rows and columns; index ``nc`` is *background*:
    ``matrix[nc, c]`` counts missed labels of class ``c`` and ``matrix[c, nc]`` counts detections
    of class ``c`` matching no label. Only detections with ``conf > conf`` count; a detection and
    a label match (whatever their classes) when ``IoU > iou_thres``, each at most once,
    highest IoU first. Unlike the official code, unmatched detections are counted as background
    even in images where nothing matched.
    """

    def __init__(self, nc: int, conf: float = 0.25, iou_thres: float = 0.45) -> None:
        if nc < 1:
            raise ValueError(f"nc must be >= 1, got {nc}")
        self.nc = nc
        self.conf = conf
        self.iou_thres = iou_thres
        self.matrix = np.zeros((nc + 1, nc + 1), dtype=np.int64)

    def process_batch(self, detections: torch.Tensor | None, labels: torch.Tensor | None) -> None:
        """Add one image: ``detections`` ``[n, 6]`` (xyxy, conf, cls), ``labels`` ``[m, 5]`` (cls, xyxy)."""
        dets = torch.zeros((0, 6)) if detections is None else detections
        labs = torch.zeros((0, 5)) if labels is None else labels
        _check_dets_labels(dets, labs, "ConfusionMatrix.process_batch")
        dets = dets[dets[:, 4] > self.conf].detach().cpu()
        labs = labs.detach().cpu()
        gt_cls = labs[:, 0].long().numpy()
        det_cls = dets[:, 5].long().numpy()
        for c in (gt_cls, det_cls):
            if c.size and (c.min() < 0 or c.max() >= self.nc):
                raise ValueError(
                    f"ConfusionMatrix: classes must be in [0, {self.nc - 1}], got {sorted(set(c))}"
                )

        det_of_label = np.full(gt_cls.size, -1)
        if gt_cls.size and det_cls.size:
            iou = box_iou(labs[:, 1:5].float(), dets[:, :4].float()).numpy()  # [m, n]
            li, di = np.nonzero(iou > self.iou_thres)
            if li.size:
                order = np.argsort(-iou[li, di], kind="stable")
                li, di = li[order], di[order]
                _, first = np.unique(di, return_index=True)  # each detection: its best label
                li, di = li[first], di[first]
                order = np.argsort(-iou[li, di], kind="stable")
                li, di = li[order], di[order]
                _, first = np.unique(li, return_index=True)  # each label: its best detection
                det_of_label[li[first]] = di[first]
        for i, gc in enumerate(gt_cls):
            j = det_of_label[i]
            self.matrix[det_cls[j] if j >= 0 else self.nc, gc] += 1
        matched = np.zeros(det_cls.size, dtype=bool)
        matched[det_of_label[det_of_label >= 0]] = True
        for dc in det_cls[~matched]:
            self.matrix[dc, self.nc] += 1

    update = process_batch

    def tp_fp(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-class TPs (diagonal) and FPs (row sum minus diagonal), background excluded."""
        tp = np.diag(self.matrix)[: self.nc]
        fp = self.matrix[: self.nc].sum(1) - tp
        return tp, fp
