"""Bottleneck Attention Module: parallel channel and spatial branches, ``x * (1 + M)``.

* ``bam``          -- "BAM: Bottleneck Attention Module", Park, Woo, Lee, Kweon, BMVC 2018,
  as described in the paper (Eq. 1-4, maps summed).
* ``bam_official`` -- the same paper as implemented in its official code (hidden BN + ReLU,
  maps multiplied), a documented deviation kept as its own key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yoloattn.attention._common import (
    GuardedBatchNorm1d,
    GuardedBatchNorm2d,
    reduced_width,
    require_at_least,
)
from yoloattn.attention.registry import register_attention

__all__ = ["BAM", "BAMOfficial"]


def _bam_params(c: int, reduction: int, dilated_convs: int, official: bool) -> int:
    m = c // reduction
    n = dilated_convs
    if official:  # BN+ReLU after every hidden layer, no BN at the branch outputs
        return 3 * c * m + 9 * n * m * m + (7 + 3 * n) * m + c + 1
    return 3 * c * m + 9 * n * m * m + (3 + n) * m + 3 * c + 3


class _BAMBase(nn.Module):
    """Shared forward of both BAM variants: ``x * (1 + combine(Mc, Ms))``."""

    def channel_map(self, x: Tensor) -> Tensor:  # (B, C, 1, 1)
        raise NotImplementedError

    def spatial_map(self, x: Tensor) -> Tensor:  # (B, 1, H, W)
        raise NotImplementedError

    def attention_map(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return x * (1 + self.attention_map(x))


@register_attention(
    "bam",
    formula="3C^2/r + 18C^2/r^2 + 5C/r + 3C + 3",
    paper="BAM: Bottleneck Attention Module",
    venue="BMVC",
    year=2018,
    category="channel+spatial",
    reference="Jongchan/attention-module MODELS/bam.py",
    params=lambda c, **h: _bam_params(c, h["reduction"], h["dilated_convs"], official=False),
    summary="Parallel channel (pooled MLP) and spatial (dilated-conv bottleneck) branches "
    "summed into one 3-D map M; output x * (1 + sigmoid(M)).",
    equations="Eq. 1 (F' = F + F * M(F)), Eq. 2 (M = sigmoid(Mc + Ms)), Eq. 3 (Mc = "
    "BN(MLP(AvgPool(F)))), Eq. 4 (Ms = BN(f3(f2(f1(f0(F)))))), paper text (element-wise sum).",
    source_note="Paper design; the official code's deviation is the separate key bam_official. "
    "The channel-branch BN sees pooled 1x1 statistics: batch-1 training uses running stats.",
)
class BAM(_BAMBase):
    """Bottleneck Attention Module, as described in the paper (parallel, sum, residual).

    Paper: "BAM: Bottleneck Attention Module", Jongchan Park, Sanghyun Woo, Joon-Young Lee,
    In So Kweon, BMVC 2018 (arXiv 1807.06514).

    * Channel branch (Eq. 3): ``Mc = BN_C(W1 ReLU(W0 GAP(x) + b0) + b1)``, ``W0: C -> C/r``.
    * Spatial branch (Eq. 4): ``Ms = BN_1(f3(ReLU(f2(ReLU(f1(ReLU(f0(x))))))))`` with ``f0`` a
      1x1 conv ``C -> C/r``, ``f1, f2`` 3x3 convs with dilation d (padding d), ``f3`` 1x1 to 1.
    * Combination (Eq. 2, element-wise sum, the best variant of the paper's ablation):
      ``M = sigmoid(Mc + Ms)`` broadcast to C x H x W; output (Eq. 1) ``x * (1 + M)``.

    The channel-branch BN normalises pooled statistics, so a batch-1 forward in training mode
    uses the running statistics instead of raising (spec rule 5.3).

    Args:
        channels: input channels C.
        reduction: bottleneck ratio r (hidden width ``C // r``).
        dilation: dilation d of the 3x3 convs.
        dilated_convs: number of dilated 3x3 convs (paper: 2).
    """

    def __init__(self, channels: int, reduction: int = 16, dilation: int = 4, dilated_convs: int = 2) -> None:
        super().__init__()
        m = reduced_width("bam", channels, reduction)
        require_at_least("bam", "dilation", dilation, 1, "pass dilation>=1")
        require_at_least("bam", "dilated_convs", dilated_convs, 0, "pass dilated_convs>=0")
        self.channel_fc0 = nn.Linear(channels, m)
        self.channel_fc1 = nn.Linear(m, channels)
        self.channel_bn = GuardedBatchNorm1d(channels)
        self.spatial_reduce = nn.Conv2d(channels, m, 1)
        self.spatial_dilated = nn.ModuleList(
            nn.Conv2d(m, m, 3, padding=dilation, dilation=dilation) for _ in range(dilated_convs)
        )
        self.spatial_out = nn.Conv2d(m, 1, 1)
        self.spatial_bn = GuardedBatchNorm2d(1)

    def channel_map(self, x: Tensor) -> Tensor:
        z = self.channel_fc1(F.relu(self.channel_fc0(x.mean((2, 3)))))
        return self.channel_bn(z)[:, :, None, None]

    def spatial_map(self, x: Tensor) -> Tensor:
        t = F.relu(self.spatial_reduce(x))
        for conv in self.spatial_dilated:
            t = F.relu(conv(t))
        return self.spatial_bn(self.spatial_out(t))

    def attention_map(self, x: Tensor) -> Tensor:
        """``M = sigmoid(Mc + Ms)``, shape (B, C, H, W)."""
        return torch.sigmoid(self.channel_map(x) + self.spatial_map(x))


@register_attention(
    "bam_official",
    formula="3C^2/r + 18C^2/r^2 + 13C/r + C + 1",
    paper="BAM: Bottleneck Attention Module",
    venue="BMVC",
    year=2018,
    category="channel+spatial",
    reference="Jongchan/attention-module MODELS/bam.py",
    params=lambda c, **h: _bam_params(c, h["reduction"], h["dilated_convs"], official=True),
    summary="BAM as in the official code: BN+ReLU after every hidden layer and the two maps "
    "combined by product, x * (1 + sigmoid(Mc * Ms)).",
    equations="Official code (deviates from Eq. 2-4 of the paper: hidden-layer BN instead of "
    "branch-output BN, product instead of sum); Eq. 1 residual kept.",
    source_note="Weight-compatible layout of Jongchan/attention-module (issues #1, #39, #52). "
    "Rewritten with mean pooling (the official square avg_pool2d kernel is wrong for H != W and "
    "breaks ONNX export). Use key 'bam' for the paper's design.",
)
class BAMOfficial(_BAMBase):
    """BAM as implemented in the official code (a documented deviation from the paper).

    Paper: "BAM: Bottleneck Attention Module", Jongchan Park et al., BMVC 2018
    (arXiv 1807.06514); code: Jongchan/attention-module ``MODELS/bam.py``.

    Differences from :class:`BAM` (the paper, Eq. 2-4): BatchNorm + ReLU after every hidden
    layer (``BN1d(C/r)`` in the channel MLP, ``BN2d(C/r)`` after f0, f1, f2) and no BN on the
    branch outputs; the maps are combined by PRODUCT, ``M = sigmoid(Mc * Ms)``; output
    ``x * (1 + M)`` (Eq. 1). Parameters ``3C^2/r + 18C^2/r^2 + 13C/r + C + 1`` (BAM-ResNet-50's
    +0.358M of the paper's table comes from this layout).

    Not copied from the official code: the square ``avg_pool2d(x, H)`` channel pooling (wrong
    for H != W, not exportable) is replaced by a mean over H and W.

    Args:
        channels: input channels C.
        reduction: bottleneck ratio r.
        dilation: dilation d of the 3x3 convs.
        dilated_convs: number of dilated 3x3 convs (official: 2).
    """

    def __init__(self, channels: int, reduction: int = 16, dilation: int = 4, dilated_convs: int = 2) -> None:
        super().__init__()
        m = reduced_width("bam_official", channels, reduction)
        require_at_least("bam_official", "dilation", dilation, 1, "pass dilation>=1")
        require_at_least("bam_official", "dilated_convs", dilated_convs, 0, "pass dilated_convs>=0")
        self.channel_mlp = nn.Sequential(
            nn.Linear(channels, m),
            GuardedBatchNorm1d(m),
            nn.ReLU(inplace=True),
            nn.Linear(m, channels),
        )
        layers: list[nn.Module] = [nn.Conv2d(channels, m, 1), GuardedBatchNorm2d(m), nn.ReLU(True)]
        for _ in range(dilated_convs):
            layers += [
                nn.Conv2d(m, m, 3, padding=dilation, dilation=dilation),
                GuardedBatchNorm2d(m),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.Conv2d(m, 1, 1))
        self.spatial = nn.Sequential(*layers)

    def channel_map(self, x: Tensor) -> Tensor:
        return self.channel_mlp(x.mean((2, 3)))[:, :, None, None]

    def spatial_map(self, x: Tensor) -> Tensor:
        return self.spatial(x)

    def attention_map(self, x: Tensor) -> Tensor:
        """``M = sigmoid(Mc * Ms)``, shape (B, C, H, W)."""
        return torch.sigmoid(self.channel_map(x) * self.spatial_map(x))
