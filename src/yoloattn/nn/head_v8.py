"""The anchor-free YOLOv8 / YOLO11 detection head with distribution focal loss (DFL) box bins.

Written from ``shared/spec/yolov8-yolo11.md`` section 3 (no code of the ultralytics package was
read). The box representation is the one of "Generalized Focal Loss: Learning Qualified and
Distributed Bounding Boxes for Dense Object Detection" (Li et al., NeurIPS 2020): each side
distance (left, top, right, bottom) is a softmax over ``reg_max = 16`` bins and decodes to its
expectation. The head has no anchors and no objectness.

Per level ``i`` the box branch ``cv2[i]`` gives ``4 * reg_max`` logits (side-major: channel
``s * reg_max + j`` is bin ``j`` of side ``s``) and the class branch ``cv3[i]`` gives ``nc``
logits. ``legacy=True`` (YOLOv8) uses two 3x3 Conv blocks in the class branch, ``legacy=False``
(YOLO11) two depthwise-3x3 + pointwise pairs.

Forward: training mode returns the per-level maps ``[B, 4 * reg_max + nc, H_i, W_i]``; eval mode
returns ``(y, maps)`` with ``y`` ``[B, 4 + nc, N]``: boxes as centre-size ``(cx, cy, w, h)`` in
input pixels, then the class probabilities (sigmoid). ``N`` sums ``H_i * W_i`` over the levels;
anchors are the cell centres, row-major, P3 first (:func:`make_anchors`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from yoloattn.nn.conv import Conv, DWConv

__all__ = ["DFL", "DFLDetect", "make_anchors", "dist2bbox"]


def make_anchors(
    feats: Sequence[Tensor], strides: Sequence[float] | Tensor, offset: float = 0.5
) -> tuple[Tensor, Tensor]:
    """Anchor points ``(N, 2)`` (x, y in each level's grid units, ``+offset``) and the matching
    strides ``(N, 1)`` for feature maps ``[B, C, H_i, W_i]``: row-major per level (y outer, x
    inner), levels in order."""
    points, stride_rows = [], []
    for i, f in enumerate(feats):
        h, w = int(f.shape[-2]), int(f.shape[-1])
        dev, dt = f.device, f.dtype
        sy = torch.arange(h, device=dev, dtype=dt) + offset
        sx = torch.arange(w, device=dev, dtype=dt) + offset
        yv, xv = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((xv, yv), -1).view(-1, 2))
        s = float(strides[i])
        stride_rows.append(torch.full((h * w, 1), s, device=dev, dtype=dt))
    return torch.cat(points), torch.cat(stride_rows)


def dist2bbox(distance: Tensor, anchor_points: Tensor, xywh: bool = True, dim: int = -1) -> Tensor:
    """Side distances ``(l, t, r, b)`` around ``anchor_points`` to ``(cx, cy, w, h)`` (``xywh``)
    or corners ``(x1, y1, x2, y2)``, along ``dim``."""
    lt, rb = distance.chunk(2, dim)
    x1y1 = anchor_points - lt
    x2y2 = anchor_points + rb
    if xywh:
        return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)
    return torch.cat((x1y1, x2y2), dim)


class DFL(nn.Module):
    """Expectation of a softmax over ``c1`` bins: ``(B, 4 * c1, N) -> (B, 4, N)``.

    ``conv`` is a frozen 1x1 ``Conv2d(c1, 1)`` with weights ``0, 1, ..., c1 - 1``; it is a
    parameter (``requires_grad=False``) so that it appears in the official state dict.
    """

    def __init__(self, c1: int = 16) -> None:
        super().__init__()
        self.c1 = c1
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.arange(c1, dtype=torch.float32).view(1, c1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, _, n = x.shape
        p = x.view(b, 4, self.c1, n).transpose(2, 1).softmax(1)  # (b, c1, 4, n)
        return self.conv(p).view(b, 4, n)


class DFLDetect(nn.Module):
    """Anchor-free detection head of YOLOv8 (``legacy=True``) and YOLO11 (``legacy=False``).

    Args:
        nc: number of classes.
        reg_max: DFL bins per box side (16).
        end2end: the one-to-one (NMS-free) branch; not part of the v8/11 configs, must be falsy.
        ch: input channels of the levels (P3, P4, P5).
        legacy: class-branch design; the parser sets it (True unless the model has a C3k2 row).

    Attributes used by the loss and the engine: ``nc``, ``reg_max``, ``no = nc + 4 * reg_max``
    (channels of one raw map), ``nl`` (levels), ``stride`` (non-persistent buffer, set by the
    model builder: ``tensor([8., 16., 32.])``), ``legacy``.
    """

    stride: Tensor  # non-persistent buffer registered in __init__

    def __init__(
        self,
        nc: int = 80,
        reg_max: int = 16,
        end2end: bool | None = None,
        ch: Sequence[int] = (),
        legacy: bool = True,
    ) -> None:
        super().__init__()
        if end2end:
            raise ValueError("the end-to-end (one-to-one) head branch is not supported")
        if not ch:
            raise ValueError("DFLDetect needs the input channels of at least one level")
        self.nc = int(nc)
        self.reg_max = int(reg_max)
        self.nl = len(ch)
        self.no = self.nc + 4 * self.reg_max
        self.legacy = bool(legacy)
        self.register_buffer("stride", torch.zeros(self.nl), persistent=False)
        c2 = max(16, ch[0] // 4, 4 * self.reg_max)
        c3 = max(ch[0], min(self.nc, 100))
        self.cv2 = nn.ModuleList(
            nn.Sequential(Conv(c, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * self.reg_max, 1)) for c in ch
        )
        if self.legacy:
            self.cv3 = nn.ModuleList(
                nn.Sequential(Conv(c, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, self.nc, 1)) for c in ch
            )
        else:
            self.cv3 = nn.ModuleList(
                nn.Sequential(
                    nn.Sequential(DWConv(c, c, 3), Conv(c, c3, 1)),
                    nn.Sequential(DWConv(c3, c3, 3), Conv(c3, c3, 1)),
                    nn.Conv2d(c3, self.nc, 1),
                )
                for c in ch
            )
        self.dfl = DFL(self.reg_max) if self.reg_max > 1 else nn.Identity()
        self._anchor_key: tuple[object, ...] | None = None
        self._anchors = torch.empty(0)
        self._strides = torch.empty(0)

    def forward(self, x: list[Tensor]) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Train: the raw maps; eval: ``(decoded [B, 4 + nc, N], raw maps)``."""
        maps = [torch.cat((self.cv2[i](x[i]), self.cv3[i](x[i])), 1) for i in range(self.nl)]
        if self.training:
            return maps
        return self.decode(maps), maps

    def decode(self, maps: Sequence[Tensor]) -> Tensor:
        """Raw maps -> ``[B, 4 + nc, N]``: ``(cx, cy, w, h)`` in pixels, class probabilities."""
        b = maps[0].shape[0]
        flat = torch.cat([m.view(b, self.no, -1) for m in maps], 2)
        box, cls = flat.split((4 * self.reg_max, self.nc), 1)
        key = (tuple(m.shape[-2:] for m in maps), tuple(self.stride.tolist()), flat.device, flat.dtype)
        if key != self._anchor_key:
            pts, st = make_anchors(maps, self.stride.tolist(), 0.5)
            self._anchors, self._strides = pts.transpose(0, 1), st.transpose(0, 1)
            self._anchor_key = key
        dist = self.dfl(box)
        boxes = dist2bbox(dist, self._anchors.unsqueeze(0), xywh=True, dim=1) * self._strides
        return torch.cat((boxes, cls.sigmoid()), 1)

    @torch.no_grad()
    def initialize_biases(self, strides: Sequence[float]) -> None:
        """Box output biases 2.0; class biases ``log(5 / nc / (640 / stride)^2)`` (spec 3.3)."""
        for a, b, s in zip(self.cv2, self.cv3, strides):
            box_out = cast(nn.Conv2d, cast(nn.Sequential, a)[-1])
            cls_out = cast(nn.Conv2d, cast(nn.Sequential, b)[-1])
            assert box_out.bias is not None and cls_out.bias is not None
            box_out.bias.fill_(2.0)
            cls_out.bias[: self.nc] = math.log(5 / self.nc / (640 / float(s)) ** 2)

    @torch.no_grad()
    def fuse(self) -> None:
        """Nothing to fold beyond the Conv blocks (the model folds those)."""
