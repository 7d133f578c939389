"""Squeeze-and-excitation family: a gate computed from a globally pooled descriptor.

* ``se``   -- "Squeeze-and-Excitation Networks", Hu, Shen, Sun, CVPR 2018 (TPAMI 2020), Eq. 2-4.
* ``ese``  -- effective SE of "CenterMask: Real-Time Anchor-Free Instance Segmentation",
  Lee and Park, CVPR 2020 (VoVNetV2).
* ``scse`` -- "Concurrent Spatial and Channel 'Squeeze & Excitation' in Fully Convolutional
  Networks", Roy, Navab, Wachinger, MICCAI 2018: a channel SE gate and a 1x1-conv spatial gate
  side by side.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yoloattn.attention._common import (
    gap,
    reduced_width,
    require_at_least,
)
from yoloattn.attention.registry import register_attention

__all__ = ["SE", "ESE", "SCSE"]


@register_attention(
    "se",
    paper="Squeeze-and-Excitation Networks",
    venue="CVPR",
    year=2018,
    category="channel",
    reference="hujie-frank/SENet models/SE-ResNet-50.prototxt",
    formula="2C^2/r + C/r + C (bias=False: 2C^2/r)",
    params=lambda c, reduction, bias, **_: 2 * c * (c // reduction) + ((c // reduction) + c if bias else 0),
    summary="Re-weights channels by a sigmoid gate computed from globally average-pooled "
    "features through a C -> C/r -> C bottleneck MLP.",
    equations="Eq. 2 (squeeze), Eq. 3 (excitation), Eq. 4 (scale)",
    source_note="FC biases on as in the official Caffe prototxts; bias=False gives the "
    "common bias-free PyTorch copies (2C^2/r parameters).",
)
class SE(nn.Module):
    """Squeeze-and-Excitation block.

    Paper: "Squeeze-and-Excitation Networks", Jie Hu, Li Shen, Gang Sun, CVPR 2018
    (TPAMI 2020), arXiv 1709.01507. Follows Eq. 2-4: ``z = GAP(x)``,
    ``s = sigmoid(W2 ReLU(W1 z + b1) + b2)``, ``out = x * s``. No residual inside.

    Args:
        channels: input channels C.
        reduction: r, hidden width ``C // r`` (paper default 16).
        bias: biases of the two FC layers (on in the official models).
    """

    def __init__(self, channels: int, reduction: int = 16, bias: bool = True) -> None:
        super().__init__()
        hidden = channels // reduction
        require_at_least(
            "se", "channels // reduction", hidden, 1, f"pass reduction<={channels} for C={channels}"
        )
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=bias)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(self.fc2(self.act(self.fc1(gap(x)))))
        return x * s.to(x.dtype)


@register_attention(
    "ese",
    paper="CenterMask: Real-Time Anchor-Free Instance Segmentation",
    venue="CVPR",
    year=2020,
    category="channel",
    reference="youngwanLEE/CenterMask maskrcnn_benchmark/modeling/backbone/vovnet.py",
    formula="C^2 + C",
    params=lambda c, **_: c * c + c,
    summary="SE without the bottleneck: one C -> C FC on the pooled descriptor and a "
    "hard-sigmoid channel gate.",
    equations="eSE: A = hsigmoid(W_C GAP(X)), out = A * X (VoVNetV2 section)",
)
class ESE(nn.Module):
    """Effective Squeeze-and-Excitation (eSE) of VoVNetV2.

    Paper: "CenterMask: Real-Time Anchor-Free Instance Segmentation", Youngwan Lee and
    Jongyoul Park, CVPR 2020, arXiv 1911.06667. ``out = x * hsigmoid(W GAP(x) + b)`` with a
    single biased ``C -> C`` FC (no reduction, to avoid the channel information loss of SE's
    bottleneck) and ``hsigmoid(t) = ReLU6(t + 3) / 6``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        s = F.hardsigmoid(self.fc(gap(x)))
        return x * s.to(x.dtype)


_SCSE_FUSE = ("max", "add", "mul")


@register_attention(
    "scse",
    formula="2C^2/r + C/r + 2C + 1",
    paper="Concurrent Spatial and Channel Squeeze & Excitation in Fully Convolutional Networks",
    venue="MICCAI",
    year=2018,
    category="channel+spatial",
    reference="ai-med/squeeze_and_excitation squeeze_and_excitation/squeeze_and_excitation.py",
    params=lambda c, **h: 2 * c * (c // h["reduction"]) + c // h["reduction"] + 2 * c + 1,
    summary="A channel SE gate and a 1x1-conv spatial gate computed side by side from the same "
    "input and fused (max by default).",
    equations="cSE (Sec. 2.1: x * sigmoid(W2 ReLU(W1 GAP(x)))), sSE (Sec. 2.2: x * sigmoid(conv1x1"
    "(x))), scSE (Sec. 2.3) fused by max as in the reference code / TMI version.",
    source_note="The MICCAI paper fuses by addition, the reference code (and the TMI paper) by "
    "element-wise max: fuse='max' (default), 'add', or 'mul' (x * cSE gate * sSE gate).",
)
class SCSE(nn.Module):
    """Concurrent spatial and channel squeeze & excitation (scSE).

    Paper: "Concurrent Spatial and Channel 'Squeeze & Excitation' in Fully Convolutional
    Networks", Abhijit Guha Roy, Nassir Navab, Christian Wachinger, MICCAI 2018
    (arXiv 1803.02579).

    ``cSE(x) = x * sigmoid(W2 ReLU(W1 GAP(x) + b1) + b2)`` (``C -> C/r -> C``);
    ``sSE(x) = x * sigmoid(conv1x1(x))`` (``C -> 1``, biased). Fusion: ``"max"`` =
    ``max(cSE(x), sSE(x))`` (reference code, default), ``"add"`` = ``cSE(x) + sSE(x)`` (MICCAI
    paper), ``"mul"`` = ``x * gate_c * gate_s``.

    Args:
        channels: input channels C.
        reduction: cSE reduction ratio r (reference default 2).
        fuse: ``"max"``, ``"add"`` or ``"mul"``.
    """

    def __init__(self, channels: int, reduction: int = 2, fuse: str = "max") -> None:
        super().__init__()
        m = reduced_width("scse", channels, reduction)
        if fuse not in _SCSE_FUSE:
            raise ValueError(f"scse: fuse={fuse!r} is not one of {_SCSE_FUSE}; pass fuse='max'")
        self.fuse = fuse
        self.fc1 = nn.Linear(channels, m)
        self.fc2 = nn.Linear(m, channels)
        self.spatial = nn.Conv2d(channels, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        gc = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))[:, :, None, None]
        gs = torch.sigmoid(self.spatial(x))
        if self.fuse == "max":
            return torch.maximum(x * gc, x * gs)
        if self.fuse == "add":
            return x * gc + x * gs
        return x * gc * gs

    def extra_repr(self) -> str:
        return f"fuse={self.fuse!r}"
