"""Polarized self-attention: a channel-only and a spatial-only self-attention branch.

* ``psa_p`` / ``psa_s`` -- "Polarized Self-Attention: Towards High-quality Pixel-wise
  Regression", Liu, Liu, Fan, Huang, arXiv 2021 (2107.00782; Neurocomputing 2022): parallel
  and sequential layouts.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from yoloattn.attention._common import (
    float32,
    require_divisible,
)
from yoloattn.attention.registry import register_attention

__all__ = ["PolarizedSelfAttentionParallel", "PolarizedSelfAttentionSequential"]


class _PolarizedBase(nn.Module):
    """Channel-only and spatial-only branches of Polarized Self-Attention."""

    def __init__(self, channels: int, key: str) -> None:
        super().__init__()
        require_divisible(key, channels, 2, "2", "PSA halves the channels; use an even width")
        half = channels // 2
        # channel-only branch
        self.ch_wv = nn.Conv2d(channels, half, 1, bias=False)
        self.ch_wq = nn.Conv2d(channels, 1, 1, bias=False)
        self.ch_wz = nn.Conv2d(half, channels, 1, bias=False)
        self.ch_ln = nn.LayerNorm(channels)
        # spatial-only branch
        self.sp_wq = nn.Conv2d(channels, half, 1, bias=False)
        self.sp_wv = nn.Conv2d(channels, half, 1, bias=False)

    def channel_only(self, x: Tensor) -> Tensor:
        """``Zch = x * sigmoid(LN(Wz(Wv(x) . softmax_HW(Wq(x)))))``."""
        v = self.ch_wv(x).flatten(2)  # B, C/2, HW
        q = torch.softmax(float32(self.ch_wq(x).flatten(2)), dim=2)  # B, 1, HW
        z = (v @ q.to(v.dtype).transpose(1, 2)).unsqueeze(3)  # B, C/2, 1, 1
        a = self.ch_wz(z).flatten(1)  # B, C
        a = torch.sigmoid(self.ch_ln(float32(a))).to(x.dtype)
        return x * a[:, :, None, None]

    def spatial_only(self, x: Tensor) -> Tensor:
        """``Zsp = x * sigmoid(softmax_C(GAP(Wq(x)))^T . Wv(x))``."""
        q = torch.softmax(float32(self.sp_wq(x).mean((2, 3))), dim=1).unsqueeze(1)  # B, 1, C/2
        v = self.sp_wv(x)
        a = q.to(v.dtype) @ v.flatten(2)  # B, 1, HW
        return x * torch.sigmoid(a).reshape(x.shape[0], 1, x.shape[2], x.shape[3])


_PSA_COMMON: dict[str, Any] = {
    "paper": "Polarized Self-Attention: Towards High-quality Pixel-wise Regression",
    "venue": "arXiv",
    "year": 2021,
    "category": "channel+spatial",
    "reference": "DeLightCMU/PSA semantic-segmentation/network/PSA.py",
    "params": lambda c, **h: 2 * c * c + 3 * c,
    "formula": "2C^2 + 3C",
    "source_note": "arXiv 2107.00782 (Neurocomputing 2022). Follows the paper's equations; the "
    "official PSA_p has no LayerNorm and PSA_s a C/2 -> C/8 -> C channel bottleneck (not "
    "offered). Softmax inputs and LayerNorm in float32.",
}


@register_attention(
    "psa_p",
    summary="Polarized filtering, parallel: a channel-only self-attention (softmax over "
    "positions) and a spatial-only one (softmax over channels), outputs summed.",
    equations="Sec. 3: channel-only branch A^ch = sigmoid(LN(Wz(Wv(X) softmax(Wq(X))))), "
    "spatial-only branch A^sp = sigmoid(softmax(GAP(Wq(X))) Wv(X)), parallel layout "
    "PSA_p = Z^ch + Z^sp.",
    **_PSA_COMMON,
)
class PolarizedSelfAttentionParallel(_PolarizedBase):
    """Polarized Self-Attention, parallel layout.

    Paper: "Polarized Self-Attention: Towards High-quality Pixel-wise Regression", Huajun Liu,
    Fuqiang Liu, Xinyi Fan, Dong Huang, arXiv 2107.00782 (2021; Neurocomputing 2022).

    Channel-only: ``v = Wv(x)`` (1x1 ``C -> C/2``), ``q = Wq(x)`` (1x1 ``C -> 1``) softmaxed over
    H*W, ``z = v softmax(q)``, ``Ach = sigmoid(LN(Wz z))`` (``C/2 -> C``, LN over the C values),
    ``Zch = x * Ach``. Spatial-only: ``q = softmax_C(GAP(Wq'(x)))``, ``v = Wv'(x)``,
    ``Asp = sigmoid(q^T v)`` (1 x H x W), ``Zsp = x * Asp``. Output ``Zch + Zsp``.
    1x1 convs without bias; parameters ``2C^2 + 3C``.

    Args:
        channels: input channels C (even).
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels, "psa_p")

    def forward(self, x: Tensor) -> Tensor:
        return self.channel_only(x) + self.spatial_only(x)


@register_attention(
    "psa_s",
    summary="Polarized filtering, sequential: channel-only self-attention, then spatial-only "
    "self-attention on the channel-refined map.",
    equations="Sec. 3: channel-only branch A^ch and spatial-only branch A^sp as in psa_p, "
    "sequential layout PSA_s = Z^sp(Z^ch(X)).",
    **_PSA_COMMON,
)
class PolarizedSelfAttentionSequential(_PolarizedBase):
    """Polarized Self-Attention, sequential layout.

    Paper: "Polarized Self-Attention: Towards High-quality Pixel-wise Regression", Huajun Liu
    et al., arXiv 2107.00782 (2021; Neurocomputing 2022).

    Same two branches as :class:`PolarizedSelfAttentionParallel`; the spatial-only branch is
    applied to the channel-refined tensor: output ``Zsp(Zch(x))``. Parameters ``2C^2 + 3C``.

    Args:
        channels: input channels C (even).
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels, "psa_s")

    def forward(self, x: Tensor) -> Tensor:
        return self.spatial_only(self.channel_only(x))
