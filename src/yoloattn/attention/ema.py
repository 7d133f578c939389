"""Efficient multi-scale attention: per channel group, cross-spatial learning of two branches.

* ``ema`` -- "Efficient Multi-Scale Attention Module with Cross-Spatial Learning", Ouyang et
  al., ICASSP 2023.

Keyword ``groups`` (the number of channel groups G, as in ``sa``/``sge``); the official code's
``factor`` is a deprecated alias.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from yoloattn.attention._common import (
    float32,
    largest_divisor,
    require_at_least,
    require_divisible,
)
from yoloattn.attention.registry import register_attention

__all__ = ["EMA"]


@register_attention(
    "ema",
    onnx_opset=10,
    formula="10(C/G)^2 + 4(C/G)",
    paper="Efficient Multi-Scale Attention Module with Cross-Spatial Learning",
    venue="ICASSP",
    year=2023,
    category="channel+spatial",
    reference="YOLOonMe/EMA-attention-module EMA_attention_module",
    params=lambda c, **h: 10 * (c // h["groups"]) ** 2 + 4 * (c // h["groups"]),
    aliases={"factor": "groups"},
    summary="Per channel group, a strip-pooled 1x1 branch and a 3x3 branch each attend over the "
    "positions of the other (cross-spatial softmax), giving one spatial gate per group.",
    equations="Sec. 3 / Fig. 3: grouping, 1x1 branch (X/Y strip average pooling, shared 1x1 "
    "conv, sigmoid, GroupNorm), 3x3 branch, cross-spatial learning (softmax(GAP) . flatten, "
    "summed), sigmoid re-weighting.",
    source_note="Strip pooling as means (the official AdaptiveAvgPool2d((None, 1)) fails dynamic "
    "ONNX export). GroupNorm and softmax inputs in float32. No license file upstream.",
)
class EMA(nn.Module):
    """Efficient Multi-scale Attention.

    Paper: "Efficient Multi-Scale Attention Module with Cross-Spatial Learning", Daliang Ouyang,
    Su He, Guozhong Zhang, Mingzhu Luo, Huaiyong Guo, Jian Zhan, Zhijiang Huang, ICASSP 2023
    (arXiv 2305.13563).

    Reshape to ``(B*G) x (C/G) x H x W = g``. 1x1 branch: strip means along W and along H,
    concatenated, shared biased 1x1 conv ``C/G -> C/G``, split,
    ``x1 = GN(g * sigmoid(h) * sigmoid(w))`` (one GN group per channel). 3x3 branch:
    ``x2 = conv3x3(g)`` (biased). Cross-spatial learning: ``a1 = softmax(GAP(x1))``,
    ``a2 = softmax(GAP(x2))`` over the C/G channels; ``W = a1^T flat(x2) + a2^T flat(x1)``
    (1 x H x W); output ``g * sigmoid(W)`` reshaped to ``B x C x H x W``.

    Args:
        channels: input channels C (divisible by ``groups``).
        groups: number of groups G (official 32; the official code calls it ``factor``, a
            deprecated alias here).
    """

    small_hyper = {"groups": 8}

    def __init__(self, channels: int, groups: int = 32) -> None:
        super().__init__()
        require_at_least("ema", "groups", groups, 1, "pass groups>=1")
        require_divisible(
            "ema",
            channels,
            groups,
            "groups",
            f"pass groups={largest_divisor(channels, groups)} (groups must divide channels)",
        )
        self.groups = groups
        cg = channels // groups
        self.conv1x1 = nn.Conv2d(cg, cg, 1)
        self.conv3x3 = nn.Conv2d(cg, cg, 3, padding=1)
        self.gn = nn.GroupNorm(cg, cg)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        cg = c // self.groups
        g = x.reshape(b * self.groups, cg, h, w)
        zh = g.mean(3, keepdim=True)  # BG, cg, H, 1
        zw = g.mean(2, keepdim=True).transpose(2, 3)  # BG, cg, W, 1
        hw = self.conv1x1(torch.cat([zh, zw], dim=2))
        ah, aw = hw[:, :, :h], hw[:, :, h:].transpose(2, 3)
        x1 = g * torch.sigmoid(ah) * torch.sigmoid(aw)
        x1 = self.gn(float32(x1))  # float32 under autocast
        x2 = float32(self.conv3x3(g))
        a1 = torch.softmax(x1.mean((2, 3)), dim=1).unsqueeze(1)  # BG, 1, cg
        a2 = torch.softmax(x2.mean((2, 3)), dim=1).unsqueeze(1)
        weights = a1 @ x2.flatten(2) + a2 @ x1.flatten(2)  # BG, 1, HW
        gate = torch.sigmoid(weights).reshape(b * self.groups, 1, h, w).to(x.dtype)
        return (g * gate).reshape(b, c, h, w)
