"""Group-wise attention: the channels are split into G groups and each group is gated on its own.

* ``sa``  -- "SA-Net: Shuffle Attention for Deep Convolutional Neural Networks", Zhang and
  Yang, ICASSP 2021: per group, a channel half and a spatial half, then a channel shuffle.
* ``sge`` -- "Spatial Group-wise Enhance: Improving Semantic Feature Learning in Convolutional
  Networks", Li, Hu, Yang, arXiv 2019 (1905.09646): a spatial gate per group.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from yoloattn.attention._common import (
    channel_shuffle,
    float32,
    largest_divisor,
    require_at_least,
    require_divisible,
    require_spatial_min,
)
from yoloattn.attention.registry import register_attention

__all__ = ["ShuffleAttention", "SpatialGroupEnhance"]


@register_attention(
    "sa",
    onnx_opset=11,
    formula="3C/G",
    paper="SA-Net: Shuffle Attention for Deep Convolutional Neural Networks",
    venue="ICASSP",
    year=2021,
    category="channel+spatial",
    reference="wofmanaf/SA-Net models/sa_resnet.py",
    params=lambda c, **h: 3 * c // h["groups"],
    summary="Per channel group, half the channels get a channel gate (GAP) and half a spatial "
    "gate (GroupNorm), then channels are shuffled.",
    equations="Eq. 1-2 (channel half: x * sigmoid(W1 s + b1)), Eq. 3 (spatial half: "
    "x * sigmoid(W2 GN(x) + b2)), aggregation and channel shuffle (Sec. 3).",
)
class ShuffleAttention(nn.Module):
    """Shuffle Attention.

    Paper: "SA-Net: Shuffle Attention for Deep Convolutional Neural Networks", Qing-Long Zhang,
    Yu-Bin Yang, ICASSP 2021 (arXiv 2102.00240).

    Reshape to ``(B*G) x (C/G) x H x W``; split each group into halves of ``C/(2G)``:
    channel half ``x0 * sigmoid(w_c * GAP(x0) + b_c)`` (Eq. 1-2), spatial half
    ``x1 * sigmoid(w_s * GN(x1) + b_s)`` with one GroupNorm group per channel (Eq. 3);
    concatenate, reshape to ``B x C x H x W`` and shuffle channels with 2 groups.
    Init ``w = 0, b = 1``. GroupNorm statistics in float32.

    Args:
        channels: input channels C (divisible by ``2 * groups``).
        groups: number of groups G (paper 64; use e.g. 8 for narrow YOLO layers).
    """

    small_hyper = {"groups": 8}

    def __init__(self, channels: int, groups: int = 64) -> None:
        super().__init__()
        require_at_least("sa", "groups", groups, 1, "pass groups>=1")
        require_divisible(
            "sa",
            channels,
            2 * groups,
            "2*groups",
            f"pass groups={largest_divisor(channels // 2, groups)} (groups must divide channels/2)",
        )
        self.groups = groups
        half = channels // (2 * groups)
        self.cweight = nn.Parameter(torch.zeros(1, half, 1, 1))
        self.cbias = nn.Parameter(torch.ones(1, half, 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, half, 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, half, 1, 1))
        self.gn = nn.GroupNorm(half, half)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        g = x.reshape(b * self.groups, c // self.groups, h, w)
        x0, x1 = g.chunk(2, dim=1)
        xc = x0 * torch.sigmoid(self.cweight * x0.mean((2, 3), keepdim=True) + self.cbias)
        xs = self.gn(float32(x1)).to(x1.dtype)
        xs = x1 * torch.sigmoid(self.sweight * xs + self.sbias)
        out = torch.cat([xc, xs], dim=1).reshape(b, c, h, w)
        return channel_shuffle(out, 2)


@register_attention(
    "sge",
    formula="2G",
    paper="Spatial Group-wise Enhance: Improving Semantic Feature Learning in Convolutional Networks",
    venue="arXiv",
    year=2019,
    category="spatial",
    reference="implus/PytorchInsight classification/models/imagenet/resnet_sge.py",
    params=lambda c, **h: 2 * h["groups"],
    summary="Within each channel group, positions similar to the group's global descriptor "
    "are enhanced (normalised similarity map, sigmoid gate).",
    equations="Sec. 3: g = GAP(x_group), c_i = g . x_i, normalised over positions "
    "(mean, unbiased std + 1e-5), a_i = gamma * c^_i + beta, x^_i = x_i * sigmoid(a_i).",
    source_note="arXiv 1905.09646. Similarity statistics computed in float32.",
)
class SpatialGroupEnhance(nn.Module):
    """Spatial Group-wise Enhance.

    Paper: "Spatial Group-wise Enhance: Improving Semantic Feature Learning in Convolutional
    Networks", Xiang Li, Xiaolin Hu, Jian Yang, arXiv 1905.09646 (2019).

    Reshape to ``(B*G) x (C/G) x H x W``; ``t = sum_c(x * GAP(x))`` (1 x H x W per group);
    normalise ``t`` over H*W (subtract the mean, divide by the unbiased std + 1e-5, as in the
    official code); ``t = w_g * t + b_g``; output ``x * sigmoid(t)``. Init ``w = 0, b = 1``.
    Statistics in float32; needs ``H*W >= 2`` (unbiased std).

    Args:
        channels: input channels C (divisible by ``groups``).
        groups: number of groups G (paper 64).
    """

    min_hw = 2
    small_hyper = {"groups": 8}

    def __init__(self, channels: int, groups: int = 64) -> None:
        super().__init__()
        require_at_least("sge", "groups", groups, 1, "pass groups>=1")
        require_divisible(
            "sge",
            channels,
            groups,
            "groups",
            f"pass groups={largest_divisor(channels, groups)} (groups must divide channels)",
        )
        self.groups = groups
        self.weight = nn.Parameter(torch.zeros(1, groups, 1, 1))
        self.bias = nn.Parameter(torch.ones(1, groups, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        require_spatial_min("sge", x)
        b, c, h, w = x.shape
        g = x.reshape(b * self.groups, c // self.groups, h, w)
        gf = float32(g)
        t = (gf * gf.mean((2, 3), keepdim=True)).sum(1)  # B*G, H, W
        t = t.reshape(b, self.groups, -1)
        t = t - t.mean(2, keepdim=True)
        t = t / (t.std(2, keepdim=True) + 1e-5)
        t = t.reshape(b, self.groups, h, w) * self.weight + self.bias
        gate = torch.sigmoid(t).reshape(b * self.groups, 1, h, w).to(x.dtype)
        return (g * gate).reshape(b, c, h, w)
