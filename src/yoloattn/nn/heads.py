"""Detection heads: YOLOv5 ``Detect`` and YOLOv7 ``IDetect`` with ``ImplicitA``/``ImplicitM``.

Written from ``shared/spec/yolo-architectures.md`` sections 3.7 and 4.9-4.10. The implicit
layers follow "You Only Learn One Representation: Unified Network for Multiple Tasks"
(Wang, Yeh, Liao, arXiv 2105.04206, 2021), Sec. 3: an implicit vector added to (``ImplicitA``)
or multiplied with (``ImplicitM``) a feature map.

Per level ``i`` the head predicts ``p`` of shape ``(N, na, H, W, no)`` with ``no = nc + 5``.
Eval-mode decoding (``s = sigmoid(p)``, ``grid`` = cell indices (x, y), anchors in pixels):

* ``xy = (2 s_xy - 0.5 + grid) * stride``
* ``wh = (2 s_wh)^2 * anchor``
* objectness and class scores: ``s[..., 4:]``.

The decoded rows are ordered level, anchor, y, x. Training mode returns the raw list; eval
mode returns ``(decoded (N, sum na*H*W, no), raw list)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

__all__ = ["Detect", "IDetect", "ImplicitA", "ImplicitM"]


class ImplicitA(nn.Module):
    """Additive implicit knowledge: ``implicit + x`` with ``implicit ~ N(mean, std)``, ``(1, C, 1, 1)``."""

    def __init__(self, channel: int, mean: float = 0.0, std: float = 0.02) -> None:
        super().__init__()
        self.channel = channel
        self.implicit = nn.Parameter(torch.zeros(1, channel, 1, 1))
        nn.init.normal_(self.implicit, mean=mean, std=std)

    def forward(self, x: Tensor) -> Tensor:
        return self.implicit + x


class ImplicitM(nn.Module):
    """Multiplicative implicit knowledge: ``implicit * x`` with ``implicit ~ N(mean=1, std)``."""

    def __init__(self, channel: int, mean: float = 1.0, std: float = 0.02) -> None:
        super().__init__()
        self.channel = channel
        self.implicit = nn.Parameter(torch.ones(1, channel, 1, 1))
        nn.init.normal_(self.implicit, mean=mean, std=std)

    def forward(self, x: Tensor) -> Tensor:
        return self.implicit * x


def _cell_grid(nx: int, ny: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(1, 1, ny, nx, 2)`` tensor with ``[..., 0]`` = column x and ``[..., 1]`` = row y."""
    ys = torch.arange(ny, device=device, dtype=dtype)
    xs = torch.arange(nx, device=device, dtype=dtype)
    yv, xv = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2)


class Detect(nn.Module):
    """YOLOv5 detection head.

    Args:
        nc: number of classes.
        anchors: ``nl`` lists of ``2 * na`` anchor sizes (w, h pairs) in input pixels.
        ch: input channels of the ``nl`` levels.
        inplace: accepted for compatibility with the official argument list; unused.

    The ``anchors`` buffer ``(nl, na, 2)`` is registered in pixels; the model builder divides it
    by the level strides, so the stored (state-dict) value is in grid units. ``stride`` is a
    non-persistent buffer filled by the builder.
    """

    #: offset in the class-bias prior ``log(0.6 / (nc - offset))`` (YOLOv5 uses 0.99999).
    cls_prior_offset = 0.99999
    # buffers registered in __init__ (declared for the type checker)
    anchors: Tensor
    stride: Tensor

    def __init__(
        self,
        nc: int = 80,
        anchors: Sequence[Sequence[float]] = (),
        ch: Sequence[int] = (),
        inplace: bool = True,
    ) -> None:
        super().__init__()
        if len(anchors) == 0 or len(anchors) != len(ch):
            raise ValueError(
                f"{type(self).__name__}: need one anchor list per input level, "
                f"got {len(anchors)} anchor lists for {len(ch)} inputs"
            )
        if any(len(a) != len(anchors[0]) or len(a) % 2 for a in anchors):
            raise ValueError(
                f"{type(self).__name__}: every anchor list needs the same even length (w,h pairs)"
            )
        self.nc = int(nc)
        self.no = self.nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.inplace = inplace
        a = torch.tensor([[float(v) for v in lvl] for lvl in anchors]).view(self.nl, -1, 2)
        self.register_buffer("anchors", a)
        self.register_buffer("stride", torch.zeros(self.nl), persistent=False)
        self._register_extra_buffers(a)
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)
        self._grids: list[Tensor | None] = [None] * self.nl

    def _register_extra_buffers(self, anchors_px: Tensor) -> None:
        """Hook for subclasses that keep extra anchor buffers (IDetect's ``anchor_grid``)."""

    def _level(self, i: int, x: Tensor) -> Tensor:
        return self.m[i](x)

    def forward(self, x: list[Tensor]) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        x = list(x)
        z = []
        for i in range(self.nl):
            p = self._level(i, x[i])
            bs, _, ny, nx = p.shape
            p = p.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            x[i] = p
            if not self.training:
                z.append(self._decode(i, p).view(bs, -1, self.no))
        return x if self.training else (torch.cat(z, 1), x)

    def _grid(self, i: int, p: Tensor) -> Tensor:
        ny, nx = p.shape[2:4]
        g = self._grids[i]
        if g is None or g.shape[2:4] != (ny, nx) or g.device != p.device or g.dtype != p.dtype:
            g = _cell_grid(nx, ny, p.device, p.dtype)
            self._grids[i] = g
        return g

    def _anchor_px(self, i: int, p: Tensor) -> Tensor:
        return (self.anchors[i] * self.stride[i]).view(1, self.na, 1, 1, 2).to(p.dtype)

    def _decode(self, i: int, p: Tensor) -> Tensor:
        s = p.sigmoid()
        xy, wh, conf = s.split((2, 2, self.no - 4), 4)
        xy = (xy * 2 + (self._grid(i, p) - 0.5)) * self.stride[i]
        wh = (wh * 2) ** 2 * self._anchor_px(i, p)
        return torch.cat((xy, wh, conf), 4)

    @torch.no_grad()
    def initialize_biases(self, strides: Sequence[float], class_freq: Tensor | None = None) -> None:
        """Add the YOLO priors to the output biases (spec 2.4 step 5).

        Objectness: ``log(8 / (640 / stride)^2)`` (8 objects per 640x640 image); classes:
        ``log(0.6 / (nc - cls_prior_offset))``, or ``log(freq / sum(freq))`` when given.
        """
        for mi, s in zip(self.m, strides):
            b = cast(Tensor, mi.bias).view(self.na, -1)
            b[:, 4] += math.log(8 / (640 / s) ** 2)
            if class_freq is None:
                b[:, 5 : 5 + self.nc] += math.log(0.6 / (self.nc - self.cls_prior_offset))
            else:
                b[:, 5 : 5 + self.nc] += torch.log(class_freq / class_freq.sum()).to(b)

    @torch.no_grad()
    def fuse(self) -> None:
        """Nothing to fold in the YOLOv5 head."""


