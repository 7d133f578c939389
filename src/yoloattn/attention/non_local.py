"""Non-local block: every position attends to all (sub-sampled) positions.

* ``nonlocal`` -- "Non-local Neural Networks", Wang, Girshick, Gupta, He, CVPR 2018,
  Eqs. (1), (3), (6): embedded Gaussian, ``x + BN(W_z y)``. Exactly the identity at
  initialisation (BN gamma = beta = 0).

Dot-product energies and the softmax run in float32 with autocast disabled (spec rule 5.5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yoloattn.attention._common import (
    float32,
    no_autocast,
    require_at_least,
)
from yoloattn.attention.registry import register_attention

__all__ = ["NonLocal"]


def _nonlocal_params(c: int, reduction: int, **_: object) -> int:
    i = c // reduction
    # theta, phi, g: C->i (biased); W: i->C (biased); BN(C)
    return 3 * (c * i + i) + (i * c + c) + 2 * c


@register_attention(
    "nonlocal",
    onnx_opset=10,
    paper="Non-local Neural Networks",
    venue="CVPR",
    year=2018,
    category="self-attention",
    reference="facebookresearch/video-nonlocal-net lib/models/nonlocal_helper.py",
    params=_nonlocal_params,
    formula="2C^2 + 9C/2",
    summary="Every position attends to all (2x2 max-pooled) positions with embedded-Gaussian "
    "affinities and adds the aggregated features through a zero-initialised BN.",
    equations="Eq. (1) generic non-local op, Eq. (3) embedded Gaussian (scaled by "
    "(C/2)^-0.5 as in the official code), Eq. (6) residual z = BN(W_z y) + x.",
    identity_init="exact",
    source_note="Written from the paper and the spec (the Caffe2 reference is CC BY-NC): "
    "sub-sampling as in the official Caffe2 code (2x2 max pool of x before the phi and g "
    "convs), with ceil_mode so odd sizes and 1x1 inputs work.",
)
class NonLocal(nn.Module):
    """Non-local block, embedded Gaussian, 2-D (Wang et al., CVPR 2018, arXiv 1711.07971).

    Follows Eqs. (1), (3) and (6) of the paper::

        theta = conv1x1_{C->C/2}(x);  phi, g = conv1x1_{C->C/2}(maxpool2x2(x))
        A = softmax_keys(theta^T phi * (C/2)^-0.5)
        y = A g
        out = x + BN(conv1x1_{C/2->C}(y))       # BN gamma = 0 at init

    Built-in residual: yes, the paper's ``z = W_z y + x`` (Eq. 6). BN's gamma and beta start
    at 0, so the freshly built module returns its input exactly. Sub-sampling follows the
    official Caffe2 code (max pool of ``x`` before the phi/g convs), ``ceil_mode=True`` so any
    H, W works; ``sub_sample=False`` attends to all positions (mmcv default, timm
    ``NonLocalAttn``). Memory is O((HW)^2 / 4): do not place it at P3 of a 640 input.

    Args:
        channels: input channels C.
        reduction: inner channels C // reduction (paper: 2).
        sub_sample: 2x2 max-pool the keys/values (official default).
    """

    def __init__(self, channels: int, *, reduction: int = 2, sub_sample: bool = True) -> None:
        super().__init__()
        require_at_least("nonlocal", "reduction", reduction, 1, "pass reduction=2")
        inter = channels // reduction
        require_at_least(
            "nonlocal",
            f"channels//reduction (channels={channels}, reduction={reduction})",
            inter,
            1,
            "pass a smaller reduction",
        )
        self.inter_channels = inter
        self.sub_sample = sub_sample
        self.scale = inter**-0.5
        self.theta = nn.Conv2d(channels, inter, 1)
        self.phi = nn.Conv2d(channels, inter, 1)
        self.g = nn.Conv2d(channels, inter, 1)
        self.w = nn.Conv2d(inter, channels, 1)
        self.bn = nn.BatchNorm2d(channels)
        for conv in (self.theta, self.phi, self.g, self.w):
            nn.init.normal_(conv.weight, std=0.01)  # official init_std
            assert conv.bias is not None
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        src = F.max_pool2d(x, 2, 2, ceil_mode=True) if self.sub_sample else x
        theta = self.theta(x).flatten(2)  # B x i x HW
        phi = self.phi(src).flatten(2)  # B x i x N
        g = self.g(src).flatten(2)  # B x i x N
        with no_autocast(x):
            logits = torch.matmul(float32(theta).transpose(1, 2), float32(phi)) * self.scale
            attn = logits.softmax(-1)  # B x HW x N
        y = torch.matmul(attn.to(g.dtype), g.transpose(1, 2))  # B x HW x i
        y = y.transpose(1, 2).reshape(b, self.inter_channels, h, w)
        return x + self.bn(self.w(y))
