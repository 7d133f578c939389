"""Global Attention Mechanism: a pooling-free channel MLP gate, then a 7x7 conv spatial gate.

* ``gam`` -- "Global Attention Mechanism: Retain Information to Enhance Channel-Spatial
  Interactions", Liu, Shao, Hoffmann, arXiv 2021 (2112.05561).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yoloattn.attention._common import (
    GuardedBatchNorm2d,
    channel_shuffle,
    reduced_width,
    require_at_least,
    require_divisible,
)
from yoloattn.attention.registry import register_attention

__all__ = ["GAM"]


def _gam_params(c: int, reduction: int, groups: int) -> int:
    m = c // reduction
    return 2 * c * m + 98 * c * m // groups + 4 * m + 4 * c


@register_attention(
    "gam",
    formula="100C^2/r + 4C/r + 4C (groups g: 2C^2/r + 98C^2/(rg) + 4C/r + 4C)",
    paper="Global Attention Mechanism: Retain Information to Enhance Channel-Spatial Interactions",
    venue="arXiv",
    year=2021,
    category="channel+spatial",
    reference="none",
    params=lambda c, **h: _gam_params(c, h["reduction"], h["groups"]),
    summary="Per-position channel MLP gate, then a 7x7 conv bottleneck spatial gate; no "
    "pooling, so channel and spatial information are kept together.",
    equations="Eq. 1 (F2 = Mc(F1) * F1, F3 = Ms(F2) * F2); channel sub-module: permute, MLP "
    "C -> C/r -> C, permute back, sigmoid; spatial sub-module: 7x7 conv C -> C/r, BN, ReLU, "
    "7x7 conv C/r -> C, BN, sigmoid (Fig. 2-3).",
    source_note="arXiv 2112.05561, no official code. Sigmoid on the channel branch kept (many "
    "copies drop it). groups>1 uses group convs + channel shuffle in the spatial branch.",
)
class GAM(nn.Module):
    """Global Attention Mechanism.

    Paper: "Global Attention Mechanism: Retain Information to Enhance Channel-Spatial
    Interactions", Yichao Liu, Zongru Shao, Nico Hoffmann, arXiv 2112.05561 (2021).

    Channel sub-module: the per-position C-vector goes through an MLP ``C -> C/r -> C`` (ReLU,
    biased), ``x1 = x * sigmoid(MLP(x))`` (no pooling). Spatial sub-module:
    ``Ms = sigmoid(BN(conv7x7(ReLU(BN(conv7x7(x1))))))`` with ``C -> C/r -> C`` (biased);
    output ``x1 * Ms`` (Eq. 1, sequential). With ``groups > 1`` both 7x7 convs are group
    convolutions and the channels are shuffled between them (the paper's ResNet-50 setting).

    Args:
        channels: input channels C.
        reduction: reduction ratio r (paper 4).
        groups: groups of the 7x7 convs (1 = dense, the default).
    """

    def __init__(self, channels: int, reduction: int = 4, groups: int = 1) -> None:
        super().__init__()
        m = reduced_width("gam", channels, reduction)
        require_at_least("gam", "groups", groups, 1, "pass groups>=1")
        require_divisible("gam", channels, groups, "groups", "pass a groups value dividing channels")
        if m % groups:
            raise ValueError(
                f"gam: channels//reduction={m} must be divisible by groups={groups}; "
                "pass a smaller groups or reduction"
            )
        self.groups = groups
        self.channel_mlp = nn.Sequential(
            nn.Linear(channels, m), nn.ReLU(inplace=True), nn.Linear(m, channels)
        )
        self.spatial_conv1 = nn.Conv2d(channels, m, 7, padding=3, groups=groups)
        self.spatial_bn1 = GuardedBatchNorm2d(m)
        self.spatial_conv2 = nn.Conv2d(m, channels, 7, padding=3, groups=groups)
        self.spatial_bn2 = GuardedBatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        mc = self.channel_mlp(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = x * torch.sigmoid(mc)
        t = F.relu(self.spatial_bn1(self.spatial_conv1(x)))
        if self.groups > 1:
            t = channel_shuffle(t, self.groups)
        ms = torch.sigmoid(self.spatial_bn2(self.spatial_conv2(t)))
        return x * ms
