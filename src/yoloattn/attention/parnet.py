"""ParNet's RepVGG-SSE block: RepVGG branches plus a Skip-Squeeze-Excitation identity branch.

* ``parnet`` -- "Non-deep Networks", Goyal, Bochkovskiy, Deng, Koltun, NeurIPS 2022.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from yoloattn.attention._common import (
    GuardedBatchNorm2d,
    gap,
)
from yoloattn.attention.registry import register_attention

__all__ = ["ParNetSSE"]


@register_attention(
    "parnet",
    paper="Non-deep Networks",
    venue="NeurIPS",
    year=2022,
    category="channel",
    reference="imankgoyal/NonDeepNetworks imagenet/timm/models/simplenet_impl/repvgg.py",
    formula="11C^2 + 6C",
    params=lambda c, **_: 11 * c * c + 6 * c,
    summary="RepVGG block (3x3 + 1x1 conv branches) whose identity branch is re-weighted by a "
    "Skip-Squeeze-Excitation gate (single C -> C FC on the pooled BN(x)), then SiLU.",
    equations="RepVGG-SSE block figure (Skip-Squeeze-Excitation)",
    source_note="A block (not a pure gate): out = SiLU(BN(conv3x3 x) + BN(conv1x1 x) + SSE(BN x)). "
    "External-Attention's ParNetAttention applies the SSE to x instead of BN(x).",
)
class ParNetSSE(nn.Module):
    """ParNet RepVGG-SSE block (stride 1, C -> C).

    Paper: "Non-deep Networks", Ankit Goyal, Alexey Bochkovskiy, Jia Deng, Vladlen Koltun,
    NeurIPS 2022, arXiv 2110.07641. ``y = BN0(x)``;
    ``out = SiLU(BN3(conv3x3(x)) + BN1(conv1x1(x)) + y * sigmoid(conv1x1_se(GAP(y))))``,
    all convs without bias (Skip-Squeeze-Excitation: a single FC, no bottleneck).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn_id = GuardedBatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn3 = GuardedBatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn1 = GuardedBatchNorm2d(channels)
        self.se = nn.Conv2d(channels, channels, 1, bias=False)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn_id(x)
        sse = y * torch.sigmoid(self.se(gap(y))).to(y.dtype)
        return self.act(self.bn3(self.conv3(x)) + self.bn1(self.conv1(x)) + sse)
