"""Large-kernel convolutional attention: depthwise (strip / dilated) convolutions build the gate.

Each module gates its input with its attention map (``out = x * attn``); none adds a residual
of its own (spec rule 5.8). The papers wrap the gate as ``x + proj2(gate(GELU(proj1(x))))``;
``wrap=True`` (msca, lsk) adds that wrapper, residual included.

* ``msca`` -- "SegNeXt: Rethinking Convolutional Attention Design for Semantic Segmentation",
  Guo et al., NeurIPS 2022, Eqs. (1)-(2).
* ``lsk``  -- "Large Selective Kernel Network for Remote Sensing Object Detection", Li et al.,
  ICCV 2023, Sec. 3 (large kernel decomposition + spatial kernel selection).
* ``lska`` -- "Large Separable Kernel Attention: Rethinking the Large Kernel Attention Design in
  CNN", Lau, Po, Rehman, Expert Systems with Applications 2024 (separable LKA).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yoloattn.attention._common import (
    float32,
)
from yoloattn.attention.registry import register_attention

__all__ = ["MSCA", "LSK", "LSKA", "LSKA_KERNELS"]


def _dw(channels: int, kernel: tuple[int, int], dilation: int = 1) -> nn.Conv2d:
    """Biased depthwise conv that keeps the spatial size (odd kernels)."""
    pad = (dilation * (kernel[0] // 2), dilation * (kernel[1] // 2))
    return nn.Conv2d(channels, channels, kernel, padding=pad, dilation=dilation, groups=channels)


class _Wrapped(nn.Module):
    """``x + proj2(gate(GELU(proj1(x))))`` of the SegNeXt / LSKNet attention blocks."""

    def __init__(self, channels: int, wrap: bool) -> None:
        super().__init__()
        self.proj1 = nn.Conv2d(channels, channels, 1) if wrap else None
        self.proj2 = nn.Conv2d(channels, channels, 1) if wrap else None

    def gate(self, u: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        if self.proj1 is None or self.proj2 is None:
            return self.gate(x)
        return x + self.proj2(self.gate(F.gelu(self.proj1(x))))


def _wrap_params(c: int, wrap: bool) -> int:
    return 2 * c * c + 2 * c if wrap else 0


def _msca_params(c: int, kernel_sizes: tuple[int, ...], wrap: bool, **_: object) -> int:
    strips = sum(2 * (k + 1) * c for k in kernel_sizes)
    return 26 * c + strips + (c * c + c) + _wrap_params(c, wrap)


@register_attention(
    "msca",
    paper="SegNeXt: Rethinking Convolutional Attention Design for Semantic Segmentation",
    venue="NeurIPS",
    year=2022,
    category="large-kernel",
    reference="Visual-Attention-Network/SegNeXt mmseg/models/backbones/mscan.py",
    params=_msca_params,
    formula="C^2 + 111C",
    summary="Gates each position and channel with a map built from a 5x5 depthwise conv plus "
    "1xk/kx1 strip convolutions at three scales (7, 11, 21).",
    equations="Eq. (1) Att = Conv1x1(sum_i Scale_i(DW-Conv(F))), Eq. (2) Out = Att * F.",
)
class MSCA(_Wrapped):
    """Multi-Scale Convolutional Attention (SegNeXt, Guo et al., NeurIPS 2022, arXiv 2209.08575).

    Follows Eqs. (1)-(2) of the paper::

        a = DW5x5(x)
        b_k = DW kx1(DW 1xk(a))     for k in (7, 11, 21)
        out = x * conv1x1(a + b_7 + b_11 + b_21)      # all convs biased

    Built-in residual: none (the paper's Eq. 2 is a pure gate). ``wrap=True`` adds SegNeXt's
    spatial-attention wrapper ``x + proj2(MSCA(GELU(proj1(x))))`` (+2C^2 + 2C parameters),
    which carries that block's residual.

    Args:
        channels: input channels C.
        kernel_sizes: strip kernel lengths (odd), one branch each (paper: 7, 11, 21).
        wrap: add the proj1/GELU/proj2 wrapper with its residual.
    """

    def __init__(
        self, channels: int, *, kernel_sizes: tuple[int, ...] = (7, 11, 21), wrap: bool = False
    ) -> None:
        super().__init__(channels, wrap)
        ks = tuple(kernel_sizes)
        if not ks or any(not isinstance(k, int) or k < 1 or k % 2 == 0 for k in ks):
            raise ValueError(
                f"msca: kernel_sizes={kernel_sizes!r} must be a non-empty list of odd positive "
                "ints; pass kernel_sizes=(7, 11, 21)"
            )
        self.conv0 = _dw(channels, (5, 5))
        self.strips = nn.ModuleList(nn.Sequential(_dw(channels, (1, k)), _dw(channels, (k, 1))) for k in ks)
        self.conv_mix = nn.Conv2d(channels, channels, 1)

    def gate(self, u: Tensor) -> Tensor:
        a = self.conv0(u)
        s = a
        for strip in self.strips:
            s = s + strip(a)
        return u * self.conv_mix(s)


def _lsk_params(c: int, wrap: bool, **_: object) -> int:
    half = c // 2
    dw = (25 * c + c) + (49 * c + c)  # DW 5x5, DW 7x7 dilation 3
    reduce = 2 * (c * half + half)  # two 1x1 C -> C/2
    squeeze = 2 * 2 * 49 + 2  # 7x7 conv 2 -> 2
    expand = half * c + c  # 1x1 C/2 -> C
    return dw + reduce + squeeze + expand + _wrap_params(c, wrap)


@register_attention(
    "lsk",
    paper="Large Selective Kernel Network for Remote Sensing Object Detection",
    venue="ICCV",
    year=2023,
    category="large-kernel",
    reference="zcablii/LSKNet mmrotate/models/backbones/lsknet.py",
    params=_lsk_params,
    formula="3C^2/2 + 78C + 198",
    summary="Gates the input with a mix of two large depthwise receptive fields (5x5 and 5x5 "
    "followed by 7x7 dilation 3) selected per position by a spatial selection map.",
    equations="Sec. 3.2-3.3: large kernel decomposition U_1 = DW5x5(X), U_2 = DW7x7_d3(U_1); "
    "spatial kernel selection SA = sigmoid(F_{2->2}([mean; max])); S = F(sum_i SA_i U_i~); "
    "Y = X * S.",
    source_note="Written from the paper and the spec only: the reference code (LSKblock) is "
    "CC BY-NC 4.0 (non-commercial), so no code was taken from it.",
)
class LSK(_Wrapped):
    """Large Selective Kernel module (LSKNet, Li et al., ICCV 2023, arXiv 2303.09030).

    Follows Sec. 3 of the paper (large kernel decomposition, spatial kernel selection)::

        a1 = DW5x5(x);  a2 = DW7x7_dilation3(a1)                 # receptive field 23
        u1 = conv1x1_{C->C/2}(a1);  u2 = conv1x1_{C->C/2}(a2)
        g = sigmoid(conv7x7_{2->2}([mean_c, max_c]([u1, u2])))   # spatial selection
        out = x * conv1x1_{C/2->C}(u1 * g_0 + u2 * g_1)          # all convs biased

    Built-in residual: none (the LSK module is a gate). ``wrap=True`` adds LSKNet's attention
    wrapper ``x + proj2(LSK(GELU(proj1(x))))`` (+2C^2 + 2C parameters) with its residual.
    The channel mean/max statistics are computed in float32.

    Args:
        channels: input channels C (must be even).
        wrap: add the proj1/GELU/proj2 wrapper with its residual.
    """

    def __init__(self, channels: int, *, wrap: bool = False) -> None:
        super().__init__(channels, wrap)
        if channels % 2:
            raise ValueError(
                f"lsk: channels={channels} must be even (LSK reduces each kernel branch to C/2); "
                "use an even channel count"
            )
        half = channels // 2
        self.conv0 = _dw(channels, (5, 5))
        self.conv_spatial = _dw(channels, (7, 7), dilation=3)
        self.reduce1 = nn.Conv2d(channels, half, 1)
        self.reduce2 = nn.Conv2d(channels, half, 1)
        self.squeeze = nn.Conv2d(2, 2, 7, padding=3)
        self.expand = nn.Conv2d(half, channels, 1)

    def gate(self, u: Tensor) -> Tensor:
        a1 = self.conv0(u)
        a2 = self.conv_spatial(a1)
        u1, u2 = self.reduce1(a1), self.reduce2(a2)
        cat = float32(torch.cat([u1, u2], 1))
        stats = torch.cat([cat.mean(1, keepdim=True), cat.amax(1, keepdim=True)], 1)
        sel = torch.sigmoid(self.squeeze(stats.to(u1.dtype)))
        return u * self.expand(u1 * sel[:, 0:1] + u2 * sel[:, 1:2])


#: effective kernel size k -> (a, b, d): DW 1xa, ax1, then 1xb, bx1 with dilation d.
LSKA_KERNELS: dict[int, tuple[int, int, int]] = {
    7: (3, 3, 2),
    11: (3, 5, 2),
    23: (5, 7, 3),
    35: (5, 11, 3),
    41: (5, 13, 3),
    53: (5, 17, 3),
}


def _lska_abd(kernel_size: int) -> tuple[int, int, int]:
    if kernel_size not in LSKA_KERNELS:
        raise ValueError(
            f"lska: kernel_size={kernel_size!r} is not one of {sorted(LSKA_KERNELS)}; pass kernel_size=23"
        )
    return LSKA_KERNELS[kernel_size]


def _lska_params(c: int, kernel_size: int, **_: object) -> int:
    a, b, _d = _lska_abd(kernel_size)
    return c * c + c + 2 * c * (a + 1) + 2 * c * (b + 1)


@register_attention(
    "lska",
    paper="Large Separable Kernel Attention: Rethinking the Large Kernel Attention Design in CNN",
    venue="Expert Systems with Applications",
    year=2024,
    category="large-kernel",
    reference="StevenLauHKHK/Large-Separable-Kernel-Attention models/van.py",
    params=_lska_params,
    formula="C^2 + C + 2C(a+1) + 2C(b+1) (k=23: C^2 + 29C)",
    summary="Gates the input with a k x k (default 23) large-kernel map built from four "
    "separable 1-D depthwise convolutions (two of them dilated) and a 1x1 conv.",
    equations="LSKA: cascaded 1xa/ax1 depthwise and 1xb/bx1 dilated depthwise convs replace "
    "VAN's LKA 2-D kernels; Out = Conv1x1(...) * F.",
)
class LSKA(nn.Module):
    """Large Separable Kernel Attention (Lau et al., Expert Syst. Appl. 2024, arXiv 2309.01439).

    VAN's large kernel attention with every 2-D depthwise kernel split into a 1-D pair::

        attn = DW 1xa -> DW ax1 -> DW 1xb (dil d) -> DW bx1 (dil d) -> conv1x1   # all biased
        out = x * attn

    Effective kernel ``k = a + d (b - 1)``; the table :data:`LSKA_KERNELS` gives (a, b, d) per
    k (7, 11, 23, 35, 41, 53). Built-in residual: none (pure gate, as the paper's LSKA).

    Args:
        channels: input channels C.
        kernel_size: effective kernel size k (default 23).
    """

    def __init__(self, channels: int, *, kernel_size: int = 23) -> None:
        super().__init__()
        a, b, d = _lska_abd(kernel_size)
        self.kernel_size = kernel_size
        self.conv0h = _dw(channels, (1, a))
        self.conv0v = _dw(channels, (a, 1))
        self.conv_spatial_h = _dw(channels, (1, b), dilation=d)
        self.conv_spatial_v = _dw(channels, (b, 1), dilation=d)
        self.conv1 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        attn = self.conv_spatial_v(self.conv_spatial_h(self.conv0v(self.conv0h(x))))
        return x * self.conv1(attn)
