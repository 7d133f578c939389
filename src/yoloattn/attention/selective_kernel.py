"""Split-transform-select attention: several convolution branches mixed by a softmax over them.

Each module replaces a 3x3 convolution (C -> C):

* ``sk``    -- "Selective Kernel Networks", Li, Wang, Hu, Yang, CVPR 2019.
* ``splat`` -- "ResNeSt: Split-Attention Networks", Zhang et al., CVPR Workshops 2022.
* ``epsa``  -- "EPSANet: An Efficient Pyramid Squeeze Attention Block on Convolutional Neural
  Network", Zhang, Zu, Lu, Zou, Meng, ACCV 2022.

BatchNorms after pooled descriptors are :class:`GuardedBatchNorm2d` (batch 1 in training
mode uses the running statistics, spec rule 5.3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from yoloattn.attention._common import (
    GuardedBatchNorm2d,
    float32,
    gap,
    require_at_least,
    require_divisible,
)
from yoloattn.attention.registry import register_attention

__all__ = ["SK", "SplAt", "EPSA"]


def _sk_params(c: int, groups: int, reduction: int, min_dim: int, paths: int, **_: object) -> int:
    d = max(c // reduction, min_dim)
    return paths * (9 * c * c // groups + 2 * c) + c * d + 2 * d + paths * d * c


@register_attention(
    "sk",
    paper="Selective Kernel Networks",
    venue="CVPR",
    year=2019,
    category="channel",
    reference="implus/SKNet models/sknet50.prototxt",
    formula="M(9C^2/G + 2C) + Cd + 2d + MdC, d = max(C/r, L) (defaults: 9C^2/16 + 4C + 3Cd + 2d)",
    params=_sk_params,
    summary="Convolves with several receptive fields (3x3 and dilated 3x3) and selects among "
    "them per channel with a softmax attention computed from the fused global descriptor.",
    equations="split, fuse (s = GAP(U), z = delta(B(W s)), d = max(C/r, L)), select (softmax)",
    source_note="Replaces a 3x3 conv (C -> C). Biases off as the official prototxt. timm's "
    "SelectiveKernel equals this with split_input=False, groups=32 and rd_channels=d.",
)
class SK(nn.Module):
    """Selective Kernel convolution (SKConv).

    Paper: "Selective Kernel Networks", Xiang Li, Wenhai Wang, Xiaolin Hu, Jian Yang,
    CVPR 2019, arXiv 1903.06586. Split: path m is a grouped 3x3 conv with dilation m+1
    (path 2 acts as 5x5), each with BN + ReLU. Fuse: ``U = sum_m U_m``,
    ``z = ReLU(BN(W_fc GAP(U)))`` with ``W_fc: C -> d``, ``d = max(C / r, L)``.
    Select: ``a = softmax_m(W_sel z)`` per channel, ``out = sum_m a_m * U_m``.
    The BN after the pooled descriptor uses running statistics for batch 1 in training mode
    (spec rule 5.3).

    Args:
        channels: input and output channels C (divisible by ``groups``).
        groups: G of the path convolutions (32).
        reduction: r (16).
        min_dim: L, the minimum width d of the fused descriptor (32).
        paths: M, number of kernels (2; path m has dilation m+1).
    """

    def __init__(
        self, channels: int, groups: int = 32, reduction: int = 16, min_dim: int = 32, paths: int = 2
    ) -> None:
        super().__init__()
        require_at_least("sk", "paths", paths, 2, "pass paths=2")
        require_divisible("sk", channels, groups, "groups", f"pass groups={math.gcd(channels, groups)}")
        d = max(channels // reduction, min_dim)
        require_at_least("sk", "d = max(channels // reduction, min_dim)", d, 1, "pass min_dim=32")
        self.paths = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=m + 1, dilation=m + 1, groups=groups, bias=False),
                GuardedBatchNorm2d(channels),
                nn.ReLU(inplace=True),
            )
            for m in range(paths)
        )
        self.fc = nn.Conv2d(channels, d, 1, bias=False)
        self.bn = GuardedBatchNorm2d(d)
        self.act = nn.ReLU(inplace=True)
        self.select = nn.Conv2d(d, paths * channels, 1, bias=False)
        self.num_paths = paths

    def forward(self, x: Tensor) -> Tensor:
        u = torch.stack([p(x) for p in self.paths], dim=1)  # B x M x C x H x W
        z = self.act(self.bn(self.fc(gap(u.sum(1)))))
        logits = self.select(z).view(x.shape[0], self.num_paths, -1, 1, 1)
        a = torch.softmax(float32(logits), dim=1).to(u.dtype)
        return (u * a).sum(1)


def _splat_inter(c: int, radix: int, reduction: int, min_dim: int) -> int:
    return max(c * radix // reduction, min_dim)


def _splat_params(c: int, radix: int, cardinality: int, reduction: int, min_dim: int, **_: object) -> int:
    inter = _splat_inter(c, radix, reduction, min_dim)
    conv = radix * c * (c // (cardinality * radix)) * 9 + 2 * radix * c
    fc1 = c * inter // cardinality + inter + 2 * inter
    fc2 = inter * radix * c // cardinality + radix * c
    return conv + fc1 + fc2


@register_attention(
    "splat",
    paper="ResNeSt: Split-Attention Networks",
    venue="CVPR Workshops",
    year=2022,
    category="channel",
    reference="zhanghang1989/ResNeSt resnest/torch/models/splat.py",
    formula="9C^2/K + 2RC + CI/K + 3I + RCI/K + RC, I = max(RC/4, 32) (defaults: 21C^2/2 + 15C/2)",
    params=_splat_params,
    summary="A grouped 3x3 conv produces R feature-map splits that are combined by a "
    "per-channel softmax (r-softmax) attention computed from their pooled sum.",
    equations="split-attention block and r-softmax (cardinal groups, radix splits)",
    source_note="Replaces a 3x3 conv (C -> C). Conv without bias, attention FCs biased, as "
    "the official code; timm SplitAttn matches with norm_layer=BatchNorm2d.",
)
class SplAt(nn.Module):
    """Split-Attention convolution of ResNeSt.

    Paper: "ResNeSt: Split-Attention Networks", Hang Zhang et al., CVPR Workshops 2022,
    arXiv 2004.08955. A 3x3 conv ``C -> R*C`` with ``groups = K*R`` (+BN, ReLU) gives R
    splits; ``g = GAP(sum_r split_r)``; ``g = ReLU(BN(fc1(g)))`` (C -> inter, groups K);
    ``a = fc2(g)`` (inter -> R*C, groups K); softmax across the R splits of each cardinal group
    (sigmoid if R = 1); ``out = sum_r a_r * split_r``. ``inter = max(C*R/reduction, 32)``.
    The BN after pooling uses running statistics for batch 1 in training mode (rule 5.3).

    Args:
        channels: input and output channels C.
        radix: R (2).
        cardinality: K (1).
        reduction: reduction factor of the attention width (4).
        min_dim: minimum attention width (32).
    """

    def __init__(
        self, channels: int, radix: int = 2, cardinality: int = 1, reduction: int = 4, min_dim: int = 32
    ) -> None:
        super().__init__()
        require_at_least("splat", "radix", radix, 1, "pass radix=2")
        require_divisible(
            "splat", channels, cardinality * radix, "cardinality*radix", "pass cardinality=1, radix=2"
        )
        inter = _splat_inter(channels, radix, reduction, min_dim)
        require_divisible("splat", inter, cardinality, "cardinality (attention width)", "pass cardinality=1")
        self.radix, self.cardinality = radix, cardinality
        self.conv = nn.Conv2d(
            channels, channels * radix, 3, padding=1, groups=cardinality * radix, bias=False
        )
        self.bn0 = GuardedBatchNorm2d(channels * radix)
        self.act0 = nn.ReLU(inplace=True)
        self.fc1 = nn.Conv2d(channels, inter, 1, groups=cardinality)
        self.bn1 = GuardedBatchNorm2d(inter)
        self.act1 = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(inter, channels * radix, 1, groups=cardinality)

    def forward(self, x: Tensor) -> Tensor:
        b, c = x.shape[:2]
        r, k = self.radix, self.cardinality
        u = self.act0(self.bn0(self.conv(x)))
        splits = u.reshape(b, r, c, u.shape[2], u.shape[3])
        g = self.act1(self.bn1(self.fc1(gap(splits.sum(1)))))
        logits = float32(self.fc2(g))
        if r > 1:  # fc2 output is ordered (cardinal group, split, channel-in-group)
            a = torch.softmax(logits.view(b, k, r, -1), dim=2).transpose(1, 2).reshape(b, r, c, 1, 1)
        else:
            a = torch.sigmoid(logits).view(b, 1, c, 1, 1)
        return (splits * a.to(u.dtype)).sum(1)


def _epsa_params(
    c: int, kernel_sizes: Sequence[int], groups: Sequence[int], reduction: int, **_: object
) -> int:
    n = len(kernel_sizes)
    split = c // n
    hidden = split // reduction
    convs = sum(split * (c // g) * k * k for k, g in zip(kernel_sizes, groups))
    return convs + 2 * split * hidden + hidden + split


@register_attention(
    "epsa",
    paper="EPSANet: An Efficient Pyramid Squeeze Attention Block on Convolutional Neural Network",
    venue="ACCV",
    year=2022,
    category="channel",
    reference="murufeng/EPSANet models/epsanet.py",
    formula="sum_i (C/4)(C/g_i)k_i^2 + 2(C/4)h + h + C/4, h = C/(4r) (defaults: 847C^2/128 + 17C/64)",
    params=_epsa_params,
    aliases={"kernels": "kernel_sizes"},
    summary="Extracts multi-scale features with four grouped convs (kernels 3-9), computes SE "
    "weights per scale and re-weights the scales with a softmax across them.",
    equations="SPC module (multi-scale split/concat), SEWeight, softmax across scales, re-weighting",
    source_note="Replaces a 3x3 conv (C -> C). Branch order in the output is 3,5,7,9 "
    "(paper); official_order=True reproduces the official concatenation order 9,7,5,3.",
)
class EPSA(nn.Module):
    """Pyramid Split Attention (PSA) module of EPSANet.

    Paper: "EPSANet: An Efficient Pyramid Squeeze Attention Block on Convolutional Neural
    Network", Hu Zhang, Keke Zu, Jian Lu, Yuru Zou, Deyu Meng, ACCV 2022, arXiv 2105.14447.
    Four bias-free convs ``C -> C/4`` with kernels 3,5,7,9 and groups 1,4,8,16 (SPC module);
    a shared SE weight module (``GAP -> 1x1 C/4 -> C/64 -> ReLU -> 1x1 -> C/4 -> sigmoid``,
    biased) on each branch; softmax across the four branches per channel; re-weighted branches
    are concatenated.

    Args:
        channels: input and output channels C (default: divisible by 64).
        kernel_sizes: kernel size of each branch (3, 5, 7, 9); deprecated alias ``kernels``.
        groups: groups of each branch conv (1, 4, 8, 16).
        reduction: SE reduction (16).
        official_order: concatenate branches in the official code's reversed order.
    """

    def __init__(
        self,
        channels: int,
        kernel_sizes: Sequence[int] = (3, 5, 7, 9),
        groups: Sequence[int] = (1, 4, 8, 16),
        reduction: int = 16,
        official_order: bool = False,
    ) -> None:
        super().__init__()
        kernels, groups = tuple(int(k) for k in kernel_sizes), tuple(int(g) for g in groups)
        if len(kernels) != len(groups) or not kernels:
            raise ValueError(
                f"epsa: kernel_sizes={kernels} and groups={groups} must have the same non-zero length"
            )
        n = len(kernels)
        hint = f"pass groups=({', '.join('1' for _ in groups)}) or another C"
        for k, g in zip(kernels, groups):
            if k < 1 or k % 2 == 0:
                raise ValueError(f"epsa: kernel_sizes={kernels} must be odd; pass kernel_sizes=(3, 5, 7, 9)")
            require_divisible("epsa", channels, n * g, f"{n} branches x groups={g}", hint)
        split = channels // n
        require_at_least(
            "epsa",
            "channels // len(kernel_sizes) // reduction",
            split // reduction,
            1,
            f"pass reduction<={split}",
        )
        self.convs = nn.ModuleList(
            nn.Conv2d(channels, split, k, padding=k // 2, groups=g, bias=False)
            for k, g in zip(kernels, groups)
        )
        hidden = split // reduction
        self.se_fc1 = nn.Conv2d(split, hidden, 1)
        self.se_act = nn.ReLU(inplace=True)
        self.se_fc2 = nn.Conv2d(hidden, split, 1)
        self.official_order = official_order

    def _se(self, t: Tensor) -> Tensor:
        return torch.sigmoid(self.se_fc2(self.se_act(self.se_fc1(gap(t)))))

    def forward(self, x: Tensor) -> Tensor:
        feats = torch.stack([conv(x) for conv in self.convs], dim=1)  # B x n x C/n x H x W
        w = torch.stack([self._se(feats[:, i]) for i in range(feats.shape[1])], dim=1)
        a = torch.softmax(float32(w), dim=1).to(feats.dtype)
        out = feats * a
        if self.official_order:
            out = out.flip(1)
        return out.flatten(1, 2)
