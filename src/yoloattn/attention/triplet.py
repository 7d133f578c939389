"""Triplet attention: Z-pool gates on three rotated views of the feature map.

* ``triplet`` -- "Rotate to Attend: Convolutional Triplet Attention Module", Misra, Nalamada,
  Arasanipalai, Hou, WACV 2021.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from yoloattn.attention._common import (
    GuardedBatchNorm2d,
    require_odd,
)
from yoloattn.attention.registry import register_attention

__all__ = ["TripletAttention"]


class _ZPoolGate(nn.Module):
    """``t * sigmoid(BN(conv_kxk([max_1(t), mean_1(t)])))`` (conv 2 -> 1 without bias)."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = GuardedBatchNorm2d(1, momentum=0.01)

    def forward(self, t: Tensor) -> Tensor:
        pooled = torch.cat([t.amax(1, keepdim=True), t.mean(1, keepdim=True)], dim=1)
        return t * torch.sigmoid(self.bn(self.conv(pooled)))


@register_attention(
    "triplet",
    formula="3(2k^2 + 2) (no_spatial: 2(2k^2 + 2))",
    paper="Rotate to Attend: Convolutional Triplet Attention Module",
    venue="WACV",
    year=2021,
    category="channel+spatial",
    reference="landskape-ai/triplet-attention MODELS/triplet_attention.py",
    params=lambda c, **h: (2 if h["no_spatial"] else 3) * (2 * h["kernel_size"] ** 2 + 2),
    summary="Cross-dimension interactions: Z-pool gates on three rotated views (C-W, H-C, H-W), averaged.",
    equations="Sec. 3 / Fig. 3: Z-pool ([max; mean] over the leading axis of each rotated view), "
    "k x k conv, BN, sigmoid per branch; output = average of the three branches.",
)
class TripletAttention(nn.Module):
    """Triplet Attention.

    Paper: "Rotate to Attend: Convolutional Triplet Attention Module", Diganta Misra,
    Trikay Nalamada, Ajay Uppili Arasanipalai, Qibin Hou, WACV 2021 (arXiv 2010.03045).

    Each branch applies ``gate(t) = t * sigmoid(BN(conv_kxk(Z-pool(t))))`` to a rotated view:
    branch 1 swaps C and H (pools over H: C-W interaction), branch 2 swaps C and W (pools over
    W: H-C interaction), branch 3 is the plain spatial gate (H-W). Views are rotated back and
    averaged: ``(b1 + b2 + b3) / 3`` (``no_spatial`` drops branch 3, average of 2).

    Args:
        channels: input channels (any; the module's size does not depend on C).
        kernel_size: conv size k of every gate (odd).
        no_spatial: drop the H-W branch.
    """

    def __init__(self, channels: int, kernel_size: int = 7, no_spatial: bool = False) -> None:
        super().__init__()
        require_odd("triplet", "kernel_size", kernel_size)
        self.gate_cw = _ZPoolGate(kernel_size)
        self.gate_hc = _ZPoolGate(kernel_size)
        self.gate_hw = None if no_spatial else _ZPoolGate(kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.gate_cw(x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
        b2 = self.gate_hc(x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1)
        if self.gate_hw is None:
            return (b1 + b2) / 2
        return (b1 + b2 + self.gate_hw(x)) / 3
