"""Coordinate attention: channel gates that encode position through strip pooling.

* ``ca`` -- "Coordinate Attention for Efficient Mobile Network Design", Hou, Zhou, Feng,
  CVPR 2021.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from yoloattn.attention._common import (
    GuardedBatchNorm2d,
    require_at_least,
)
from yoloattn.attention.registry import register_attention

__all__ = ["CoordAttention"]


@register_attention(
    "ca",
    onnx_opset=10,
    formula="3C*mip + 3mip + 2C, mip = max(8, C/32)",
    paper="Coordinate Attention for Efficient Mobile Network Design",
    venue="CVPR",
    year=2021,
    category="channel+spatial",
    reference="houqb/CoordAttention coordatt.py",
    params=lambda c, **h: (
        3 * c * max(h["min_mip"], c // h["reduction"]) + 3 * max(h["min_mip"], c // h["reduction"]) + 2 * c
    ),
    summary="Channel weights that also encode position: strip means along W and along H give "
    "one gate per row and one per column.",
    equations="Eq. 4-5 (strip pooling z^h, z^w), Eq. 6 (f = h-swish(BN(F1([z^h, z^w])))), "
    "Eq. 7-8 (g^h, g^w), Eq. 9 (y = x * g^h * g^w).",
    source_note="Strip pooling as x.mean(3) / x.mean(2) (the official AdaptiveAvgPool2d((None, 1)) "
    "fails dynamic ONNX export, houqb/CoordAttention#6).",
)
class CoordAttention(nn.Module):
    """Coordinate Attention.

    Paper: "Coordinate Attention for Efficient Mobile Network Design", Qibin Hou, Daquan Zhou,
    Jiashi Feng, CVPR 2021 (arXiv 2103.02907).

    ``zh = mean_W(x)`` (C x H x 1), ``zw = mean_H(x)`` (C x W x 1 after transposing) (Eq. 4-5);
    ``f = h-swish(BN(conv1x1([zh; zw])))`` with ``C -> mip``, ``mip = max(min_mip, C // r)``
    (Eq. 6); split into fh, fw; ``ah = sigmoid(conv_h(fh))``, ``aw = sigmoid(conv_w(fw))``
    (Eq. 7-8, ``mip -> C``); output ``x * ah * aw`` (Eq. 9). All convs biased.

    Args:
        channels: input channels C.
        reduction: reduction ratio r (official 32).
        min_mip: lower bound of the hidden width (official 8).
    """

    def __init__(self, channels: int, reduction: int = 32, min_mip: int = 8) -> None:
        super().__init__()
        require_at_least("ca", "reduction", reduction, 1, "pass reduction>=1")
        require_at_least("ca", "min_mip", min_mip, 1, "pass min_mip>=1")
        mip = max(min_mip, channels // reduction)
        self.conv1 = nn.Conv2d(channels, mip, 1)
        self.bn1 = GuardedBatchNorm2d(mip)
        self.act = nn.Hardswish()
        self.conv_h = nn.Conv2d(mip, channels, 1)
        self.conv_w = nn.Conv2d(mip, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = x.shape[2]
        zh = x.mean(3, keepdim=True)  # B, C, H, 1
        zw = x.mean(2, keepdim=True).transpose(2, 3)  # B, C, W, 1
        f = self.act(self.bn1(self.conv1(torch.cat([zh, zw], dim=2))))
        fh, fw = f[:, :, :h], f[:, :, h:]
        ah = torch.sigmoid(self.conv_h(fh))  # B, C, H, 1
        aw = torch.sigmoid(self.conv_w(fw.transpose(2, 3)))  # B, C, 1, W
        return x * ah * aw
