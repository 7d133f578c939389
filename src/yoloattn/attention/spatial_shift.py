"""Spatial-shift MLP: channel quarters shifted in four directions, mixed by split attention.

* ``s2mlp`` -- "S2-MLPv2: Improved Spatial-Shift MLP Architecture for Vision", Yu et al.,
  arXiv 2021 (2108.01072).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yoloattn.attention._common import (
    float32,
    require_divisible,
    softmax32,
)
from yoloattn.attention.registry import register_attention

__all__ = ["S2MLPv2", "spatial_shift"]


_SHIFT_ORDERS = {
    1: ("+w", "-w", "+h", "-h"),
    2: ("+h", "-h", "+w", "-w"),
}


def _shift1(t: Tensor, direction: str) -> Tensor:
    """Move content one pixel in ``direction``; the vacated border keeps its own value."""
    if direction == "+w":
        return torch.cat([t[..., :1], t[..., :-1]], -1)
    if direction == "-w":
        return torch.cat([t[..., 1:], t[..., -1:]], -1)
    if direction == "+h":
        return torch.cat([t[..., :1, :], t[..., :-1, :]], -2)
    return torch.cat([t[..., 1:, :], t[..., -1:, :]], -2)  # "-h"


def spatial_shift(x: Tensor, order: int) -> Tensor:
    """S2-MLP spatial shift of the four channel quarters of ``x`` (B x C x H x W).

    ``order=1`` shifts the quarters by one pixel along +W, -W, +H, -H; ``order=2`` along
    +H, -H, +W, -W. As in the paper's pseudo code (S2-MLP Algorithm 1) the first row/column
    in the direction of the shift keeps its original value.
    """
    if order not in _SHIFT_ORDERS:
        raise ValueError(f"spatial_shift: order={order!r} must be 1 or 2")
    q = x.shape[1] // 4
    parts = [x[:, i * q : (i + 1) * q] for i in range(4)]
    return torch.cat([_shift1(p, d) for p, d in zip(parts, _SHIFT_ORDERS[order])], 1)


@register_attention(
    "s2mlp",
    onnx_opset=10,
    paper="S2-MLPv2: Improved Spatial-Shift MLP Architecture for Vision",
    venue="arXiv",
    year=2021,
    category="mlp",
    reference="none",
    params=lambda c, **_: 8 * c * c + 4 * c,
    formula="8C^2 + 4C",
    summary="Expands channels 3x, shifts two copies spatially in the four directions (in two "
    "orders), and mixes the three branches with split attention over their global mean.",
    equations="Sec. 3 / Fig. 1 (S2-MLPv2 spatial-shift block): X -> MLP_1 (C->3C), two "
    "spatial-shift branches and one identity branch, split attention (ResNeSt-style), MLP_2.",
    source_note="No official code. Split attention pools with the mean over H, W (spec; the "
    "External-Attention S2Attention sums) and its radix index is the outer one of the 3C "
    "output (reshape B x 3 x C). Written from the paper and the spec.",
)
class S2MLPv2(nn.Module):
    """S2-MLPv2 spatial-shift block (Yu et al., arXiv 2108.01072, 2021).

    Follows the spatial-shift block of the paper (Sec. 3, Fig. 1) in NCHW layout::

        y = conv1x1_{C->3C}(x)                         # biased (Linear on channels)
        x1 = shift_1(y[:C]); x2 = shift_2(y[C:2C]); x3 = y[2C:]
        a = softmax_over_3(L2(GELU(L1(mean_HW(x1 + x2 + x3)))))   # L1 C->C, L2 C->3C, no bias
        out = conv1x1_{C->C}(a_1 x1 + a_2 x2 + a_3 x3)  # biased

    ``shift_1`` moves the four channel quarters one pixel along +W, -W, +H, -H and
    ``shift_2`` along +H, -H, +W, -W (see :func:`spatial_shift`). No residual connection
    (the paper's block wraps it with LayerNorm and a residual; spec rule 5.8).

    Args:
        channels: input channels C (divisible by 4).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        require_divisible("s2mlp", channels, 4, "4 (channel quarters)", "pass channels divisible by 4")
        c = channels
        self.mlp1 = nn.Conv2d(c, 3 * c, 1)
        self.fc1 = nn.Conv2d(c, c, 1, bias=False)
        self.fc2 = nn.Conv2d(c, 3 * c, 1, bias=False)
        self.mlp2 = nn.Conv2d(c, c, 1)

    def split_attention(self, parts: Tensor) -> Tensor:
        """Weights ``B x 3 x C x 1 x 1`` (softmax over the 3 branches) for ``B x 3 x C x H x W``."""
        b, r, c = parts.shape[:3]
        pooled = float32(parts.sum(1)).mean((2, 3), keepdim=True).to(parts.dtype)
        logits = self.fc2(F.gelu(self.fc1(pooled))).reshape(b, r, c, 1, 1)
        return softmax32(logits, 1, parts.dtype)

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        y = self.mlp1(x)
        parts = torch.stack([spatial_shift(y[:, :c], 1), spatial_shift(y[:, c : 2 * c], 2), y[:, 2 * c :]], 1)
        a = self.split_attention(parts)
        return self.mlp2((a * parts).sum(1))
