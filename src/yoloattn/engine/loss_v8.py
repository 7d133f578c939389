"""YOLOv8 / YOLO11 training loss (``V8DetectionLoss``): task-aligned targets, BCE, CIoU and DFL.

Behaviour follows the yolov8-yolo11 spec, section 5 (ultralytics ``v8DetectionLoss``). The terms:

* **Classification** — BCE with logits against the soft targets of the task-aligned assigner
  (:mod:`yoloattn.engine.assigner_tal`; TOOD, Feng et al., ICCV 2021), summed over every image,
  anchor and class and divided by ``S = max(sum of all target scores, 1)``. No objectness.
* **Box** — ``1 - CIoU`` (Zheng et al., AAAI 2020; :func:`~yoloattn.engine.loss.bbox_ciou_xyxy`) of
  each foreground anchor's decoded box and its gt box in grid units, weighted by the anchor's
  target score and divided by ``S``.
* **DFL** — Distribution Focal Loss (X. Li, W. Wang, L. Wu, S. Chen, X. Hu, J. Li, J. Tang, J. Yang,
  "Generalized Focal Loss: Learning Qualified and Distributed Bounding Boxes for Dense Object
  Detection", NeurIPS 2020, eq. 6): for a side distance ``t`` (grid units, clamped to
  ``[0, reg_max - 1 - 0.01]``) with ``tl = floor(t)``, ``tr = tl + 1``:
  ``-((tr - t) log p_tl + (t - tl) log p_tr)`` over the side's softmax of ``reg_max`` bins; mean over
  the four sides, weighted and normalised as the box term.

Gains ``box 7.5, cls 0.5, dfl 1.5`` (no rescaling by levels, classes or image size). The call
returns ``((box + cls + dfl) * B, tensor([box, cls, dfl]).detach())``: the first value is the sum
of the spec's ``loss x B`` vector (what the official trainer back-propagates), a one-element
tensor as :class:`~yoloattn.engine.loss.ComputeLoss` returns, so the trainer can use either loss;
the items are the 8.3.x loss items (not multiplied by ``B``).

The small-box rule (spec 5.4 step 1, section 9): ``small_box_widening=True`` (default, ultralytics
8.4) widens every gt side below the second stride (16 px) to it for the assigner's inside test;
``False`` is the 8.3 (original YOLOv8/YOLO11) behaviour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yoloattn.engine.assigner_tal import Assignment, TaskAlignedAssigner
from yoloattn.engine.loss import bbox_ciou_xyxy

__all__ = [
    "V8_GAINS",
    "V8DetectionLoss",
    "anchor_free_head",
    "anchor_points",
    "dfl_loss",
    "distances_to_boxes",
    "targets_to_padded",
]

#: Default loss gains (spec 5.6).
V8_GAINS: dict[str, float] = {"box": 7.5, "cls": 0.5, "dfl": 1.5}


def anchor_free_head(model: nn.Module) -> nn.Module:
    """The anchor-free Detect head of ``model`` (DDP / DataParallel / ``torch.compile`` unwrapped).

    Looked for, in order, as ``model.model[-1]``, ``model.detect`` and ``model`` itself; the first
    with ``nc``, ``reg_max`` and ``stride`` attributes is returned.
    """
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            break
    candidates: list[Any] = []
    rows = getattr(model, "model", None)
    if isinstance(rows, (nn.Sequential, nn.ModuleList)) and len(rows):
        candidates.append(rows[-1])
    try:
        candidates.append(model.detect)
    except AttributeError:  # the v5 Model.detect property raises for other heads
        pass
    candidates.append(model)
    for head in candidates:
        if all(getattr(head, a, None) is not None for a in ("nc", "reg_max", "stride")):
            return head
    raise AttributeError(
        f"{type(model).__name__} has no anchor-free detection head (a module with nc, reg_max and "
        "stride as model.model[-1] or model.detect); V8DetectionLoss is for YOLOv8/YOLO11 models"
    )


def anchor_points(
    shapes: Sequence[tuple[int, int]], strides: Sequence[float], device: torch.device, offset: float = 0.5
) -> tuple[Tensor, Tensor]:
    """``(points [N, 2], stride [N, 1])``: cell centres in grid units, row-major per level, P3 first."""
    points, stride = [], []
    for (h, w), s in zip(shapes, strides):
        y = torch.arange(h, device=device, dtype=torch.float32) + offset
        x = torch.arange(w, device=device, dtype=torch.float32) + offset
        yy, xx = torch.meshgrid(y, x, indexing="ij")
        points.append(torch.stack((xx, yy), -1).view(-1, 2))
        stride.append(torch.full((h * w, 1), float(s), device=device))
    return torch.cat(points), torch.cat(stride)


def distances_to_boxes(logits: Tensor, points: Tensor, reg_max: int) -> Tensor:
    """Decode DFL logits ``[B, N, 4 * reg_max]`` (side-major ``l, t, r, b``) to ``xyxy`` boxes, grid units."""
    b, n, _ = logits.shape
    bins = torch.arange(reg_max, device=logits.device, dtype=logits.dtype)
    # expected distance per side; an elementwise product and sum rather than a matmul, so autocast
    # (AMP) leaves it in the logits' precision
    dist = (logits.view(b, n, 4, reg_max).softmax(-1) * bins).sum(-1)  # [B, N, 4]
    lt, rb = dist[..., :2], dist[..., 2:]
    return torch.cat((points - lt, points + rb), -1)


def dfl_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Distribution focal loss per anchor: ``logits [n, 4, reg_max]``, ``target [n, 4]`` -> ``[n]``.

    ``target`` must lie in ``[0, reg_max - 1)``; each side's loss is the cross entropy against the
    two bins around the target, weighted by closeness; the four sides are averaged.
    """
    reg_max = logits.shape[-1]
    tl = target.floor().long()
    tr = tl + 1
    wl = tr.to(target.dtype) - target
    wr = 1 - wl
    logp = logits.reshape(-1, reg_max).log_softmax(-1)
    nll_l = -logp.gather(1, tl.reshape(-1, 1)).view(tl.shape)
    nll_r = -logp.gather(1, tr.reshape(-1, 1)).view(tr.shape)
    return (nll_l * wl + nll_r * wr).mean(-1)


