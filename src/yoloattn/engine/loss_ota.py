"""YOLOv7 training loss (``ComputeLossOTA``): YOLOv5 candidates re-assigned by dynamic-k matching.

Behaviour follows the yolo-architectures spec, section 7.2 (C.-Y. Wang, A. Bochkovskiy,
H.-Y. M. Liao, "YOLOv7: Trainable bag-of-freebies sets new state-of-the-art for real-time object
detectors", CVPR 2023). The matching is the SimOTA simplification of optimal transport
assignment: Z. Ge, S. Liu, Z. Li, O. Yoshie, J. Sun, "OTA: Optimal Transport Assignment for
Object Detection", CVPR 2021 (dynamic k = summed top-q IoUs of a target), as simplified in
Z. Ge, S. Liu, F. Wang, Z. Li, J. Sun, "YOLOX: Exceeding YOLO Series in 2021", arXiv 2021 (SimOTA:
each target takes its k lowest-cost candidates, cost = classification + weighted IoU cost).

Per image, the candidates are the YOLOv5 positives of :func:`yoloattn.engine.loss.candidate_targets`
(all levels, all of the image's targets). For every target ``g`` and candidate ``c``:

* ``iou[g, c]`` — IoU of the target box with the candidate's decoded box, both in pixels
  (normalised target xywh times the image height, as the official code does: images are square);
* ``cost[g, c] = BCE(logit(sqrt(sigmoid(cls_c) * sigmoid(obj_c))), onehot(class_g)).sum()
  + 3 * (-log(iou[g, c] + 1e-8))``;
* target ``g`` takes its ``k_g = max(1, int(sum of its 10 largest IoUs))`` cheapest candidates;
  a candidate taken by several targets keeps only the cheapest one.

The chosen candidates become the positives; everything after that (CIoU box loss, IoU-valued
objectness target, class BCE, level balance, gains, ``x bs``) is the YOLOv5 loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_convert, box_iou

from yoloattn.engine.loss import ComputeLoss, LevelTargets, _empty_level, candidate_targets

__all__ = ["ComputeLossOTA", "dynamic_k_matching"]

_TOPK_IOU = 10  # candidates whose IoUs are summed to give dynamic k
_IOU_COST_WEIGHT = 3.0


def dynamic_k_matching(cost: Tensor, iou: Tensor, topk: int = _TOPK_IOU) -> tuple[Tensor, Tensor]:
    """SimOTA assignment of candidates to targets.

    Args:
        cost: ``[G, C]`` matching cost of every target/candidate pair.
        iou: ``[G, C]`` IoU of every target/candidate pair.
        topk: number of largest IoUs summed to give each target's ``k``.

    Returns:
        ``(chosen, gt_index)``: ``chosen`` is a ``[C]`` bool mask of the matched candidates and
        ``gt_index`` the target index of each chosen candidate (in candidate order).
    """
    n_gt, n_cand = cost.shape
    matching = torch.zeros_like(cost, dtype=torch.bool)
    if n_gt == 0 or n_cand == 0:
        return matching.any(0), torch.zeros(0, dtype=torch.long, device=cost.device)
    top_ious = iou.topk(min(topk, n_cand), dim=1).values
    ks = top_ious.sum(1).int().clamp(min=1).tolist()
    for g, k in enumerate(ks):
        matching[g, cost[g].topk(k, largest=False).indices] = True
    shared = matching.sum(0) > 1
    if bool(shared.any()):
        cols = shared.nonzero(as_tuple=True)[0]
        best = cost[:, cols].argmin(0)
        matching[:, cols] = False
        matching[best, cols] = True
    chosen = matching.any(0)
    gt_index = matching[:, chosen].to(torch.uint8).argmax(0)
    return chosen, gt_index


class ComputeLossOTA(ComputeLoss):
    """YOLOv7 loss with dynamic-k (SimOTA) positive assignment (spec 7.2).

    Same constructor as :class:`~yoloattn.engine.loss.ComputeLoss`. Call with
    ``(p, targets, imgs)``; ``imgs`` (the ``[bs, 3, H, W]`` batch) only supplies the image size that
    converts normalised targets to pixels; when it is None the size is level 0's grid times its
    stride. Returns ``(loss * bs, tensor([lbox, lobj, lcls, loss]).detach())`` as the official
    YOLOv7 loss does (spec 7.2: one more item than ``ComputeLoss``, the unscaled total).
    """

    def build_targets(
        self, p: Sequence[Tensor], targets: Tensor, imgs: Tensor | None = None
    ) -> list[LevelTargets]:
        """Positives per level after dynamic-k matching (image-major, candidate order within)."""
        device = p[0].device
        targets = targets.to(device=device, dtype=torch.float32)
        shapes = [(int(pi.shape[2]), int(pi.shape[3])) for pi in p]
        cands = candidate_targets(targets, shapes, self._anchors(device), self.hyp["anchor_t"])
        strides = self._strides(device)
        # normalised targets -> pixels. The official code multiplies x, y, w and h by the image
        # height, right only for square training images; per-axis scaling gives the same numbers
        # there and stays right for rect / multi-scale batches that are not square.
        if imgs is not None:
            img_h, img_w = float(imgs.shape[-2]), float(imgs.shape[-1])
        else:
            img_h = float(shapes[0][0] * strides[0].item())
            img_w = float(shapes[0][1] * strides[0].item())
        to_px = torch.tensor([img_w, img_h, img_w, img_h], device=device)

        # Decode every candidate once (pixels), without gradient: only the matching uses it.
        boxes, cls_logits, obj_logits = [], [], []
        with torch.no_grad():
            for i, c in enumerate(cands):
                pc = p[i][c.b, c.a, c.gj, c.gi].detach().float()
                cell = torch.stack((c.gi, c.gj), 1).float()
                xy = (pc[:, :2].sigmoid() * 2 - 0.5 + cell) * strides[i]
                wh = (pc[:, 2:4].sigmoid() * 2) ** 2 * c.anchors * strides[i]
                boxes.append(torch.cat((xy, wh), 1))
                cls_logits.append(pc[:, 5:])
                obj_logits.append(pc[:, 4:5])

        parts: list[list[LevelTargets]] = [[] for _ in p]
        bs = p[0].shape[0]
        with torch.no_grad():
            for b in range(bs):
                gt_rows = (targets[:, 0] == b).nonzero(as_tuple=True)[0]
                if gt_rows.numel() == 0:
                    continue
                sel = [(c.b == b).nonzero(as_tuple=True)[0] for c in cands]
                n_per_level = [int(s.numel()) for s in sel]
                if sum(n_per_level) == 0:
                    continue
                gts = targets[gt_rows]
                pred = torch.cat([bx[s] for bx, s in zip(boxes, sel)])
                pcls = torch.cat([cl[s] for cl, s in zip(cls_logits, sel)])
                pobj = torch.cat([ob[s] for ob, s in zip(obj_logits, sel)])

                gt_xyxy = box_convert(gts[:, 2:6] * to_px, "cxcywh", "xyxy")
                iou = box_iou(gt_xyxy, box_convert(pred, "cxcywh", "xyxy"))  # (G, C)
                iou_cost = -torch.log(iou + 1e-8)

                y = (pcls.sigmoid() * pobj.sigmoid()).sqrt()
                # only exact 0 and 1 move (to the nearest representable values), so the cost equals
                # the official one wherever that is finite
                fi = torch.finfo(y.dtype)
                y = y.clamp(fi.tiny, 1.0 - fi.eps / 2)
                logit = torch.log(y / (1 - y))  # (C, nc)
                onehot = F.one_hot(gts[:, 1].long(), self.nc).float()  # (G, nc)
                n_gt, n_c = iou.shape
                cls_cost = F.binary_cross_entropy_with_logits(
                    logit[None].expand(n_gt, n_c, self.nc),
                    onehot[:, None].expand(n_gt, n_c, self.nc),
                    reduction="none",
                ).sum(-1)
                cost = cls_cost + _IOU_COST_WEIGHT * iou_cost

                chosen, gt_index = dynamic_k_matching(cost, iou)
                matched_rows = gt_rows[gt_index]
                level_of = torch.repeat_interleave(
                    torch.arange(len(cands), device=device), torch.tensor(n_per_level, device=device)
                )[chosen]
                cand_index = torch.cat(sel)[chosen]
                for i, c in enumerate(cands):
                    on_level = level_of == i
                    if not bool(on_level.any()):
                        continue
                    pos = c.select(cand_index[on_level])
                    rows = targets[matched_rows[on_level]]
                    ny, nx = shapes[i]
                    gain = rows.new_tensor([nx, ny, nx, ny])
                    tbox = rows[:, 2:6] * gain
                    tbox[:, :2] -= torch.stack((pos.gi, pos.gj), 1)
                    pos.tbox = tbox
                    pos.tcls = rows[:, 1].long()
                    pos.tidx = matched_rows[on_level]
                    parts[i].append(pos)
        empty = _empty_level(device, torch.float32)
        return [LevelTargets.cat(parts[i], empty) for i in range(len(p))]

    def __call__(
        self, p: Sequence[Tensor], targets: Tensor, imgs: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        p = list(p)
        self._check_inputs(p, targets)
        total, items = self._loss(p, self.build_targets(p, targets, imgs))
        return total, torch.cat((items, items.sum(0, keepdim=True)))
