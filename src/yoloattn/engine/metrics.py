"""YOLO-style detection metrics: TP matching, per-class P/R/AP, mAP, fitness.

These reproduce the internal numbers printed by the official YOLOv5 ``val.py`` and YOLOv7
``test.py`` (project spec ``yolo-architectures.md`` section 9.3). They are close to, but not the
same as, COCO mAP (see ``yoloattn.engine.coco`` for the COCO-standard numbers). AP as the area
under the interpolated precision envelope follows "The PASCAL Visual Object Classes (VOC)
Challenge" (Everingham et al., IJCV 2010), with COCO's 101 recall points ("Microsoft COCO:
Common Objects in Context", Lin et al., ECCV 2014).

* IoU thresholds ``iouv = linspace(0.5, 0.95, 10)``.
* Matching (YOLOv5, :func:`match_predictions`): at each threshold ``t`` the same-class
  (label, prediction) pairs with ``IoU >= t`` qualify; every prediction keeps its best-IoU label,
  then every label is given to one prediction only. As in the official code, that second step
  keeps the prediction that comes first in the detection list, i.e. the most confident one,
  because NMS output is sorted by confidence (the spec's "greedy by IoU" summary differs from
  the official behaviour only when two predictions claim the same label).
* Matching (YOLOv7, :func:`match_predictions_v7`): predictions in score order claim their
  best-IoU label if ``IoU > 0.5`` and it is still free; correct at every ``t`` with ``IoU > t``.
* Matching (YOLOv8/YOLO11): ultralytics 8.3 uses the YOLOv5 rule above; the two differ only in
  how exact IoU ties are ordered, so ``style="v5"`` serves YOLOv5, YOLOv8 and YOLO11 alike.
  Ultralytics 8.4 (:func:`match_predictions_by_confidence`, ``style="v8.4"``): at each threshold
  the predictions, most confident first, each claim the best-IoU same-class label still free with
  ``IoU >= t`` (COCO-style). Unlike the v5 rule, a prediction whose best label is taken falls back
  to its next best label, so the two rules differ beyond ties (yolov8-yolo11 spec, section 6).
* :func:`ap_per_class`: cumulative TP/FP per class in confidence order, recall and precision,
  AP from :func:`compute_ap` (precision envelope sampled at 101 recall points, trapezoid rule),
  P and R at the confidence (1000-point grid) maximising the class-mean F1, which YOLOv5 first
  smooths with a box filter of 10 % of the grid width. YOLOv5's end sentinel (recall 1.0,
  precision 0) falls on the last of the 101 sample points, so a perfect class scores 0.995, the
  well-known ceiling of the official numbers; YOLOv7's default sentinel (last recall + 0.01)
  gives 1.0.
* ``fitness = 0.1 * mAP@0.5 + 0.9 * mAP@0.5:0.95`` (``style="v8.4"``: mAP@0.5:0.95 alone).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torchvision.ops import box_iou

__all__ = [
    "IOUV",
    "APResult",
    "DetMetrics",
    "ap_per_class",
    "box_iou",
    "compute_ap",
    "fitness",
    "match_predictions",
    "match_predictions_by_confidence",
    "match_predictions_v7",
    "smooth",
]

LOGGER = logging.getLogger(__name__)

#: The ten IoU thresholds 0.50, 0.55, ..., 0.95 (float32, as the official code).
IOUV = torch.linspace(0.5, 0.95, 10)

ArrayLike = np.ndarray | torch.Tensor | Sequence[float]


def _np(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_dets_labels(detections: torch.Tensor, labels: torch.Tensor, where: str) -> None:
    if not isinstance(detections, torch.Tensor) or detections.ndim != 2 or detections.shape[1] < 6:
        shape = tuple(detections.shape) if isinstance(detections, torch.Tensor) else type(detections).__name__
        raise ValueError(
            f"{where}: detections must be a tensor [n, 6] (x1, y1, x2, y2, conf, cls), got {shape}"
        )
    if not isinstance(labels, torch.Tensor) or labels.ndim != 2 or labels.shape[1] != 5:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"{where}: labels must be a tensor [m, 5] (cls, x1, y1, x2, y2), got {shape}")


def _iouv(iouv: torch.Tensor | Sequence[float] | None) -> torch.Tensor:
    t = IOUV if iouv is None else torch.as_tensor(iouv, dtype=torch.float32).reshape(-1)
    if t.numel() == 0 or bool((t <= 0).any()) or bool((t > 1).any()):
        raise ValueError(f"iouv must be a non-empty list of IoU thresholds in (0, 1], got {t.tolist()}")
    return t.cpu()


# --------------------------------------------------------------------------------------------
# matching
# --------------------------------------------------------------------------------------------
def match_predictions(
    detections: torch.Tensor, labels: torch.Tensor, iouv: torch.Tensor | Sequence[float] | None = None
) -> torch.Tensor:
    """YOLOv5 TP matrix: ``bool [n, len(iouv)]``, True where detection ``i`` is a TP at ``iouv[j]``.

    Args:
        detections: ``[n, 6]`` ``(x1, y1, x2, y2, conf, cls)``, sorted by confidence (NMS output).
        labels: ``[m, 5]`` ``(cls, x1, y1, x2, y2)`` in the same pixel frame.
        iouv: IoU thresholds (default :data:`IOUV`).
    """
    _check_dets_labels(detections, labels, "match_predictions")
    thr = _iouv(iouv)
    n, m = detections.shape[0], labels.shape[0]
    correct = np.zeros((n, thr.numel()), dtype=bool)
    if n and m:
        iou = box_iou(labels[:, 1:5].float(), detections[:, :4].float())  # [m, n]
        same_cls = labels[:, 0:1] == detections[:, 5]
        iou = torch.where(same_cls, iou, torch.full_like(iou, -1.0)).cpu().numpy()
        best_label = iou.argmax(0)  # each prediction's best same-class label (first on ties)
        best_iou = iou[best_label, np.arange(n)]
        for j, t in enumerate(thr.numpy()):
            cand = np.nonzero(best_iou >= t)[0]  # ascending detection index = descending confidence
            if cand.size:
                _, first = np.unique(best_label[cand], return_index=True)
                correct[cand[first], j] = True
    return torch.from_numpy(correct).to(detections.device)


def match_predictions_by_confidence(
    detections: torch.Tensor, labels: torch.Tensor, iouv: torch.Tensor | Sequence[float] | None = None
) -> torch.Tensor:
    """Ultralytics 8.4 (COCO-style) TP matrix: ``bool [n, len(iouv)]``.

    At each threshold ``t`` the detections are visited by descending confidence (stable, so the
    list order breaks ties); each claims the same-class label of largest IoU (first on ties) among
    the labels not yet claimed at ``t`` with ``IoU >= t``, and is a TP at ``t`` if it finds one.
    """
    _check_dets_labels(detections, labels, "match_predictions_by_confidence")
    thr = _iouv(iouv).numpy()
    n, m = detections.shape[0], labels.shape[0]
    correct = np.zeros((n, thr.size), dtype=bool)
    if n and m:
        iou = box_iou(detections[:, :4].float(), labels[:, 1:5].float())  # [n, m]
        same_cls = detections[:, 5:6] == labels[:, 0]
        iou = torch.where(same_cls, iou, torch.full_like(iou, -1.0)).cpu().numpy()
        order = np.argsort(-detections[:, 4].detach().cpu().double().numpy(), kind="stable")
        claimed = np.zeros((thr.size, m), dtype=bool)
        rows = np.arange(thr.size)
        for i in order:
            cand = np.where(claimed | (iou[i][None, :] < thr[:, None]), -np.inf, iou[i][None, :])  # [T, m]
            best = cand.argmax(1)
            hit = np.isfinite(cand[rows, best])
            correct[i] = hit
            claimed[rows[hit], best[hit]] = True
    return torch.from_numpy(correct).to(detections.device)


def match_predictions_v7(
    detections: torch.Tensor, labels: torch.Tensor, iouv: torch.Tensor | Sequence[float] | None = None
) -> torch.Tensor:
    """YOLOv7 ``test.py`` TP matrix: ``bool [n, len(iouv)]`` (strict ``IoU > t``; see module doc)."""
    _check_dets_labels(detections, labels, "match_predictions_v7")
    thr = _iouv(iouv).numpy()
    n, m = detections.shape[0], labels.shape[0]
    correct = np.zeros((n, thr.size), dtype=bool)
    if n and m:
        det_cls = detections[:, 5].cpu()
        lab_cls = labels[:, 0].cpu()
        for c in torch.unique(lab_cls):
            ti = torch.nonzero(lab_cls == c).flatten()
            pi = torch.nonzero(det_cls == c).flatten()
            if pi.numel() == 0:
                continue
            ious, best = box_iou(detections[pi, :4].float(), labels[ti, 1:5].float()).max(1)
            ious, best = ious.cpu().numpy(), best.cpu().numpy()
            taken: set[int] = set()
            for k in np.nonzero(ious > thr[0])[0]:
                label = int(ti[best[k]])
                if label in taken:
                    continue
                taken.add(label)
                correct[int(pi[k])] = ious[k] > thr
                if len(taken) == ti.numel():
                    break
    return torch.from_numpy(correct).to(detections.device)


# --------------------------------------------------------------------------------------------
# AP
# --------------------------------------------------------------------------------------------
def compute_ap(
    recall: ArrayLike, precision: ArrayLike, end_recall_one: bool = True
) -> tuple[float, np.ndarray, np.ndarray]:
    """Area under the precision envelope, sampled at 101 recall points (trapezoid rule).

    Args:
        recall: cumulative recall in confidence order.
        precision: cumulative precision in the same order.
        end_recall_one: YOLOv5 end sentinel at recall 1.0 (default). ``False`` gives the YOLOv7
            default (sentinel at ``last_recall + 0.01``).

    Returns:
        ``(ap, envelope_precision, recall_with_sentinels)``.
    """
    rec, prec = _np(recall).astype(np.float64).ravel(), _np(precision).astype(np.float64).ravel()
    if rec.shape != prec.shape:
        raise ValueError(f"recall and precision must have the same length, got {rec.shape} and {prec.shape}")
    last = 1.0 if end_recall_one or rec.size == 0 else rec[-1] + 0.01
    mrec = np.concatenate(([0.0], rec, [last]))
    mpre = np.concatenate(([1.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # running max from the right
    x = np.linspace(0.0, 1.0, 101)
    ap = float(np.trapezoid(np.interp(x, mrec, mpre), x))
    return ap, mpre, mrec


def smooth(y: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """Box-filter ``y`` with an odd window of about ``2 * fraction * len(y)`` points, edges held."""
    n = round(len(y) * fraction * 2) // 2 + 1
    n += 1 - n % 2  # odd, so the output keeps len(y) (51 for the 1000-point curves, as officially)
    half = np.ones(n // 2)
    padded = np.concatenate((half * y[0], y, half * y[-1]))
    return np.convolve(padded, np.ones(n) / n, mode="valid")


@dataclass(frozen=True)
class APResult:
    """Output of :func:`ap_per_class`; one row per class present in the labels."""

    tp: np.ndarray  #: [k] TPs at the chosen confidence (``round(r * n_labels)``)
    fp: np.ndarray  #: [k] FPs at the chosen confidence
    p: np.ndarray  #: [k] precision at the chosen confidence
    r: np.ndarray  #: [k] recall at the chosen confidence
    f1: np.ndarray  #: [k] F1 at the chosen confidence
    ap: np.ndarray  #: [k, T] AP at each IoU threshold
    classes: np.ndarray  #: [k] class indices (int), ascending
    n_labels: np.ndarray  #: [k] labels per class
    conf: float  #: the chosen confidence threshold
    px: np.ndarray  #: [1000] confidence grid (and recall grid for ``pr_curve``)
    p_curve: np.ndarray  #: [k, 1000] precision vs confidence
    r_curve: np.ndarray  #: [k, 1000] recall vs confidence
    f1_curve: np.ndarray  #: [k, 1000] F1 vs confidence
    pr_curve: np.ndarray  #: [k, 1000] precision envelope vs recall ``px`` at IoU ``iouv[0]``

    @property
    def ap50(self) -> np.ndarray:
        """[k] AP at the first threshold (0.5)."""
        return self.ap[:, 0] if self.ap.size else np.zeros(0)

    @property
    def ap5095(self) -> np.ndarray:
        """[k] AP averaged over all thresholds (0.5:0.95)."""
        return self.ap.mean(1) if self.ap.size else np.zeros(0)


def ap_per_class(
    tp: ArrayLike,
    conf: ArrayLike,
    pred_cls: ArrayLike,
    target_cls: ArrayLike,
    eps: float = 1e-16,
    *,
    smooth_f1: bool = True,
    end_recall_one: bool = True,
) -> APResult:
    """Per-class precision, recall and AP over a dataset (YOLOv5 ``ap_per_class``).

    Args:
        tp: ``[n, T]`` TP flags of all predictions (from :func:`match_predictions`).
        conf: ``[n]`` prediction confidences.
        pred_cls: ``[n]`` predicted classes.
        target_cls: ``[m]`` classes of all labels; only these classes are scored.
        eps: guards the divisions.
        smooth_f1: smooth the mean-F1 curve before picking the confidence (YOLOv5; YOLOv7: False).
        end_recall_one: see :func:`compute_ap` (YOLOv5: True; YOLOv7 default: False).
    """
    tp_a = _np(tp).astype(np.float64)
    if tp_a.ndim == 1:
        tp_a = tp_a[:, None]
    conf_a = _np(conf).astype(np.float64).ravel()
    pcls = _np(pred_cls).ravel()
    tcls = _np(target_cls).ravel()
    if tp_a.ndim != 2 or not (tp_a.shape[0] == conf_a.size == pcls.size):
        raise ValueError(
            f"ap_per_class: tp [n, T], conf [n] and pred_cls [n] must agree in n, got "
            f"{tuple(tp_a.shape)}, {conf_a.shape}, {pcls.shape}"
        )
    order = np.argsort(-conf_a, kind="stable")
    tp_a, conf_a, pcls = tp_a[order], conf_a[order], pcls[order]

    classes, n_labels = np.unique(tcls, return_counts=True)
    k, nt = classes.size, tp_a.shape[1]
    px = np.linspace(0.0, 1.0, 1000)
    ap = np.zeros((k, nt))
    p_curve, r_curve, pr_curve = np.zeros((k, 1000)), np.zeros((k, 1000)), np.zeros((k, 1000))
    for ci, c in enumerate(classes):
        sel = pcls == c
        if not sel.any():
            continue
        tpc = tp_a[sel].cumsum(0)
        fpc = (1.0 - tp_a[sel]).cumsum(0)
        recall = tpc / (n_labels[ci] + eps)
        precision = tpc / (tpc + fpc)
        # confidence decreases along the list, so interpolate on -conf (increasing)
        r_curve[ci] = np.interp(-px, -conf_a[sel], recall[:, 0], left=0)
        p_curve[ci] = np.interp(-px, -conf_a[sel], precision[:, 0], left=1)
        for j in range(nt):
            ap[ci, j], mpre, mrec = compute_ap(recall[:, j], precision[:, j], end_recall_one)
            if j == 0:
                pr_curve[ci] = np.interp(px, mrec, mpre)

    f1_curve = 2 * p_curve * r_curve / (p_curve + r_curve + eps)
    if k:
        mean_f1 = f1_curve.mean(0)
        i = int((smooth(mean_f1, 0.1) if smooth_f1 else mean_f1).argmax())
    else:
        i = 0
    p, r, f1 = p_curve[:, i], r_curve[:, i], f1_curve[:, i]
    tp_n = (r * n_labels).round()
    fp_n = (tp_n / (p + eps) - tp_n).round()
    return APResult(
        tp=tp_n,
        fp=fp_n,
        p=p,
        r=r,
        f1=f1,
        ap=ap,
        classes=classes.astype(int),
        n_labels=n_labels,
        conf=float(px[i]),
        px=px,
        p_curve=p_curve,
        r_curve=r_curve,
        f1_curve=f1_curve,
        pr_curve=pr_curve,
    )


def fitness(map50: float, map5095: float, style: str = "v5") -> float:
    """Model selection score of the official trainers: ``0.1 * mAP@0.5 + 0.9 * mAP@0.5:0.95``;
    ``style="v8.4"`` (ultralytics 8.4): ``mAP@0.5:0.95`` alone."""
    if style == "v8.4":
        return float(map5095)
    return 0.1 * float(map50) + 0.9 * float(map5095)


# --------------------------------------------------------------------------------------------
# accumulator
# --------------------------------------------------------------------------------------------
class DetMetrics:
    """Accumulates per-image matches and computes the official YOLO validation metrics.

    Call :meth:`update` once per image with predictions and labels in the same pixel frame
    (the original image, after :func:`yoloattn.data.boxes.scale_boxes`), then :meth:`compute`.

    Args:
        nc: number of classes.
        names: class names (default ``"0"``, ``"1"``, ...), e.g. for
            :func:`yoloattn.engine.plots.plot_metric_curves`.
        iouv: IoU thresholds (default :data:`IOUV`).
        style: ``"v5"`` (YOLOv5 ``val.py``, also ultralytics 8.3 for YOLOv8/YOLO11), ``"v7"``
            (YOLOv7 ``test.py``: v7 matching, no F1 smoothing, end sentinel ``last + 0.01`` unless
            ``v5_metric``) or ``"v8.4"`` (ultralytics 8.4: confidence-ordered matching, fitness =
            mAP@0.5:0.95; AP and P/R as ``"v5"``).
        v5_metric: YOLOv7's ``--v5-metric`` flag (end sentinel at recall 1.0).
    """

    #: results.csv column names used by the official trainers, in :meth:`results_row` order.
    CSV_KEYS = ("metrics/precision", "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95")

    def __init__(
        self,
        nc: int,
        names: Sequence[str] | None = None,
        *,
        iouv: torch.Tensor | Sequence[float] | None = None,
        style: Literal["v5", "v7", "v8.4"] = "v5",
        v5_metric: bool = False,
    ) -> None:
        if nc < 1:
            raise ValueError(f"nc must be >= 1, got {nc}")
        if style not in ("v5", "v7", "v8.4"):
            raise ValueError(f"style must be 'v5', 'v7' or 'v8.4', got {style!r}")
        if names is not None and len(names) != nc:
            raise ValueError(f"names has {len(names)} entries but nc={nc}")
        self.nc = nc
        self.names = list(names) if names is not None else [str(i) for i in range(nc)]
        self.iouv = _iouv(iouv)
        self.style = style
        self.v5_metric = v5_metric
        self.result: APResult | None = None
        self.reset()

    def reset(self) -> None:
        """Forget all accumulated images."""
        self._stats: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.seen = 0
        self.result = None

    def update(self, preds: torch.Tensor | None, labels: torch.Tensor | None) -> torch.Tensor:
        """Add one image. ``preds`` ``[n, 6]`` (xyxy, conf, cls), ``labels`` ``[m, 5]`` (cls, xyxy).

        ``None`` or an empty tensor stands for no predictions / no labels. Returns the TP matrix.
        """
        if preds is None:
            preds = torch.zeros((0, 6))
        if labels is None:
            labels = torch.zeros((0, 5))
        _check_dets_labels(preds, labels, "DetMetrics.update")
        if labels.numel():
            lc = labels[:, 0]
            if bool((lc < 0).any()) or bool((lc >= self.nc).any()) or bool((lc != lc.round()).any()):
                raise ValueError(
                    f"DetMetrics.update: label classes must be integers in [0, {self.nc - 1}], "
                    f"got {sorted(set(lc.tolist()))}"
                )
        match = {
            "v5": match_predictions,
            "v7": match_predictions_v7,
            "v8.4": match_predictions_by_confidence,
        }[self.style]
        correct = match(preds, labels, self.iouv)
        self.seen += 1
        self._stats.append(
            (
                correct.cpu().numpy(),
                preds[:, 4].detach().cpu().double().numpy(),
                preds[:, 5].detach().cpu().numpy().astype(np.int64),
                labels[:, 0].detach().cpu().numpy().astype(np.int64),
            )
        )
        return correct

    def compute(self) -> dict[str, Any]:
        """The metrics over all images so far.

        Returns a dict with ``mp``, ``mr``, ``map50``, ``map`` (means over the classes that have
        labels), ``fitness``, ``seen`` (images), ``nt`` ([nc] labels per class), ``classes`` ([k]
        classes with labels) and per-class ``p``, ``r``, ``ap50``, ``ap`` ([k]), plus ``maps``
        ([nc] mAP@0.5:0.95 per class, classes without labels get the overall mean, as the
        official trainers use it for image weights). Everything is 0 when no prediction is a TP.
        """
        T = self.iouv.numel()
        if self._stats:
            tp, conf, pcls, tcls = (np.concatenate(a, 0) for a in zip(*self._stats))
        else:
            tp, conf, pcls, tcls = np.zeros((0, T), bool), np.zeros(0), np.zeros(0, int), np.zeros(0, int)
        nt = np.bincount(tcls, minlength=self.nc)
        classes = np.unique(tcls).astype(int)
        k = classes.size
        if tcls.size == 0:
            LOGGER.warning("DetMetrics: no labels in %d images; metrics are 0", self.seen)
        if tp.size and tp.any():
            self.result = ap_per_class(
                tp,
                conf,
                pcls,
                tcls,
                smooth_f1=self.style != "v7",
                end_recall_one=self.style != "v7" or self.v5_metric,
            )
            p, r, ap50, ap = self.result.p, self.result.r, self.result.ap50, self.result.ap5095
        else:  # the official scripts skip ap_per_class when nothing matched
            self.result = None
            p, r, ap50, ap = np.zeros(k), np.zeros(k), np.zeros(k), np.zeros(k)
        mp, mr = (float(p.mean()), float(r.mean())) if k else (0.0, 0.0)
        map50, map5095 = (float(ap50.mean()), float(ap.mean())) if k else (0.0, 0.0)
        maps = np.full(self.nc, map5095)
        maps[classes] = ap
        return {
            "mp": mp,
            "mr": mr,
            "map50": map50,
            "map": map5095,
            "fitness": fitness(map50, map5095, self.style),
            "seen": self.seen,
            "nt": nt,
            "classes": classes,
            "p": p,
            "r": r,
            "ap50": ap50,
            "ap": ap,
            "maps": maps,
        }

    def results_row(self, metrics: dict[str, Any] | None = None) -> dict[str, float]:
        """``{CSV_KEYS[i]: value}`` for results.csv, from ``metrics`` (default: :meth:`compute`)."""
        m = self.compute() if metrics is None else metrics
        return dict(zip(self.CSV_KEYS, (m["mp"], m["mr"], m["map50"], m["map"])))
