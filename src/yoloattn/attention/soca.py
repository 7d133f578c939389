"""Second-order channel attention: an SE-style gate on the square root of the channel covariance.

* ``soca`` -- "Second-order Attention Network for Single Image Super-Resolution", Dai, Cai,
  Zhang, Xia, Zhang, CVPR 2019 (SOCA of SAN).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from yoloattn.attention._common import (
    float32,
    no_autocast,
    require_at_least,
)
from yoloattn.attention.registry import register_attention

__all__ = ["SOCA"]


def _sqrtm_newton_schulz(a: Tensor, iterations: int) -> Tensor:
    """Square root of batched SPD matrices by Newton-Schulz iteration (trace-normalised).

    ``A / tr(A)`` is iterated ``Y <- Y T, Z <- T Z, T = (3I - Z Y) / 2`` from ``Y = A, Z = I``
    (``iterations`` updates of Y), then rescaled by ``sqrt(tr(A))``. ``tr(A)`` is clamped to
    1e-12 so a zero covariance (constant map) gives a zero root instead of NaN.
    """
    c = a.shape[-1]
    eye3 = 3.0 * torch.eye(c, dtype=a.dtype, device=a.device).expand_as(a)
    trace = a.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(1e-12)[:, None, None]
    y = a / trace
    z = torch.eye(c, dtype=a.dtype, device=a.device).expand_as(a)
    for _ in range(iterations - 1):
        t = 0.5 * (eye3 - torch.bmm(z, y))
        y, z = torch.bmm(y, t), torch.bmm(t, z)
    y = 0.5 * torch.bmm(y, eye3 - torch.bmm(z, y))
    return y * trace.sqrt()


@register_attention(
    "soca",
    onnx_opset=13,
    paper="Second-order Attention Network for Single Image Super-Resolution",
    venue="CVPR",
    year=2019,
    category="channel",
    reference="daitao/SAN TrainCode/model/MPNCOV/python/MPNCOV.py (SOCA in san.py)",
    formula="2C^2/r + C/r + C",
    params=lambda c, reduction, **_: 2 * c * (c // reduction) + c // reduction + c,
    summary="SE-style channel gate whose descriptor is second-order: the row means of the "
    "matrix square root of the channel covariance (Newton-Schulz iteration).",
    equations="covariance pooling, Newton-Schulz matrix square root, SOCA gate",
    source_note="Rewritten with plain ops (no custom autograd Functions, same function); "
    "the trace is clamped so constant maps give finite output. Maps larger than `crop` are "
    "centre-cropped as in the official code.",
)
class SOCA(nn.Module):
    """Second-order Channel Attention (SOCA) of SAN.

    Paper: "Second-order Attention Network for Single Image Super-Resolution", Tao Dai,
    Jianrui Cai, Yongbing Zhang, Shu-Tao Xia, Lei Zhang, CVPR 2019. Covariance
    ``S = X I_hat X^T`` of the ``C x HW`` features (1/HW normalisation); ``S^(1/2)`` by
    ``iterations`` Newton-Schulz steps after trace normalisation; channel
    descriptor ``z_c`` = mean of row c of ``S^(1/2)``; gate
    ``sigmoid(W2 ReLU(W1 z + b1) + b2)`` with ``C -> C/r -> C`` 1x1 convs (biased),
    ``out = x * gate``. All covariance maths runs in float32 with autocast disabled.
    Memory is O(C^2) per image.

    Args:
        channels: input channels C.
        reduction: r (8, reference default).
        iterations: Newton-Schulz iterations (5).
        crop: feature maps with H or W larger than this are centre-cropped to it before the
            covariance (official value 1000).
    """

    min_hw = 2

    def __init__(self, channels: int, reduction: int = 8, iterations: int = 5, crop: int = 1000) -> None:
        super().__init__()
        hidden = channels // reduction
        require_at_least(
            "soca", "channels // reduction", hidden, 1, f"pass reduction<={channels} for C={channels}"
        )
        require_at_least("soca", "iterations", iterations, 1, "pass iterations=5")
        require_at_least("soca", "crop", crop, 1, "pass crop=1000")
        self.iterations, self.crop = iterations, crop
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        sub = x
        if h > self.crop:
            top = (h - self.crop) // 2
            sub = sub[:, :, top : top + self.crop]
        if w > self.crop:
            left = (w - self.crop) // 2
            sub = sub[:, :, :, left : left + self.crop]
        with no_autocast(x):
            v = float32(sub).flatten(2)
            v = v - v.mean(2, keepdim=True)
            cov = torch.bmm(v, v.transpose(1, 2)) / v.shape[2]
            root = _sqrtm_newton_schulz(cov, self.iterations)
            z = root.mean(1).view(b, c, 1, 1)
        s = torch.sigmoid(self.fc2(self.act(self.fc1(z.to(x.dtype)))))
        return x * s.to(x.dtype)
