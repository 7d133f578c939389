"""SimAM: parameter-free, neuron-wise attention from an energy function.

* ``simam`` -- "SimAM: A Simple, Parameter-Free Attention Module for Convolutional Neural
  Networks", Yang, Zhang, Li, Xie, ICML 2021.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from yoloattn.attention._common import (
    float32,
    require_spatial_min,
)
from yoloattn.attention.registry import register_attention

__all__ = ["SimAM"]


@register_attention(
    "simam",
    formula="0",
    paper="SimAM: A Simple, Parameter-Free Attention Module for Convolutional Neural Networks",
    venue="ICML",
    year=2021,
    category="parameter-free",
    reference="ZjjConan/SimAM networks/attentions/simam_module.py",
    params=lambda c, **h: 0,
    summary="Every neuron weighted by its distinctiveness from the other neurons of its channel "
    "(inverse minimal energy), no learnable parameters.",
    equations="Minimal energy e_t* = 4(var + lambda) / ((t - mu)^2 + 2 var + 2 lambda) "
    "(Sec. 3, closed form), refinement X~ = sigmoid(1/E) * X; variance over n = H*W - 1.",
    source_note="PMLR 139:11863-11874; no arXiv version. Variance computed in float32.",
)
class SimAM(nn.Module):
    """SimAM: parameter-free 3-D attention from an energy function.

    Paper: "SimAM: A Simple, Parameter-Free Attention Module for Convolutional Neural
    Networks", Lingxiao Yang, Ru-Yuan Zhang, Lida Li, Xiaohua Xie, ICML 2021
    (PMLR 139:11863-11874).

    Per channel: ``n = H*W - 1``, ``d = (x - mean)^2``, ``v = sum(d) / n``,
    ``1/E = d / (4 (v + lambda)) + 0.5``; output ``x * sigmoid(1/E)`` (the paper's inverse
    minimal energy and its refinement step). Statistics in float32; needs ``H*W >= 2``.

    Args:
        channels: input channels (unused; kept for the zoo's constructor convention).
        e_lambda: regulariser lambda (module default 1e-4).
    """

    min_hw = 2

    def __init__(self, channels: int, e_lambda: float = 1e-4) -> None:
        super().__init__()
        if not e_lambda > 0:
            raise ValueError(f"simam: e_lambda={e_lambda} must be > 0; pass e.g. e_lambda=1e-4")
        self.channels = channels
        self.e_lambda = float(e_lambda)

    def forward(self, x: Tensor) -> Tensor:
        require_spatial_min("simam", x)
        xf = float32(x)
        n = xf.shape[2] * xf.shape[3] - 1
        d = (xf - xf.mean((2, 3), keepdim=True)).pow(2)
        v = d.sum((2, 3), keepdim=True) / n
        e_inv = d / (4 * (v + self.e_lambda)) + 0.5
        return x * torch.sigmoid(e_inv).to(x.dtype)

    def extra_repr(self) -> str:
        return f"e_lambda={self.e_lambda}"
