"""Channel prior convolutional attention: a channel prior, then multi-scale strip convolutions.

* ``cpca`` -- "Channel prior convolutional attention for medical image segmentation", Huang,
  Chen, Zou, Lu, Chen, Computers in Biology and Medicine 2024.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yoloattn.attention._common import (
    reduced_width,
)
from yoloattn.attention.registry import register_attention

__all__ = ["CPCA"]


def _cpca_params(c: int, reduction: int, share_proj: bool) -> int:
    m = c // reduction
    proj = (c * c + c) * (1 if share_proj else 3)
    # depthwise 5x5 + (1x7, 7x1) + (1x11, 11x1) + (1x21, 21x1): 103C weights + 7C biases
    return proj + 2 * c * m + m + c + 110 * c


@register_attention(
    "cpca",
    formula="3C^2/2 + 449C/4 at r=4 (C^2 + 2C^2/r + C/r + 112C; share_proj=False: + 2C^2 + 2C)",
    paper="Channel prior convolutional attention for medical image segmentation",
    venue="Computers in Biology and Medicine",
    year=2024,
    category="channel+spatial",
    reference="Cuthbert-Huang/CPCANet CPCANet/nnunet/network_architecture/CPCANet.py",
    params=lambda c, **h: _cpca_params(c, h["reduction"], h["share_proj"]),
    summary="A channel prior (sum of avg- and max-pooled sigmoid gates), then multi-scale "
    "depthwise strip convolutions giving a per-channel spatial attention map.",
    equations="Sec. 3 (CPCA): channel prior CA(F) = sigmoid(MLP(AvgPool F)) + sigmoid(MLP("
    "MaxPool F)), F_c = CA(F) * F; spatial attention SA = conv1x1(sum_i Branch_i(DwConv5x5(F_c)))"
    "; output conv1x1(SA * F_c); official RepBlock (GELU(conv1x1) in front, shared 1x1).",
    source_note="Follows the official RepBlock (arXiv 2306.05196), where one 1x1 conv is applied "
    "three times (weight sharing); share_proj=False uses three separate convs.",
)
class CPCA(nn.Module):
    """Channel Prior Convolutional Attention (official RepBlock, C -> C).

    Paper: "Channel prior convolutional attention for medical image segmentation", Hejian
    Huang, Zhenjun Chen, Ying Zou, Ming Lu, Chen Chen, Computers in Biology and Medicine 2024
    (arXiv 2306.05196).

    ``x = GELU(P(x))`` (P: biased 1x1 conv ``C -> C``); channel prior
    ``ca = sigmoid(MLP(GAP(x))) + sigmoid(MLP(GMP(x)))`` (shared biased MLP ``C -> C/4 -> C``,
    ReLU; a sum of two sigmoids, range 0-2); ``x = x * ca``; multi-scale depthwise spatial
    attention ``a = DW5x5(x)``, ``s = a + sum_{k in 7, 11, 21} DWkx1(DW1xk(a))``;
    output ``P(P(s) * x)``. The same P is used three times (official code); ``share_proj=False``
    gives three separate 1x1 convs.

    Args:
        channels: input channels C.
        reduction: channel-prior MLP reduction (official 4).
        share_proj: share the 1x1 conv P between its three uses (official True).
    """

    def __init__(self, channels: int, reduction: int = 4, share_proj: bool = True) -> None:
        super().__init__()
        m = reduced_width("cpca", channels, reduction)
        c = channels
        self.proj_in = nn.Conv2d(c, c, 1)
        self.proj_att = self.proj_in if share_proj else nn.Conv2d(c, c, 1)
        self.proj_out = self.proj_in if share_proj else nn.Conv2d(c, c, 1)
        self.act = nn.GELU()
        self.fc1 = nn.Conv2d(c, m, 1)
        self.fc2 = nn.Conv2d(m, c, 1)
        self.dw5 = nn.Conv2d(c, c, 5, padding=2, groups=c)
        self.strips = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c, c, (1, k), padding=(0, k // 2), groups=c),
                nn.Conv2d(c, c, (k, 1), padding=(k // 2, 0), groups=c),
            )
            for k in (7, 11, 21)
        )

    def _mlp(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.fc2(F.relu(self.fc1(z))))

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.proj_in(x))
        prior = self._mlp(x.mean((2, 3), keepdim=True)) + self._mlp(x.amax((2, 3), keepdim=True))
        x = x * prior
        a = self.dw5(x)
        s = a
        for strip in self.strips:
            s = s + strip(a)
        return self.proj_out(self.proj_att(s) * x)
