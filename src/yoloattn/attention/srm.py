"""Style-based recalibration: channel gates from style statistics (mean, standard deviation).

* ``srm`` -- "SRM: A Style-based Recalibration Module for Convolutional Neural Networks",
  Lee, Kim, Nam, ICCV 2019.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from yoloattn.attention._common import (
    GuardedBatchNorm2d,
    float32,
)
from yoloattn.attention.registry import register_attention

__all__ = ["SRM"]


@register_attention(
    "srm",
    paper="SRM: A Style-based Recalibration Module for Convolutional Neural Networks",
    venue="ICCV",
    year=2019,
    category="channel",
    reference="hyunjaelee410/style-based-recalibration-module models/recalibration_modules.py",
    formula="4C (C x 2 CFC + BN)",
    params=lambda c, **_: 4 * c,
    summary="Re-weights channels from their style statistics (mean and standard deviation "
    "over H, W) combined by a channel-wise 2-tap FC, BatchNorm and sigmoid.",
    equations="style pooling (mean, std) and style integration (CFC, BN, sigmoid)",
)
class SRM(nn.Module):
    """Style-based Recalibration Module.

    Paper: "SRM: A Style-based Recalibration Module for Convolutional Neural Networks",
    HyunJae Lee, Hyo-Eun Kim, Hyeonseob Nam, ICCV 2019, arXiv 1903.10829. Style pooling
    ``t_c = [mean_hw(x_c), sqrt(var_hw(x_c) + 1e-5)]`` (unbiased variance, as the official
    code); channel-wise fully connected ``z_c = w_c1 mean + w_c2 std`` (C x 2 weights, init 0);
    ``out = x * sigmoid(BN(z))``. Statistics in float32. Needs H*W >= 2 (a single pixel has
    no variance). The BN over ``B x C x 1 x 1`` uses running statistics for batch 1 in
    training mode (spec rule 5.3).
    """

    min_hw = 2

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.cfc = nn.Parameter(torch.zeros(channels, 2))
        self.bn = GuardedBatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        if h * w < 2:
            raise ValueError(
                f"srm: input {h}x{w} has a single pixel, its style std is undefined; "
                "apply srm to feature maps with H*W >= 2"
            )
        v = float32(x).flatten(2)  # B x C x HW
        mean = v.mean(2)
        std = (v.var(2, unbiased=True) + 1e-5).sqrt()
        t = torch.stack([mean, std], dim=2).to(x.dtype)  # B x C x 2
        z = (t * self.cfc).sum(2)[:, :, None, None]
        return x * torch.sigmoid(self.bn(z)).to(x.dtype)