def targets_to_padded(targets: Tensor, batch_size: int, img_wh: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``[M, 6]`` rows ``(image, class, cx, cy, w, h)`` (normalised) -> padded per-image targets.

    Returns ``(gt_labels [B, M_max, 1], gt_bboxes [B, M_max, 4] xyxy pixels, mask_gt [B, M_max, 1])``;
    an image's rows keep their order in ``targets``; padding rows are zeros; ``M_max`` is 0 when
    there are no targets. ``img_wh`` is ``(W, H)`` in pixels.
    """
    device = targets.device
    if targets.shape[0] == 0:
        z = torch.zeros((batch_size, 0, 1), device=device)
        return z, torch.zeros((batch_size, 0, 4), device=device), z.bool()
    img = targets[:, 0].long()
    counts = torch.bincount(img, minlength=batch_size)
    m_max = int(counts.max())
    # position of each row within its image, in list order
    order = torch.argsort(img, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(img)
    slot[order] = torch.arange(img.numel(), device=device) - starts[img[order]]
    out = torch.zeros((batch_size, m_max, 5), device=device)
    cxcy, wh = targets[:, 2:4] * img_wh, targets[:, 4:6] * img_wh
    out[img, slot] = torch.cat((targets[:, 1:2], cxcy - wh / 2, cxcy + wh / 2), 1).float()
    gt_labels, gt_bboxes = out[..., :1], out[..., 1:]
    mask_gt = gt_bboxes.sum(-1, keepdim=True) > 0
    return gt_labels, gt_bboxes, mask_gt


class V8DetectionLoss:
    """YOLOv8 / YOLO11 detection loss (spec 5).

    Args:
        model: the detector (DDP-wrapped allowed); its anchor-free head (see
            :func:`anchor_free_head`) gives ``nc``, ``reg_max`` and ``stride`` (read at every call).
        hyp: optional mapping with the gains ``box``, ``cls``, ``dfl``; missing gains take
            :data:`V8_GAINS`. A recipe without ``dfl`` but with ``obj`` (a YOLOv5/v7 recipe) is refused.
        small_box_widening: the 8.4 small-gt rule (default); ``False`` gives the 8.3 behaviour.
        topk, alpha, beta: assigner settings (10, 0.5, 6.0).

    Calling it with ``preds`` (the three raw train-mode maps ``[B, 4 * reg_max + nc, H_i, W_i]``,
    P3 first) and ``targets`` (``[M, 6]``: image, class, cx, cy, w, h normalised) returns
    ``(total, items)``; see the module docstring.
    """

    item_names: tuple[str, str, str] = ("box", "cls", "dfl")

    def __init__(
        self,
        model: nn.Module,
        hyp: Mapping[str, Any] | None = None,
        *,
        small_box_widening: bool = True,
        topk: int = 10,
        alpha: float = 0.5,
        beta: float = 6.0,
    ) -> None:
        hyp = dict(hyp or {})
        if "obj" in hyp and "dfl" not in hyp:
            raise KeyError(
                "V8DetectionLoss got a YOLOv5/YOLOv7 recipe (it has 'obj' and no 'dfl'); pass the gains "
                f"box, cls, dfl (defaults {V8_GAINS}) or no hyp"
            )
        self.gains = {k: float(hyp.get(k, v)) for k, v in V8_GAINS.items()}
        head: Any = anchor_free_head(model)
        self.head = head
        self.nc = int(head.nc)
        self.reg_max = int(head.reg_max)
        self.no = self.nc + 4 * self.reg_max
        self.small_box_widening = bool(small_box_widening)
        self.topk, self.alpha, self.beta = int(topk), float(alpha), float(beta)

    # ------------------------------------------------------------------ helpers
    def _strides(self) -> list[float]:
        strides = [float(s) for s in torch.as_tensor(self.head.stride).detach().flatten()]
        if not strides or any(s <= 0 for s in strides):
            raise ValueError(f"the head's stride {strides} is not set; build the model before the loss call")
        return strides

    def _check_inputs(self, preds: Sequence[Tensor], targets: Tensor, nl: int) -> None:
        if len(preds) != nl:
            raise ValueError(f"expected {nl} prediction levels (one per stride), got {len(preds)}")
        bs = preds[0].shape[0]
        for i, p in enumerate(preds):
            if p.ndim != 4 or p.shape[0] != bs or p.shape[1] != self.no:
                raise ValueError(
                    f"prediction level {i} has shape {tuple(p.shape)}, expected ({bs}, {self.no}, H, W) "
                    f"(raw train-mode maps: 4*reg_max={4 * self.reg_max} box logits + nc={self.nc} classes)"
                )
        if targets.ndim != 2 or targets.shape[1] != 6:
            raise ValueError(
                f"targets must have shape [M, 6] (image, class, cx, cy, w, h), got {tuple(targets.shape)}"
            )
        if targets.shape[0]:
            img, cls = targets[:, 0], targets[:, 1]
            if bool((img < 0).any()) or bool((img >= bs).any()):
                raise ValueError(f"targets hold image indices outside [0, {bs - 1}] for a batch of {bs}")
            if bool((cls < 0).any()) or bool((cls >= self.nc).any()):
                raise ValueError(f"targets hold class indices outside [0, {self.nc - 1}] (nc={self.nc})")

    def assigner(self, strides: Sequence[float]) -> TaskAlignedAssigner:
        """The assigner for these strides (widening side = the second stride, 16 px for P3-P5)."""
        size = (strides[1] if len(strides) > 1 else strides[0]) if self.small_box_widening else None
        return TaskAlignedAssigner(self.nc, self.topk, self.alpha, self.beta, small_box_size=size)

    def split(self, preds: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """``(pred_distri [B, N, 4 * reg_max], pred_scores [B, N, nc])`` in float32."""
        b = preds[0].shape[0]
        flat = torch.cat([p.reshape(b, self.no, -1) for p in preds], 2).float()
        distri, scores = flat.split((4 * self.reg_max, self.nc), 1)
        return distri.permute(0, 2, 1).contiguous(), scores.permute(0, 2, 1).contiguous()

    def assign(self, preds: Sequence[Tensor], targets: Tensor) -> tuple[Assignment, dict[str, Tensor]]:
        """Run the assigner; returns the assignment and the tensors the loss terms use."""
        strides = self._strides()
        self._check_inputs(preds, targets, len(strides))
        b = preds[0].shape[0]
        device = preds[0].device
        pred_distri, pred_scores = self.split(preds)
        shapes = [(int(p.shape[2]), int(p.shape[3])) for p in preds]
        points, stride = anchor_points(shapes, strides, device)
        img_wh = torch.tensor([shapes[0][1] * strides[0], shapes[0][0] * strides[0]], device=device)
        gt_labels, gt_bboxes, mask_gt = targets_to_padded(targets.to(device).float(), b, img_wh)
        pred_bboxes = distances_to_boxes(pred_distri, points, self.reg_max)  # grid units
        assignment = self.assigner(strides)(
            pred_scores.detach().sigmoid(),
            pred_bboxes.detach() * stride,
            points * stride,
            gt_labels,
            gt_bboxes,
            mask_gt,
        )
        parts = {
            "pred_distri": pred_distri,
            "pred_scores": pred_scores,
            "pred_bboxes": pred_bboxes,
            "points": points,
            "stride": stride,
        }
        return assignment, parts

    # ------------------------------------------------------------------ call
    def __call__(self, preds: Sequence[Tensor], targets: Tensor) -> tuple[Tensor, Tensor]:
        preds = list(preds)
        assignment, parts = self.assign(preds, targets)
        pred_distri, pred_scores = parts["pred_distri"], parts["pred_scores"]
        pred_bboxes, points, stride = parts["pred_bboxes"], parts["points"], parts["stride"]
        b = pred_scores.shape[0]

        target_scores = assignment.scores.to(pred_scores.dtype)
        s = target_scores.sum().clamp(min=1)
        l_cls = F.binary_cross_entropy_with_logits(pred_scores, target_scores, reduction="sum") / s

        fg = assignment.fg_mask
        if bool(fg.any()):
            weight = target_scores.sum(-1)[fg]  # [n_fg]
            target_boxes = assignment.bboxes / stride  # grid units
            ciou = bbox_ciou_xyxy(pred_bboxes[fg], target_boxes[fg])
            l_box = ((1.0 - ciou) * weight).sum() / s
            pts = points.expand(b, -1, -1)[fg]
            tb = target_boxes[fg]
            dist = torch.cat((pts - tb[:, :2], tb[:, 2:] - pts), -1).clamp(0, self.reg_max - 1 - 0.01)
            logits = pred_distri[fg].view(-1, 4, self.reg_max)
            l_dfl = (dfl_loss(logits, dist) * weight).sum() / s
        else:  # keep pred_distri in the graph (zero gradient) so DDP sees every parameter used
            l_box = pred_distri.sum() * 0.0 + 0.0  # + 0.0 turns a -0.0 into 0.0
            l_dfl = l_box

        items = torch.stack((l_box * self.gains["box"], l_cls * self.gains["cls"], l_dfl * self.gains["dfl"]))
        return items.sum().reshape(1) * b, items.detach()
