"""Task-aligned assignment of anchor points to ground-truth boxes (YOLOv8 / YOLO11 training).

Behaviour follows the yolov8-yolo11 spec, section 5.4, which describes the assigner of
C. Feng, Y. Zhong, Y. Gao, M. R. Scott, W. Huang, "TOOD: Task-aligned One-stage Object Detection",
ICCV 2021 (section 3.2.1: alignment metric ``t = s^alpha * u^beta``, the ``m`` largest per object
become positives, normalised targets ``t_hat = t / max(t) * max(u)``), as used by YOLOv8/YOLO11
with ``u`` = CIoU clamped at 0, ``topk = 10``, ``alpha = 0.5``, ``beta = 6``.

Steps per image ``b``, gt row ``j``, anchor ``a`` (everything in pixels, no gradient):

1. *candidates*: the anchor centre lies strictly inside the gt box (all four margins > 1e-9).
   With ``small_box_size`` set (ultralytics 8.4), every valid gt side shorter than it is widened
   to it around the same centre for this test only; ``None`` keeps the box as is (8.3 and the
   original YOLOv8/YOLO11 releases).
2. *alignment* ``align = score^alpha * CIoU^beta`` on candidates (``score`` = predicted
   probability of the gt's class, ``CIoU`` clamped at 0), 0 elsewhere.
3. *top-k*: each gt keeps its ``topk`` largest alignments (``torch.topk``) among its candidates.
4. *conflicts*: an anchor positive for several gts keeps only the gt of largest CIoU (first on
   ties; the argmax runs over every gt row).
5. *targets*: the assigned gt's class and box; one-hot scores scaled by
   ``max_j align[j, a] * max_a' CIoU[j, a'] / max_a' align[j, a']`` (positives only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from yoloattn.engine.loss import bbox_ciou_xyxy

__all__ = ["Assignment", "TaskAlignedAssigner", "candidates_in_gts", "widen_small_boxes"]


@dataclass
class Assignment:
    """Targets for every anchor of a batch (``B`` images, ``N`` anchors, ``nc`` classes).

    Attributes:
        labels: ``[B, N]`` long, the class of the assigned gt (gt row 0's class for background).
        bboxes: ``[B, N, 4]`` the assigned gt box, ``xyxy`` pixels (gt row 0's box for background).
        scores: ``[B, N, nc]`` soft one-hot classification targets, 0 for background.
        fg_mask: ``[B, N]`` bool, True for positive (foreground) anchors.
        gt_idx: ``[B, N]`` long, index of the assigned gt row (0 for background).
    """

    labels: Tensor
    bboxes: Tensor
    scores: Tensor
    fg_mask: Tensor
    gt_idx: Tensor


def widen_small_boxes(gt_bboxes: Tensor, mask_gt: Tensor, size: float) -> Tensor:
    """Boxes whose width or height is below ``size`` get that side set to ``size``, same centre.

    Args:
        gt_bboxes: ``[B, M, 4]`` ``xyxy``.
        mask_gt: ``[B, M, 1]`` valid rows (padding rows are left as they are).
        size: the smallest side, in the boxes' units.
    """
    x1, y1, x2, y2 = gt_bboxes.unbind(-1)
    valid = mask_gt[..., 0].bool()
    w, h = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half_w = torch.where(valid & (w < size), torch.full_like(w, size / 2), w / 2)
    half_h = torch.where(valid & (h < size), torch.full_like(h, size / 2), h / 2)
    widened = torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), -1)
    keep = ~(valid & ((w < size) | (h < size)))
    return torch.where(keep[..., None], gt_bboxes, widened)  # untouched boxes keep their exact bits


def candidates_in_gts(anchor_points: Tensor, gt_bboxes: Tensor, eps: float = 1e-9) -> Tensor:
    """``[B, M, N]`` bool: anchor centre ``a`` (``[N, 2]``) strictly inside gt ``j`` (``[B, M, 4]`` xyxy)."""
    ax, ay = anchor_points[:, 0], anchor_points[:, 1]
    x1, y1, x2, y2 = (t[..., None] for t in gt_bboxes.unbind(-1))  # [B, M, 1] each
    margins = torch.stack((ax - x1, ay - y1, x2 - ax, y2 - ay), -1)  # [B, M, N, 4]
    return margins.amin(-1) > eps


class TaskAlignedAssigner:
    """TOOD task-aligned assigner with the YOLOv8/YOLO11 settings (spec 5.4).

    Args:
        num_classes: ``nc``.
        topk: positives per gt before conflict resolution (10).
        alpha: exponent of the class score in the alignment metric (0.5).
        beta: exponent of the CIoU (6.0).
        eps: guard of the normalisation and the inside test (1e-9).
        small_box_size: ``None`` (8.3 behaviour) or the side, in pixels, below which a gt is widened
            for the inside test (8.4: the second stride, 16).
    """

    def __init__(
        self,
        num_classes: int,
        topk: int = 10,
        alpha: float = 0.5,
        beta: float = 6.0,
        eps: float = 1e-9,
        small_box_size: float | None = None,
    ) -> None:
        if num_classes < 1 or topk < 1:
            raise ValueError(f"num_classes and topk must be >= 1, got {num_classes} and {topk}")
        self.nc = int(num_classes)
        self.topk = int(topk)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.eps = float(eps)
        self.small_box_size = None if small_box_size is None else float(small_box_size)

    # ------------------------------------------------------------------ steps
    def metrics(
        self,
        pd_scores: Tensor,
        pd_bboxes: Tensor,
        gt_labels: Tensor,
        gt_bboxes: Tensor,
        mask: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """``(align, overlaps)``, both ``[B, M, N]``, computed where ``mask`` (``[B, M, N]``) is True."""
        b, m, n = mask.shape
        overlaps = pd_bboxes.new_zeros((b, m, n))
        scores = pd_scores.new_zeros((b, m, n))
        labels = gt_labels[..., 0].long().clamp(0, self.nc - 1)  # [B, M]
        # score of gt j's class at every anchor: pd_scores[b, a, labels[b, j]]
        cls_scores = pd_scores.gather(2, labels[:, None, :].expand(b, n, m)).transpose(1, 2)  # [B, M, N]
        scores[mask] = cls_scores[mask]
        bi, ji, ai = mask.nonzero(as_tuple=True)
        overlaps[mask] = bbox_ciou_xyxy(gt_bboxes[bi, ji], pd_bboxes[bi, ai]).clamp(min=0).to(overlaps.dtype)
        align = scores.pow(self.alpha) * overlaps.pow(self.beta)
        return align, overlaps

    def topk_mask(self, align: Tensor, mask_gt: Tensor) -> Tensor:
        """``[B, M, N]`` mask of each valid gt's ``topk`` largest alignments (``torch.topk`` order).

        Padded gt rows point all their picks at anchor 0; an anchor picked more than once in a
        row is dropped, so those rows select nothing.
        """
        k = min(self.topk, align.shape[-1])
        idx = align.topk(k, dim=-1, largest=True).indices  # [B, M, k]
        idx = idx.masked_fill(~mask_gt.bool().expand_as(idx), 0)
        counts = torch.zeros_like(align, dtype=torch.int32)
        counts.scatter_add_(-1, idx, torch.ones_like(idx, dtype=torch.int32))
        return counts == 1

    @staticmethod
    def resolve_conflicts(mask_pos: Tensor, overlaps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One gt per anchor: ``(gt_idx [B, N], fg_mask [B, N], mask_pos [B, M, N])``.

        An anchor claimed by more than one gt keeps the gt of largest ``overlaps`` (first on ties),
        looked for over every gt row.
        """
        n_claims = mask_pos.sum(1)  # [B, N]
        if bool((n_claims > 1).any()):
            shared = (n_claims > 1)[:, None, :].expand_as(mask_pos)  # [B, M, N]
            best = overlaps.argmax(1)  # [B, N]
            one_hot = F.one_hot(best, mask_pos.shape[1]).permute(0, 2, 1).to(mask_pos.dtype)
            mask_pos = torch.where(shared, one_hot, mask_pos)
        fg_mask = mask_pos.sum(1) > 0
        gt_idx = mask_pos.argmax(1)
        return gt_idx, fg_mask, mask_pos

    # ------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        pd_scores: Tensor,
        pd_bboxes: Tensor,
        anchor_points: Tensor,
        gt_labels: Tensor,
        gt_bboxes: Tensor,
        mask_gt: Tensor,
    ) -> Assignment:
        """Assign targets.

        Args:
            pd_scores: ``[B, N, nc]`` class probabilities (after sigmoid).
            pd_bboxes: ``[B, N, 4]`` decoded predicted boxes, ``xyxy`` pixels.
            anchor_points: ``[N, 2]`` anchor centres in pixels.
            gt_labels: ``[B, M, 1]`` gt classes (padded).
            gt_bboxes: ``[B, M, 4]`` gt boxes, ``xyxy`` pixels (padded with zeros).
            mask_gt: ``[B, M, 1]`` valid gt rows.
        """
        b, n, _ = pd_scores.shape
        m = gt_bboxes.shape[1]
        device = pd_scores.device
        if m == 0:
            return Assignment(
                labels=torch.zeros((b, n), dtype=torch.long, device=device),
                bboxes=gt_bboxes.new_zeros((b, n, 4)),
                scores=pd_scores.new_zeros((b, n, self.nc)),
                fg_mask=torch.zeros((b, n), dtype=torch.bool, device=device),
                gt_idx=torch.zeros((b, n), dtype=torch.long, device=device),
            )
        valid = mask_gt.bool()  # [B, M, 1]
        boxes_for_test = (
            widen_small_boxes(gt_bboxes, valid, self.small_box_size)
            if self.small_box_size is not None
            else gt_bboxes
        )
        in_gts = candidates_in_gts(anchor_points, boxes_for_test) & valid  # [B, M, N]
        align, overlaps = self.metrics(pd_scores, pd_bboxes, gt_labels, gt_bboxes, in_gts)
        mask_pos = (self.topk_mask(align, valid) & in_gts).to(align.dtype)
        gt_idx, fg_mask, mask_pos = self.resolve_conflicts(mask_pos, overlaps)

        batch_offset = torch.arange(b, device=device)[:, None] * m
        flat = (gt_idx + batch_offset).flatten()
        labels = gt_labels.long().flatten()[flat].view(b, n).clamp(min=0)
        bboxes = gt_bboxes.view(-1, 4)[flat].view(b, n, 4)
        scores = F.one_hot(labels.clamp(max=self.nc - 1), self.nc).to(pd_scores.dtype)
        scores = scores * fg_mask[..., None]

        align = align * mask_pos
        overlaps = overlaps * mask_pos
        best_align = align.amax(-1, keepdim=True)  # [B, M, 1]
        best_overlap = overlaps.amax(-1, keepdim=True)
        norm = (align * best_overlap / (best_align + self.eps)).amax(1)  # [B, N]
        scores = scores * norm[..., None]
        return Assignment(labels=labels, bboxes=bboxes, scores=scores, fg_mask=fg_mask, gt_idx=gt_idx)
