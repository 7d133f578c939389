"""YOLOv5 training loss (``ComputeLoss``): target assignment, CIoU box loss, objectness and classes.

Behaviour follows the yolo-architectures spec, section 7.1 (YOLOv5 v6.0+, G. Jocher et al.,
Ultralytics, 2020-2022; also the validation loss of YOLOv7). Written from the spec and the papers:

* **CIoU** — Z. Zheng, P. Wang, W. Liu, J. Li, R. Ye, D. Ren, "Distance-IoU Loss: Faster and Better
  Learning for Bounding Box Regression", AAAI 2020, eqs. 9-11:
  ``CIoU = IoU - rho^2/c^2 - alpha*v``, ``v = 4/pi^2 * (atan(w_gt/h_gt) - atan(w/h))^2``,
  ``alpha = v / ((1 - IoU) + v)``, with ``alpha`` treated as a constant in back-propagation.
  The numerical guards are the official ones: ``eps = 1e-7`` added to the union, to ``c^2`` and
  to the denominator of ``alpha``.
* **Focal loss** (only when ``fl_gamma > 0``) — T.-Y. Lin, P. Goyal, R. Girshick, K. He,
  P. Dollar, "Focal Loss for Dense Object Detection", ICCV 2017, eq. 5:
  ``FL = -alpha_t * (1 - p_t)^gamma * log(p_t)`` with ``alpha = 0.25``, written for soft targets.
* **Label smoothing** for BCE targets — positives ``1 - eps/2``, negatives ``eps/2``
  (C. Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016).

Target assignment (:func:`candidate_targets`): per level, every (target, anchor) pair whose
width and height ratios stay within ``anchor_t`` is positive in the target's centre cell and in
the neighbouring cells (left/up/right/down) whose shared edge lies within half a cell of the
centre, so typically 3 cells. The predictions are decoded as ``xy = 2*sigmoid - 0.5`` (cell
units) and ``wh = (2*sigmoid)^2 * anchor`` (grid units).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "ComputeLoss",
    "FocalLoss",
    "LevelTargets",
    "bbox_ciou",
    "bbox_ciou_xyxy",
    "candidate_targets",
    "detect_head",
    "objectness_balance",
    "smooth_bce",
]

#: hyp keys the losses read (``label_smoothing`` is optional, default 0).
LOSS_HYP_KEYS: tuple[str, ...] = ("box", "obj", "cls", "cls_pw", "obj_pw", "anchor_t", "fl_gamma")

# Cell offsets, in units of the neighbour threshold g: centre, left, up, right, down.
# The cell of a candidate is floor(g_xy - g * offset).
_CELL_OFFSETS: tuple[tuple[float, float], ...] = (
    (0.0, 0.0),
    (1.0, 0.0),
    (0.0, 1.0),
    (-1.0, 0.0),
    (0.0, -1.0),
)


def bbox_ciou(box1: Tensor, box2: Tensor, eps: float = 1e-7) -> Tensor:
    """Complete IoU of paired boxes in ``(x_centre, y_centre, w, h)`` format.

    Args:
        box1: ``[..., 4]`` boxes (predictions).
        box2: ``[..., 4]`` boxes (targets), broadcastable with ``box1``.
        eps: guard added to the union, the squared enclosing diagonal and the ``alpha`` denominator.

    Returns:
        ``[...]`` CIoU values in ``[-1, 1]``; ``alpha`` carries no gradient.
    """
    x1, y1, w1, h1 = box1.unbind(-1)
    x2, y2, w2, h2 = box2.unbind(-1)
    left1, right1, top1, bottom1 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    left2, right2, top2, bottom2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2

    overlap_w = (torch.minimum(right1, right2) - torch.maximum(left1, left2)).clamp(min=0)
    overlap_h = (torch.minimum(bottom1, bottom2) - torch.maximum(top1, top2)).clamp(min=0)
    inter = overlap_w * overlap_h
    iou = inter / (w1 * h1 + w2 * h2 - inter + eps)

    enclose_w = torch.maximum(right1, right2) - torch.minimum(left1, left2)
    enclose_h = torch.maximum(bottom1, bottom2) - torch.minimum(top1, top2)
    diag2 = enclose_w**2 + enclose_h**2 + eps
    centre_dist2 = (x2 - x1) ** 2 + (y2 - y1) ** 2

    v = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (centre_dist2 / diag2 + v * alpha)


def bbox_ciou_xyxy(box1: Tensor, box2: Tensor, eps: float = 1e-7) -> Tensor:
    """Complete IoU of paired corner boxes ``(x1, y1, x2, y2)``, YOLOv8/YOLO11 numerics.

    Same formula as :func:`bbox_ciou` (Zheng et al., AAAI 2020) with the guards of the
    yolov8-yolo11 spec, section 5.7: ``eps`` is added to both heights (so a zero-height box is
    safe in ``atan(w / h)``), to the union, to ``c^2`` and to the ``alpha`` denominator; the
    centre distance is ``((x1b + x2b - x1a - x2a)^2 + (y1b + y2b - y1a - y2a)^2) / 4``.

    Args:
        box1: ``[..., 4]`` boxes (predictions, or the gt in the assigner).
        box2: ``[..., 4]`` boxes, broadcastable with ``box1``.
        eps: the guard.

    Returns:
        ``[...]`` CIoU values; ``alpha`` carries no gradient.
    """
    ax1, ay1, ax2, ay2 = box1.unbind(-1)
    bx1, by1, bx2, by2 = box2.unbind(-1)
    w1, h1 = ax2 - ax1, ay2 - ay1 + eps
    w2, h2 = bx2 - bx1, by2 - by1 + eps
    inter = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp(min=0) * (
        torch.minimum(ay2, by2) - torch.maximum(ay1, by1)
    ).clamp(min=0)
    iou = inter / (w1 * h1 + w2 * h2 - inter + eps)
    cw = torch.maximum(ax2, bx2) - torch.minimum(ax1, bx1)
    ch = torch.maximum(ay2, by2) - torch.minimum(ay1, by1)
    c2 = cw**2 + ch**2 + eps
    rho2 = ((bx1 + bx2 - ax1 - ax2) ** 2 + (by1 + by2 - ay1 - ay2) ** 2) / 4
    v = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


def smooth_bce(eps: float = 0.0) -> tuple[float, float]:
    """BCE targets ``(positive, negative) = (1 - eps/2, eps/2)`` for label smoothing ``eps``."""
    return 1.0 - 0.5 * eps, 0.5 * eps


def objectness_balance(nl: int) -> list[float]:
    """Per-level objectness weights.

    ``[4.0, 1.0, 0.4]`` for 3 levels, otherwise the first ``nl`` of ``[4.0, 1.0, 0.25, 0.06, 0.02]``.
    """
    if nl == 3:
        return [4.0, 1.0, 0.4]
    table = [4.0, 1.0, 0.25, 0.06, 0.02]
    if not 1 <= nl <= len(table):
        raise ValueError(f"the loss supports 1 to {len(table)} detection levels, the model has nl={nl}")
    return table[:nl]


class FocalLoss(nn.Module):
    """Focal loss on top of ``BCEWithLogitsLoss`` (Lin et al., ICCV 2017, eq. 5), soft targets allowed."""

    def __init__(
        self, gamma: float, alpha: float = 0.25, pos_weight: Tensor | None = None, reduction: str = "mean"
    ) -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"FocalLoss reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.gamma = float(gamma)
        self.alpha = float(alpha)
        self.reduction = reduction
        self.bce = nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="none")

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        loss = self.bce(logits, target)
        prob = torch.sigmoid(logits)
        p_t = target * prob + (1 - target) * (1 - prob)
        alpha_t = target * self.alpha + (1 - target) * (1 - self.alpha)
        loss = loss * alpha_t * (1.0 - p_t) ** self.gamma
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss


def _make_criterion(pos_weight: float, fl_gamma: float) -> nn.Module:
    pw = torch.tensor([float(pos_weight)])
    if fl_gamma > 0:
        return FocalLoss(fl_gamma, pos_weight=pw)
    return nn.BCEWithLogitsLoss(pos_weight=pw)


def detect_head(model: nn.Module) -> nn.Module:
    """The detection head of a model (unwrapping DDP/DataParallel and ``torch.compile``).

    The head must expose ``nc``, ``nl``, ``na``, ``anchors`` (``[nl, na, 2]`` in grid units) and
    ``stride`` (``[nl]``).
    """
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            break
    head = getattr(model, "detect", None)
    if head is None:
        raise AttributeError(
            f"{type(model).__name__} has no 'detect' attribute; the loss needs the model's detection head "
            "(Detect/IDetect) as model.detect"
        )
    missing = [a for a in ("nc", "nl", "na", "anchors", "stride") if getattr(head, a, None) is None]
    if missing:
        raise AttributeError(f"detection head {type(head).__name__} lacks attribute(s) {missing}")
    return head


@dataclass
class LevelTargets:
    """Positive samples of one detection level (one row per positive).

    Attributes:
        b: image index in the batch. a: anchor index. gj, gi: cell row and column.
        tbox: box target ``(x - gi, y - gj, w, h)`` in grid units.
        anchors: the anchor's ``(w, h)`` in grid units.
        tcls: class index. tidx: row of the matched target in the ``targets`` tensor.
    """

    b: Tensor
    a: Tensor
    gj: Tensor
    gi: Tensor
    tbox: Tensor
    anchors: Tensor
    tcls: Tensor
    tidx: Tensor

    def __len__(self) -> int:
        return int(self.b.shape[0])

    def select(self, index: Tensor) -> LevelTargets:
        """Rows ``index`` (a long index or a bool mask) of every field."""
        return LevelTargets(*(getattr(self, f)[index] for f in self.__dataclass_fields__))

    @staticmethod
    def cat(parts: Sequence[LevelTargets], empty: LevelTargets) -> LevelTargets:
        """Concatenate parts row-wise; ``empty`` is returned when there are none."""
        if not parts:
            return empty
        fields = LevelTargets.__dataclass_fields__
        return LevelTargets(*(torch.cat([getattr(p, f) for p in parts]) for f in fields))


def _empty_level(device: torch.device, dtype: torch.dtype) -> LevelTargets:
    long = torch.zeros(0, dtype=torch.long, device=device)
    return LevelTargets(
        long,
        long,
        long,
        long,
        torch.zeros(0, 4, dtype=dtype, device=device),
        torch.zeros(0, 2, dtype=dtype, device=device),
        long,
        long,
    )


def candidate_targets(
    targets: Tensor,
    grid_shapes: Sequence[tuple[int, int]],
    anchors: Tensor,
    anchor_t: float,
    g: float = 0.5,
) -> list[LevelTargets]:
    """YOLOv5 target assignment (spec 7.1 ``build_targets``; YOLOv7 ``find_3_positive``).

    Args:
        targets: ``[nt, 6]`` rows ``(image, class, x, y, w, h)``, xywh normalised to ``[0, 1]``.
        grid_shapes: ``(ny, nx)`` of every level.
        anchors: ``[nl, na, 2]`` anchor sizes in grid units.
        anchor_t: shape-match threshold on ``max(r, 1/r)`` of target to anchor width and height.
        g: neighbour threshold (0.5): a neighbour cell is used when the centre lies within ``g``
            of the shared edge and the neighbour is not outside the first/last cell row/column.

    Returns:
        Per level, the positives ordered by offset (centre, left, up, right, down), then anchor,
        then target. Cell indices are clamped to the grid; the box target uses the clamped cell.
    """
    device, dtype = targets.device, targets.dtype
    anchors = anchors.to(device=device, dtype=dtype)
    offsets = torch.tensor(_CELL_OFFSETS, device=device, dtype=dtype) * g
    out: list[LevelTargets] = []
    for level, (ny, nx) in enumerate(grid_shapes):
        anc = anchors[level]  # (na, 2)
        size = targets.new_tensor([nx, ny])
        gxy_all = targets[:, 2:4] * size
        gwh_all = targets[:, 4:6] * size

        # Shape match for every (anchor, target) pair; nonzero() keeps anchor-major order.
        ratio = gwh_all[None] / anc[:, None]  # (na, nt, 2)
        worst = torch.maximum(ratio, 1 / ratio).amax(dim=2)
        a_idx, t_idx = (worst < anchor_t).nonzero(as_tuple=True)
        gxy, gwh = gxy_all[t_idx], gwh_all[t_idx]

        # Neighbour cells whose shared edge is within g of the centre.
        frac = gxy % 1
        inv = size - gxy
        inv_frac = inv % 1
        use = torch.stack(
            (
                torch.ones_like(frac[:, 0], dtype=torch.bool),
                (frac[:, 0] < g) & (gxy[:, 0] > 1),  # left
                (frac[:, 1] < g) & (gxy[:, 1] > 1),  # up
                (inv_frac[:, 0] < g) & (inv[:, 0] > 1),  # right
                (inv_frac[:, 1] < g) & (inv[:, 1] > 1),  # down
            )
        )  # (5, n): offset-major order after nonzero()
        o_idx, pair = use.nonzero(as_tuple=True)

        gxy, gwh, a_idx, t_idx = gxy[pair], gwh[pair], a_idx[pair], t_idx[pair]
        cell = torch.floor(gxy - offsets[o_idx]).long()
        gi = cell[:, 0].clamp(0, nx - 1)
        gj = cell[:, 1].clamp(0, ny - 1)
        tbox = torch.cat((gxy - torch.stack((gi, gj), 1), gwh), 1)
        rows = targets[t_idx]
        out.append(
            LevelTargets(
                b=rows[:, 0].long(),
                a=a_idx,
                gj=gj,
                gi=gi,
                tbox=tbox,
                anchors=anc[a_idx],
                tcls=rows[:, 1].long(),
                tidx=t_idx,
            )
        )
    return out


class ComputeLoss:
    """YOLOv5 loss (spec 7.1).

    Args:
        model: the detector (DDP-wrapped allowed); its ``detect`` head gives ``nc``, ``nl``, ``na``,
            ``anchors`` (grid units, read at every call) and ``stride``.
        hyp: hyperparameters; keys ``box, obj, cls, cls_pw, obj_pw, anchor_t, fl_gamma`` and optional
            ``label_smoothing``. The gains are used as given (rescale them with
            :func:`yoloattn.engine.hyp.scale_loss_gains` first).
        autobalance: adapt the per-level objectness weights during training (off in the official recipes).

    Calling it with ``p`` (``nl`` tensors ``[bs, na, ny, nx, nc + 5]``, raw train-mode outputs) and
    ``targets`` (``[nt, 6]``: image, class, x, y, w, h normalised) returns
    ``(loss * bs, tensor([lbox, lobj, lcls]).detach())`` where ``loss = lbox + lobj + lcls`` after the gains.
    """

    gr: float = 1.0  # objectness target = (1 - gr) + gr * IoU

    def __init__(self, model: nn.Module, hyp: Mapping[str, Any], autobalance: bool = False) -> None:
        missing = [k for k in LOSS_HYP_KEYS if k not in hyp]
        if missing:
            raise KeyError(
                f"{type(self).__name__} needs hyperparameter(s) {missing}; load a full recipe with "
                "yoloattn.engine.hyp.load_hyp"
            )
        self.hyp = {k: float(hyp[k]) for k in LOSS_HYP_KEYS}
        self.hyp["label_smoothing"] = float(hyp.get("label_smoothing", 0.0))
        head: Any = detect_head(model)  # duck-typed: nc, nl, na, anchors, stride
        self.detect = head
        self.nc, self.nl, self.na = int(head.nc), int(head.nl), int(head.na)
        self.no = self.nc + 5
        self.cp, self.cn = smooth_bce(self.hyp["label_smoothing"])
        self.balance = objectness_balance(self.nl)
        self.autobalance = bool(autobalance)
        strides = [float(s) for s in torch.as_tensor(head.stride).flatten()]
        self.ssi = strides.index(16.0) if autobalance and 16.0 in strides else 0
        self.bce_cls = _make_criterion(self.hyp["cls_pw"], self.hyp["fl_gamma"])
        self.bce_obj = _make_criterion(self.hyp["obj_pw"], self.hyp["fl_gamma"])

    # ------------------------------------------------------------------ helpers
    def _anchors(self, device: torch.device) -> Tensor:
        anchors = torch.as_tensor(self.detect.anchors).detach().to(device=device, dtype=torch.float32)
        if anchors.shape != (self.nl, self.na, 2):
            raise ValueError(
                f"detect.anchors has shape {tuple(anchors.shape)}, "
                f"expected (nl, na, 2) = ({self.nl}, {self.na}, 2)"
            )
        return anchors

    def _strides(self, device: torch.device) -> Tensor:
        return torch.as_tensor(self.detect.stride).detach().to(device=device, dtype=torch.float32).flatten()

    def _check_inputs(self, p: Sequence[Tensor], targets: Tensor) -> None:
        if len(p) != self.nl:
            raise ValueError(f"expected {self.nl} prediction levels, got {len(p)}")
        bs = p[0].shape[0]
        for i, pi in enumerate(p):
            if pi.ndim != 5 or pi.shape[0] != bs or pi.shape[1] != self.na or pi.shape[4] != self.no:
                raise ValueError(
                    f"prediction level {i} has shape {tuple(pi.shape)}, expected "
                    f"({bs}, {self.na}, ny, nx, {self.no}) (raw train-mode head output)"
                )
        if targets.ndim != 2 or targets.shape[1] != 6:
            raise ValueError(
                f"targets must have shape [nt, 6] (image, class, x, y, w, h), got {tuple(targets.shape)}"
            )
        if targets.shape[0]:
            img, cls = targets[:, 0], targets[:, 1]
            if bool((img < 0).any()) or bool((img >= bs).any()):
                raise ValueError(f"targets hold image indices outside [0, {bs - 1}] for a batch of {bs}")
            if bool((cls < 0).any()) or bool((cls >= self.nc).any()):
                raise ValueError(f"targets hold class indices outside [0, {self.nc - 1}] (nc={self.nc})")

    def build_targets(self, p: Sequence[Tensor], targets: Tensor) -> list[LevelTargets]:
        """Positives per level (see :func:`candidate_targets`)."""
        targets = targets.to(device=p[0].device, dtype=torch.float32)
        shapes = [(int(pi.shape[2]), int(pi.shape[3])) for pi in p]
        return candidate_targets(targets, shapes, self._anchors(p[0].device), self.hyp["anchor_t"])

    def _loss(self, p: Sequence[Tensor], positives: Sequence[LevelTargets]) -> tuple[Tensor, Tensor]:
        device = p[0].device
        self.bce_cls.to(device)
        self.bce_obj.to(device)
        lbox = torch.zeros(1, device=device)
        lobj = torch.zeros(1, device=device)
        lcls = torch.zeros(1, device=device)
        for i, (pi, t) in enumerate(zip(p, positives)):
            tobj = torch.zeros(pi.shape[:4], dtype=pi.dtype, device=device)
            n = len(t)
            if n:
                ps = pi[t.b, t.a, t.gj, t.gi]  # (n, no)
                pxy = ps[:, :2].sigmoid() * 2 - 0.5
                pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * t.anchors
                ciou = bbox_ciou(torch.cat((pxy, pwh), 1), t.tbox)
                lbox = lbox + (1.0 - ciou).mean()
                score = ciou.detach().clamp(min=0).to(tobj.dtype)
                if self.gr < 1:
                    score = (1.0 - self.gr) + self.gr * score
                tobj[t.b, t.a, t.gj, t.gi] = score  # duplicates: the last write wins
                if self.nc > 1:
                    tcls = torch.full_like(ps[:, 5:], self.cn)
                    tcls[torch.arange(n, device=device), t.tcls] = self.cp
                    lcls = lcls + self.bce_cls(ps[:, 5:], tcls)
            obji = self.bce_obj(pi[..., 4], tobj)
            lobj = lobj + obji * self.balance[i]
            if self.autobalance:
                self.balance[i] = self.balance[i] * 0.9999 + 0.0001 / max(obji.detach().item(), 1e-12)
        if self.autobalance:
            ref = self.balance[self.ssi]
            self.balance = [w / ref for w in self.balance]
        lbox = lbox * self.hyp["box"]
        lobj = lobj * self.hyp["obj"]
        lcls = lcls * self.hyp["cls"]
        bs = p[0].shape[0]
        return (lbox + lobj + lcls) * bs, torch.cat((lbox, lobj, lcls)).detach()

    def __call__(self, p: Sequence[Tensor], targets: Tensor) -> tuple[Tensor, Tensor]:
        p = list(p)
        self._check_inputs(p, targets)
        return self._loss(p, self.build_targets(p, targets))
