"""Gated Channel Transformation: channel gates from l2-normalised channel embeddings.

* ``gct`` -- "Gated Channel Transformation for Visual Recognition", Yang, Zhu, Wu, Yang,
  CVPR 2020. Exactly the identity at initialisation (gamma = beta = 0).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from yoloattn.attention._common import (
    float32,
)
from yoloattn.attention.registry import register_attention

__all__ = ["GCT"]


@register_attention(
    "gct",
    paper="Gated Channel Transformation for Visual Recognition",
    venue="CVPR",
    year=2020,
    category="channel",
    reference="z-x-yang/GCT PyTorch/GCT.py",
    formula="3C",
    params=lambda c, **_: 3 * c,
    summary="Gates each channel by 1 + tanh of its l2 (or l1) embedding normalised against "
    "the other channels, with learnable embedding, gating and bias weights.",
    equations="GCT: global context embedding, channel normalisation, gating adaptation",
    identity_init="exact",
)
class GCT(nn.Module):
    """Gated Channel Transformation.

    Paper: "Gated Channel Transformation for Visual Recognition", Zongxin Yang, Linchao Zhu,
    Yu Wu, Yi Yang, CVPR 2020, arXiv 1909.11519. l2 mode (default):
    ``s_c = alpha_c * sqrt(sum_hw x^2 + eps)``, ``n_c = gamma_c * s_c / sqrt(mean_c s^2 + eps)``,
    ``out = x * (1 + tanh(n_c + beta_c))``. l1 mode: ``s_c = alpha_c * sum_hw |x|``,
    ``n_c = gamma_c * s_c / (mean_c |s| + eps)``. Init alpha=1, gamma=0, beta=0, so the freshly
    built module is exactly the identity. Statistics are computed in float32.

    Args:
        channels: input channels C.
        epsilon: eps of the embedding and the normalisation (1e-5).
        mode: ``"l2"`` (paper default) or ``"l1"``.
        after_relu: l1 mode only: the input is known to be non-negative, skip ``abs``.
    """

    def __init__(
        self, channels: int, epsilon: float = 1e-5, mode: str = "l2", after_relu: bool = False
    ) -> None:
        super().__init__()
        if mode not in ("l2", "l1"):
            raise ValueError(f"gct: mode={mode!r} is not supported; pass mode='l2' or mode='l1'")
        self.alpha = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.epsilon = epsilon
        self.mode = mode
        self.after_relu = after_relu

    def forward(self, x: Tensor) -> Tensor:
        x32 = float32(x)
        if self.mode == "l2":
            emb = (x32.pow(2).sum((2, 3), keepdim=True) + self.epsilon).sqrt() * self.alpha
            norm = self.gamma / (emb.pow(2).mean(1, keepdim=True) + self.epsilon).sqrt()
        else:
            a = x32 if self.after_relu else x32.abs()
            emb = a.sum((2, 3), keepdim=True) * self.alpha
            norm = self.gamma / (emb.abs().mean(1, keepdim=True) + self.epsilon)
        gate = 1.0 + torch.tanh(emb * norm + self.beta)
        return x * gate.to(x.dtype)
