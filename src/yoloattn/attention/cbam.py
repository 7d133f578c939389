"""Convolutional Block Attention Module: a channel gate, then a spatial gate.

* ``cbam`` -- "CBAM: Convolutional Block Attention Module", Woo, Park, Lee, Kweon, ECCV 2018.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from yoloattn.attention._common import (
    GuardedBatchNorm2d,
    reduced_width,
    require_odd,
)
from yoloattn.attention.registry import register_attention

__all__ = ["CBAM"]


def _cbam_params(c: int, reduction: int, kernel_size: int, bias: bool) -> int:
    m = c // reduction
    mlp = 2 * c * m + ((m + c) if bias else 0)
    return mlp + 2 * kernel_size**2 + 2


@register_attention(
    "cbam",
    formula="2C^2/r + C/r + C + 2k^2 + 2 (bias=False: 2C^2/r + 2k^2 + 2)",
    paper="CBAM: Convolutional Block Attention Module",
    venue="ECCV",
    year=2018,
    category="channel+spatial",
    reference="Jongchan/attention-module MODELS/cbam.py",
    params=lambda c, **h: _cbam_params(c, h["reduction"], h["kernel_size"], h["bias"]),
    summary="Which channels (shared MLP on avg- and max-pooled descriptors), then where "
    "(k x k conv on channel-wise max and mean maps), applied one after the other.",
    equations="Eq. 1 (F' = Mc(F) * F, F'' = Ms(F') * F'), Eq. 2 (Mc = sigmoid(MLP(AvgPool) + "
    "MLP(MaxPool))), Eq. 3 (Ms = sigmoid(f7x7([AvgPool_c(F'); MaxPool_c(F')]))) with the "
    "official code's BN after the spatial conv and its [max; mean] channel order.",
    source_note="Spatial conv is followed by BatchNorm (momentum 0.01) as in the official code; "
    "bias=False gives the bias-free MLP used by timm and many copies.",
)
class CBAM(nn.Module):
    """Convolutional Block Attention Module.

    Paper: "CBAM: Convolutional Block Attention Module", Sanghyun Woo, Jongchan Park,
    Joon-Young Lee, In So Kweon, ECCV 2018 (arXiv 1807.06521).

    Eq. 2: ``Mc = sigmoid(MLP(GAP(x)) + MLP(GMP(x)))`` with a shared MLP ``C -> C/r -> C``
    (ReLU, biased as in the official ``nn.Linear``); ``x' = x * Mc``.
    Eq. 3: ``Ms = sigmoid(BN(conv_kxk([cmax(x'), cmean(x')])))`` (2 -> 1 conv without bias, BN as
    in the official code, max map first as in the official code); output ``x' * Ms``.
    No residual inside the module (spec rule 5.8).

    Args:
        channels: input channels C.
        reduction: MLP reduction ratio r (hidden width ``C // r``).
        kernel_size: spatial conv size k (odd).
        bias: biases in the channel MLP (official: True).
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7, bias: bool = True) -> None:
        super().__init__()
        hidden = reduced_width("cbam", channels, reduction)
        require_odd("cbam", "kernel_size", kernel_size)
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden, bias=bias),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=bias),
        )
        self.spatial_conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.spatial_bn = GuardedBatchNorm2d(1, momentum=0.01)

    def channel_gate(self, x: Tensor) -> Tensor:
        """``Mc`` of shape (B, C, 1, 1)."""
        logits = self.mlp(x.mean((2, 3))) + self.mlp(x.amax((2, 3)))
        return torch.sigmoid(logits)[:, :, None, None]

    def spatial_gate(self, x: Tensor) -> Tensor:
        """``Ms`` of shape (B, 1, H, W)."""
        pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], dim=1)
        return torch.sigmoid(self.spatial_bn(self.spatial_conv(pooled)))

    def forward(self, x: Tensor) -> Tensor:
        x = x * self.channel_gate(x)
        return x * self.spatial_gate(x)