class IDetect(Detect):
    """YOLOv7 training head: ``ImplicitM(conv(ImplicitA(x)))`` per level.

    Besides ``anchors`` (grid units after the build) it keeps the persistent buffer
    ``anchor_grid`` ``(nl, 1, na, 1, 1, 2)`` with the anchors in pixels, as the official head
    does. :meth:`fuse` folds ``ia`` into the conv bias and ``im`` into weight and bias; the
    implicit parameters stay registered (and counted) but are no longer applied.
    """

    cls_prior_offset = 0.99
    anchor_grid: Tensor  # buffer registered in _register_extra_buffers

    def __init__(
        self,
        nc: int = 80,
        anchors: Sequence[Sequence[float]] = (),
        ch: Sequence[int] = (),
    ) -> None:
        super().__init__(nc, anchors, ch)
        self.ia = nn.ModuleList(ImplicitA(c) for c in ch)
        self.im = nn.ModuleList(ImplicitM(self.no * self.na) for _ in ch)
        self.fused = False

    def _register_extra_buffers(self, anchors_px: Tensor) -> None:
        self.register_buffer("anchor_grid", anchors_px.clone().view(self.nl, 1, -1, 1, 1, 2))

    def _level(self, i: int, x: Tensor) -> Tensor:
        if self.fused:
            return self.m[i](x)
        return self.im[i](self.m[i](self.ia[i](x)))

    def _decode(self, i: int, p: Tensor) -> Tensor:
        s = p.sigmoid()
        if not torch.is_grad_enabled():
            # inference: write xy and wh into the sigmoid output (no split copies, no cat); the
            # same expressions, so the values are bit-identical to the autograd-safe path below
            s[..., 0:2] = (s[..., 0:2] * 2.0 - 0.5 + self._grid(i, p)) * self.stride[i]
            s[..., 2:4] = (s[..., 2:4] * 2) ** 2 * self.anchor_grid[i].to(p.dtype)
            return s
        xy, wh, conf = s.split((2, 2, self.no - 4), 4)
        xy = (xy * 2.0 - 0.5 + self._grid(i, p)) * self.stride[i]
        wh = (wh * 2) ** 2 * self.anchor_grid[i].to(p.dtype)
        return torch.cat((xy, wh, conf), 4)

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold the implicit layers into the 1x1 output convs (spec section 4.10)."""
        if self.fused:
            return
        convs = cast("list[nn.Conv2d]", self.m)
        ias, ims = cast("list[ImplicitA]", self.ia), cast("list[ImplicitM]", self.im)
        for conv, ia, im in zip(convs, ias, ims):
            w = conv.weight  # (no*na, c, 1, 1)
            assert conv.bias is not None  # the head convs are biased
            conv.bias += (w.flatten(1) @ ia.implicit.view(-1, 1)).view(-1)
            scale = im.implicit.view(-1)
            conv.bias *= scale
            conv.weight *= scale.view(-1, 1, 1, 1)
        self.fused = True
