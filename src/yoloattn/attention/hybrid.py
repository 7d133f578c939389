"""Channel+spatial ("hybrid") attention modules of the zoo.

Every module here re-weights a feature map along the channel axis and along the spatial axes
(or along all three at once). Each class follows one paper; its docstring names the paper
(title, venue, year) and the equations implemented, and its registry entry carries the
paper's parameter formula. The definitions follow ``shared/spec/attention-zoo.md`` section 3.2:

* ``cbam`` -- CBAM (Woo et al., ECCV 2018): channel gate then spatial gate, sequential.
* ``bam`` -- BAM (Park et al., BMVC 2018): parallel branches, ``x * (1 + sigmoid(Mc + Ms))``.
* ``bam_official`` -- the official BAM code's variant (hidden BN+ReLU, product of the maps).
* ``ca`` -- Coordinate Attention (Hou et al., CVPR 2021): direction-aware strip pooling.
* ``simam`` -- SimAM (Yang et al., ICML 2021): parameter-free neuron-wise energy.
* ``gam`` -- GAM (Liu et al., arXiv 2021): pooling-free channel MLP then 7x7 spatial convs.
* ``triplet`` -- Triplet Attention (Misra et al., WACV 2021): three rotated Z-pool gates.
* ``sa`` -- Shuffle Attention (Zhang & Yang, ICASSP 2021): grouped channel/spatial halves.
* ``sge`` -- Spatial Group-wise Enhance (Li et al., arXiv 2019): per-group spatial gate.
* ``scse`` -- concurrent spatial and channel SE (Roy et al., MICCAI 2018).
* ``ema`` -- Efficient Multi-scale Attention (Ouyang et al., ICASSP 2023).
* ``psa_p`` / ``psa_s`` -- Polarized Self-Attention (Liu et al., arXiv 2021), both layouts.
* ``cpca`` -- Channel Prior Convolutional Attention (Huang et al., CIBM 2024).

Implementation rules shared by all modules (spec section 5): global and strip pooling use
``mean``/``amax`` reductions only (no size-built kernels, no adaptive pooling), so every module
works at any H x W, including non-square sizes, and exports to ONNX with dynamic H/W.
Statistics (variances, normalisations) and softmax inputs are computed in float32 under
autocast. BatchNorm layers that see pooled ``1 x 1`` statistics use :class:`_BatchNorm1dSafe`
/ :class:`_BatchNorm2dSafe`: with a single value per channel in training mode (a batch-1
forward, e.g. the YOLO stride probe on a train-mode model) they normalise with their running
statistics instead of raising, and leave those statistics unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yoloattn.attention._checks import float32, require_at_least, require_divisible
from yoloattn.attention.registry import register_attention

__all__ = [
    "CBAM",
    "BAM",
    "BAMOfficial",
    "CoordAttention",
    "SimAM",
    "GAM",
    "TripletAttention",
    "ShuffleAttention",
    "SpatialGroupEnhance",
    "SCSE",
    "EMA",
    "PolarizedSelfAttentionParallel",
    "PolarizedSelfAttentionSequential",
    "CPCA",
]


# ------------------------------------------------------------------------------------------
# shared helpers
# ------------------------------------------------------------------------------------------


class _BatchOneSafeMixin:
    """BatchNorm that tolerates one value per channel in training mode.

    PyTorch's BatchNorm raises "Expected more than 1 value per channel when training" when a
    batch-1 input carries a single value per channel (pooled ``1 x 1`` statistics). In that
    case this layer normalises with its running statistics (as in eval mode) and does not
    update them; affine parameters still receive gradients. Otherwise it is plain BatchNorm.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.numel() <= x.shape[1]:
            return F.batch_norm(
                x,
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                False,
                0.0,
                self.eps,
            )
        return super().forward(x)  # type: ignore[misc]


class _BatchNorm1dSafe(_BatchOneSafeMixin, nn.BatchNorm1d):
    """:class:`torch.nn.BatchNorm1d` that accepts batch 1 in training mode (see the mixin)."""


class _BatchNorm2dSafe(_BatchOneSafeMixin, nn.BatchNorm2d):
    """:class:`torch.nn.BatchNorm2d` that accepts one value per channel in training mode."""


def _reduced(module: str, channels: int, reduction: int, name: str = "reduction") -> int:
    """Hidden width ``channels // reduction`` (floor), checked to be at least 1."""
    require_at_least(module, name, reduction, 1, f"pass {name}>=1")
    hidden = channels // reduction
    require_at_least(
        module,
        f"channels//{name}",
        hidden,
        1,
        f"pass {name}<={channels} for channels={channels}",
    )
    return hidden


def _require_odd(module: str, name: str, value: int) -> None:
    if value < 1 or value % 2 == 0:
        raise ValueError(
            f"{module}: {name}={value} must be a positive odd number so the output keeps "
            f"the input size; pass e.g. {name}={value + 1 if value > 0 else 7}"
        )


def _channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet channel shuffle: (B, g*k, H, W) -> interleave the ``groups`` blocks."""
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def _spatial_min(module: str, x: Tensor, minimum: int = 2) -> None:
    """Reject feature maps with fewer than ``minimum`` positions (outside tracing)."""
    if not torch.jit.is_tracing():
        hw = int(x.shape[2]) * int(x.shape[3])
        if hw < minimum:
            raise ValueError(
                f"{module}: needs H*W >= {minimum} spatial positions for its per-channel "
                f"statistics, got input of size {tuple(x.shape[2:])}; place it on a larger map"
            )


# ------------------------------------------------------------------------------------------
# CBAM
# ------------------------------------------------------------------------------------------


def _cbam_params(c: int, reduction: int, kernel_size: int, bias: bool) -> int:
    m = c // reduction
    mlp = 2 * c * m + ((m + c) if bias else 0)
    return mlp + 2 * kernel_size**2 + 2


@register_attention(
    "cbam",
    formula="2C^2/r + C/r + C + 2k^2 + 2 (bias=False: 2C^2/r + 2k^2 + 2)",
    paper="CBAM: Convolutional Block Attention Module",
    venue="ECCV",
    year=2018,
    category="channel+spatial",
    reference="Jongchan/attention-module MODELS/cbam.py",
    params=lambda c, **h: _cbam_params(c, h["reduction"], h["kernel_size"], h["bias"]),
    summary="Which channels (shared MLP on avg- and max-pooled descriptors), then where "
    "(k x k conv on channel-wise max and mean maps), applied one after the other.",
    equations="Eq. 1 (F' = Mc(F) * F, F'' = Ms(F') * F'), Eq. 2 (Mc = sigmoid(MLP(AvgPool) + "
    "MLP(MaxPool))), Eq. 3 (Ms = sigmoid(f7x7([AvgPool_c(F'); MaxPool_c(F')]))) with the "
    "official code's BN after the spatial conv and its [max; mean] channel order.",
    source_note="Spatial conv is followed by BatchNorm (momentum 0.01) as in the official code; "
    "bias=False gives the bias-free MLP used by timm and many copies.",
)
class CBAM(nn.Module):
    """Convolutional Block Attention Module.

    Paper: "CBAM: Convolutional Block Attention Module", Sanghyun Woo, Jongchan Park,
    Joon-Young Lee, In So Kweon, ECCV 2018 (arXiv 1807.06521).

    Eq. 2: ``Mc = sigmoid(MLP(GAP(x)) + MLP(GMP(x)))`` with a shared MLP ``C -> C/r -> C``
    (ReLU, biased as in the official ``nn.Linear``); ``x' = x * Mc``.
    Eq. 3: ``Ms = sigmoid(BN(conv_kxk([cmax(x'), cmean(x')])))`` (2 -> 1 conv without bias, BN as
    in the official code, max map first as in the official code); output ``x' * Ms``.
    No residual inside the module (spec rule 5.8).

    Args:
        channels: input channels C.
        reduction: MLP reduction ratio r (hidden width ``C // r``).
        kernel_size: spatial conv size k (odd).
        bias: biases in the channel MLP (official: True).
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7, bias: bool = True) -> None:
        super().__init__()
        hidden = _reduced("cbam", channels, reduction)
        _require_odd("cbam", "kernel_size", kernel_size)
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden, bias=bias),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=bias),
        )
        self.spatial_conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.spatial_bn = _BatchNorm2dSafe(1, momentum=0.01)

    def channel_gate(self, x: Tensor) -> Tensor:
        """``Mc`` of shape (B, C, 1, 1)."""
        logits = self.mlp(x.mean((2, 3))) + self.mlp(x.amax((2, 3)))
        return torch.sigmoid(logits)[:, :, None, None]

    def spatial_gate(self, x: Tensor) -> Tensor:
        """``Ms`` of shape (B, 1, H, W)."""
        pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], dim=1)
        return torch.sigmoid(self.spatial_bn(self.spatial_conv(pooled)))

    def forward(self, x: Tensor) -> Tensor:
        x = x * self.channel_gate(x)
        return x * self.spatial_gate(x)


# ------------------------------------------------------------------------------------------
# BAM (paper) and BAM (official code)
# ------------------------------------------------------------------------------------------


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
        m = _reduced("bam", channels, reduction)
        require_at_least("bam", "dilation", dilation, 1, "pass dilation>=1")
        require_at_least("bam", "dilated_convs", dilated_convs, 0, "pass dilated_convs>=0")
        self.channel_fc0 = nn.Linear(channels, m)
        self.channel_fc1 = nn.Linear(m, channels)
        self.channel_bn = _BatchNorm1dSafe(channels)
        self.spatial_reduce = nn.Conv2d(channels, m, 1)
        self.spatial_dilated = nn.ModuleList(
            nn.Conv2d(m, m, 3, padding=dilation, dilation=dilation) for _ in range(dilated_convs)
        )
        self.spatial_out = nn.Conv2d(m, 1, 1)
        self.spatial_bn = _BatchNorm2dSafe(1)

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
        m = _reduced("bam_official", channels, reduction)
        require_at_least("bam_official", "dilation", dilation, 1, "pass dilation>=1")
        require_at_least("bam_official", "dilated_convs", dilated_convs, 0, "pass dilated_convs>=0")
        self.channel_mlp = nn.Sequential(
            nn.Linear(channels, m),
            _BatchNorm1dSafe(m),
            nn.ReLU(inplace=True),
            nn.Linear(m, channels),
        )
        layers: list[nn.Module] = [nn.Conv2d(channels, m, 1), _BatchNorm2dSafe(m), nn.ReLU(True)]
        for _ in range(dilated_convs):
            layers += [
                nn.Conv2d(m, m, 3, padding=dilation, dilation=dilation),
                _BatchNorm2dSafe(m),
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


# ------------------------------------------------------------------------------------------
# Coordinate Attention
# ------------------------------------------------------------------------------------------


@register_attention(
    "ca",
    formula="3C*mip + 3mip + 2C, mip = max(8, C/32)",
    paper="Coordinate Attention for Efficient Mobile Network Design",
    venue="CVPR",
    year=2021,
    category="channel+spatial",
    reference="houqb/CoordAttention coordatt.py",
    params=lambda c, **h: (
        3 * c * max(h["min_mip"], c // h["reduction"]) + 3 * max(h["min_mip"], c // h["reduction"]) + 2 * c
    ),
    summary="Channel weights that also encode position: strip means along W and along H give "
    "one gate per row and one per column.",
    equations="Eq. 4-5 (strip pooling z^h, z^w), Eq. 6 (f = h-swish(BN(F1([z^h, z^w])))), "
    "Eq. 7-8 (g^h, g^w), Eq. 9 (y = x * g^h * g^w).",
    source_note="Strip pooling as x.mean(3) / x.mean(2) (the official AdaptiveAvgPool2d((None, 1)) "
    "fails dynamic ONNX export, houqb/CoordAttention#6).",
)
class CoordAttention(nn.Module):
    """Coordinate Attention.

    Paper: "Coordinate Attention for Efficient Mobile Network Design", Qibin Hou, Daquan Zhou,
    Jiashi Feng, CVPR 2021 (arXiv 2103.02907).

    ``zh = mean_W(x)`` (C x H x 1), ``zw = mean_H(x)`` (C x W x 1 after transposing) (Eq. 4-5);
    ``f = h-swish(BN(conv1x1([zh; zw])))`` with ``C -> mip``, ``mip = max(min_mip, C // r)``
    (Eq. 6); split into fh, fw; ``ah = sigmoid(conv_h(fh))``, ``aw = sigmoid(conv_w(fw))``
    (Eq. 7-8, ``mip -> C``); output ``x * ah * aw`` (Eq. 9). All convs biased.

    Args:
        channels: input channels C.
        reduction: reduction ratio r (official 32).
        min_mip: lower bound of the hidden width (official 8).
    """

    def __init__(self, channels: int, reduction: int = 32, min_mip: int = 8) -> None:
        super().__init__()
        require_at_least("ca", "reduction", reduction, 1, "pass reduction>=1")
        require_at_least("ca", "min_mip", min_mip, 1, "pass min_mip>=1")
        mip = max(min_mip, channels // reduction)
        self.conv1 = nn.Conv2d(channels, mip, 1)
        self.bn1 = _BatchNorm2dSafe(mip)
        self.act = nn.Hardswish()
        self.conv_h = nn.Conv2d(mip, channels, 1)
        self.conv_w = nn.Conv2d(mip, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = x.shape[2]
        zh = x.mean(3, keepdim=True)  # B, C, H, 1
        zw = x.mean(2, keepdim=True).transpose(2, 3)  # B, C, W, 1
        f = self.act(self.bn1(self.conv1(torch.cat([zh, zw], dim=2))))
        fh, fw = f[:, :, :h], f[:, :, h:]
        ah = torch.sigmoid(self.conv_h(fh))  # B, C, H, 1
        aw = torch.sigmoid(self.conv_w(fw.transpose(2, 3)))  # B, C, 1, W
        return x * ah * aw


# ------------------------------------------------------------------------------------------
# SimAM
# ------------------------------------------------------------------------------------------


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
        _spatial_min("simam", x)
        xf = float32(x)
        n = xf.shape[2] * xf.shape[3] - 1
        d = (xf - xf.mean((2, 3), keepdim=True)).pow(2)
        v = d.sum((2, 3), keepdim=True) / n
        e_inv = d / (4 * (v + self.e_lambda)) + 0.5
        return x * torch.sigmoid(e_inv).to(x.dtype)

    def extra_repr(self) -> str:
        return f"e_lambda={self.e_lambda}"


# ------------------------------------------------------------------------------------------
# GAM
# ------------------------------------------------------------------------------------------


def _gam_params(c: int, reduction: int, groups: int) -> int:
    m = c // reduction
    return 2 * c * m + 98 * c * m // groups + 4 * m + 4 * c


@register_attention(
    "gam",
    formula="100C^2/r + 4C/r + 4C (groups g: 2C^2/r + 98C^2/(rg) + 4C/r + 4C)",
    paper="Global Attention Mechanism: Retain Information to Enhance Channel-Spatial Interactions",
    venue="arXiv",
    year=2021,
    category="channel+spatial",
    reference="none",
    params=lambda c, **h: _gam_params(c, h["reduction"], h["groups"]),
    summary="Per-position channel MLP gate, then a 7x7 conv bottleneck spatial gate; no "
    "pooling, so channel and spatial information are kept together.",
    equations="Eq. 1 (F2 = Mc(F1) * F1, F3 = Ms(F2) * F2); channel sub-module: permute, MLP "
    "C -> C/r -> C, permute back, sigmoid; spatial sub-module: 7x7 conv C -> C/r, BN, ReLU, "
    "7x7 conv C/r -> C, BN, sigmoid (Fig. 2-3).",
    source_note="arXiv 2112.05561, no official code. Sigmoid on the channel branch kept (many "
    "copies drop it). groups>1 uses group convs + channel shuffle in the spatial branch.",
)
class GAM(nn.Module):
    """Global Attention Mechanism.

    Paper: "Global Attention Mechanism: Retain Information to Enhance Channel-Spatial
    Interactions", Yichao Liu, Zongru Shao, Nico Hoffmann, arXiv 2112.05561 (2021).

    Channel sub-module: the per-position C-vector goes through an MLP ``C -> C/r -> C`` (ReLU,
    biased), ``x1 = x * sigmoid(MLP(x))`` (no pooling). Spatial sub-module:
    ``Ms = sigmoid(BN(conv7x7(ReLU(BN(conv7x7(x1))))))`` with ``C -> C/r -> C`` (biased);
    output ``x1 * Ms`` (Eq. 1, sequential). With ``groups > 1`` both 7x7 convs are group
    convolutions and the channels are shuffled between them (the paper's ResNet-50 setting).

    Args:
        channels: input channels C.
        reduction: reduction ratio r (paper 4).
        groups: groups of the 7x7 convs (1 = dense, the default).
    """

    def __init__(self, channels: int, reduction: int = 4, groups: int = 1) -> None:
        super().__init__()
        m = _reduced("gam", channels, reduction)
        require_at_least("gam", "groups", groups, 1, "pass groups>=1")
        require_divisible("gam", channels, groups, "groups", "pass a groups value dividing channels")
        if m % groups:
            raise ValueError(
                f"gam: channels//reduction={m} must be divisible by groups={groups}; "
                "pass a smaller groups or reduction"
            )
        self.groups = groups
        self.channel_mlp = nn.Sequential(
            nn.Linear(channels, m), nn.ReLU(inplace=True), nn.Linear(m, channels)
        )
        self.spatial_conv1 = nn.Conv2d(channels, m, 7, padding=3, groups=groups)
        self.spatial_bn1 = _BatchNorm2dSafe(m)
        self.spatial_conv2 = nn.Conv2d(m, channels, 7, padding=3, groups=groups)
        self.spatial_bn2 = _BatchNorm2dSafe(channels)

    def forward(self, x: Tensor) -> Tensor:
        mc = self.channel_mlp(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = x * torch.sigmoid(mc)
        t = F.relu(self.spatial_bn1(self.spatial_conv1(x)))
        if self.groups > 1:
            t = _channel_shuffle(t, self.groups)
        ms = torch.sigmoid(self.spatial_bn2(self.spatial_conv2(t)))
        return x * ms


# ------------------------------------------------------------------------------------------
# Triplet attention
# ------------------------------------------------------------------------------------------


class _ZPoolGate(nn.Module):
    """``t * sigmoid(BN(conv_kxk([max_1(t), mean_1(t)])))`` (conv 2 -> 1 without bias)."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = _BatchNorm2dSafe(1, momentum=0.01)

    def forward(self, t: Tensor) -> Tensor:
        pooled = torch.cat([t.amax(1, keepdim=True), t.mean(1, keepdim=True)], dim=1)
        return t * torch.sigmoid(self.bn(self.conv(pooled)))


@register_attention(
    "triplet",
    formula="3(2k^2 + 2) (no_spatial: 2(2k^2 + 2))",
    paper="Rotate to Attend: Convolutional Triplet Attention Module",
    venue="WACV",
    year=2021,
    category="channel+spatial",
    reference="landskape-ai/triplet-attention MODELS/triplet_attention.py",
    params=lambda c, **h: (2 if h["no_spatial"] else 3) * (2 * h["kernel_size"] ** 2 + 2),
    summary="Cross-dimension interactions: Z-pool gates on three rotated views (C-W, H-C, H-W), averaged.",
    equations="Sec. 3 / Fig. 3: Z-pool ([max; mean] over the leading axis of each rotated view), "
    "k x k conv, BN, sigmoid per branch; output = average of the three branches.",
)
class TripletAttention(nn.Module):
    """Triplet Attention.

    Paper: "Rotate to Attend: Convolutional Triplet Attention Module", Diganta Misra,
    Trikay Nalamada, Ajay Uppili Arasanipalai, Qibin Hou, WACV 2021 (arXiv 2010.03045).

    Each branch applies ``gate(t) = t * sigmoid(BN(conv_kxk(Z-pool(t))))`` to a rotated view:
    branch 1 swaps C and H (pools over H: C-W interaction), branch 2 swaps C and W (pools over
    W: H-C interaction), branch 3 is the plain spatial gate (H-W). Views are rotated back and
    averaged: ``(b1 + b2 + b3) / 3`` (``no_spatial`` drops branch 3, average of 2).

    Args:
        channels: input channels (any; the module's size does not depend on C).
        kernel_size: conv size k of every gate (odd).
        no_spatial: drop the H-W branch.
    """

    def __init__(self, channels: int, kernel_size: int = 7, no_spatial: bool = False) -> None:
        super().__init__()
        _require_odd("triplet", "kernel_size", kernel_size)
        self.gate_cw = _ZPoolGate(kernel_size)
        self.gate_hc = _ZPoolGate(kernel_size)
        self.gate_hw = None if no_spatial else _ZPoolGate(kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.gate_cw(x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
        b2 = self.gate_hc(x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1)
        if self.gate_hw is None:
            return (b1 + b2) / 2
        return (b1 + b2 + self.gate_hw(x)) / 3


# ------------------------------------------------------------------------------------------
# Shuffle attention
# ------------------------------------------------------------------------------------------


@register_attention(
    "sa",
    formula="3C/G",
    paper="SA-Net: Shuffle Attention for Deep Convolutional Neural Networks",
    venue="ICASSP",
    year=2021,
    category="channel+spatial",
    reference="wofmanaf/SA-Net models/sa_resnet.py",
    params=lambda c, **h: 3 * c // h["groups"],
    summary="Per channel group, half the channels get a channel gate (GAP) and half a spatial "
    "gate (GroupNorm), then channels are shuffled.",
    equations="Eq. 1-2 (channel half: x * sigmoid(W1 s + b1)), Eq. 3 (spatial half: "
    "x * sigmoid(W2 GN(x) + b2)), aggregation and channel shuffle (Sec. 3).",
)
class ShuffleAttention(nn.Module):
    """Shuffle Attention.

    Paper: "SA-Net: Shuffle Attention for Deep Convolutional Neural Networks", Qing-Long Zhang,
    Yu-Bin Yang, ICASSP 2021 (arXiv 2102.00240).

    Reshape to ``(B*G) x (C/G) x H x W``; split each group into halves of ``C/(2G)``:
    channel half ``x0 * sigmoid(w_c * GAP(x0) + b_c)`` (Eq. 1-2), spatial half
    ``x1 * sigmoid(w_s * GN(x1) + b_s)`` with one GroupNorm group per channel (Eq. 3);
    concatenate, reshape to ``B x C x H x W`` and shuffle channels with 2 groups.
    Init ``w = 0, b = 1``. GroupNorm statistics in float32.

    Args:
        channels: input channels C (divisible by ``2 * groups``).
        groups: number of groups G (paper 64; use e.g. 8 for narrow YOLO layers).
    """

    small_hyper = {"groups": 8}

    def __init__(self, channels: int, groups: int = 64) -> None:
        super().__init__()
        require_at_least("sa", "groups", groups, 1, "pass groups>=1")
        require_divisible(
            "sa",
            channels,
            2 * groups,
            "2*groups",
            f"pass groups={_largest_divisor(channels // 2, groups)} (groups must divide channels/2)",
        )
        self.groups = groups
        half = channels // (2 * groups)
        self.cweight = nn.Parameter(torch.zeros(1, half, 1, 1))
        self.cbias = nn.Parameter(torch.ones(1, half, 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, half, 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, half, 1, 1))
        self.gn = nn.GroupNorm(half, half)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        g = x.reshape(b * self.groups, c // self.groups, h, w)
        x0, x1 = g.chunk(2, dim=1)
        xc = x0 * torch.sigmoid(self.cweight * x0.mean((2, 3), keepdim=True) + self.cbias)
        xs = self.gn(float32(x1)).to(x1.dtype)
        xs = x1 * torch.sigmoid(self.sweight * xs + self.sbias)
        out = torch.cat([xc, xs], dim=1).reshape(b, c, h, w)
        return _channel_shuffle(out, 2)


def _largest_divisor(n: int, at_most: int) -> int:
    """Largest divisor of ``n`` that is ``<= at_most`` (at least 1)."""
    for d in range(min(n, at_most), 0, -1):
        if n % d == 0:
            return d
    return 1


# ------------------------------------------------------------------------------------------
# Spatial group-wise enhance
# ------------------------------------------------------------------------------------------


@register_attention(
    "sge",
    formula="2G",
    paper="Spatial Group-wise Enhance: Improving Semantic Feature Learning in Convolutional Networks",
    venue="arXiv",
    year=2019,
    category="spatial",
    reference="implus/PytorchInsight classification/models/imagenet/resnet_sge.py",
    params=lambda c, **h: 2 * h["groups"],
    summary="Within each channel group, positions similar to the group's global descriptor "
    "are enhanced (normalised similarity map, sigmoid gate).",
    equations="Sec. 3: g = GAP(x_group), c_i = g . x_i, normalised over positions "
    "(mean, unbiased std + 1e-5), a_i = gamma * c^_i + beta, x^_i = x_i * sigmoid(a_i).",
    source_note="arXiv 1905.09646. Similarity statistics computed in float32.",
)
class SpatialGroupEnhance(nn.Module):
    """Spatial Group-wise Enhance.

    Paper: "Spatial Group-wise Enhance: Improving Semantic Feature Learning in Convolutional
    Networks", Xiang Li, Xiaolin Hu, Jian Yang, arXiv 1905.09646 (2019).

    Reshape to ``(B*G) x (C/G) x H x W``; ``t = sum_c(x * GAP(x))`` (1 x H x W per group);
    normalise ``t`` over H*W (subtract the mean, divide by the unbiased std + 1e-5, as in the
    official code); ``t = w_g * t + b_g``; output ``x * sigmoid(t)``. Init ``w = 0, b = 1``.
    Statistics in float32; needs ``H*W >= 2`` (unbiased std).

    Args:
        channels: input channels C (divisible by ``groups``).
        groups: number of groups G (paper 64).
    """

    min_hw = 2
    small_hyper = {"groups": 8}

    def __init__(self, channels: int, groups: int = 64) -> None:
        super().__init__()
        require_at_least("sge", "groups", groups, 1, "pass groups>=1")
        require_divisible(
            "sge",
            channels,
            groups,
            "groups",
            f"pass groups={_largest_divisor(channels, groups)} (groups must divide channels)",
        )
        self.groups = groups
        self.weight = nn.Parameter(torch.zeros(1, groups, 1, 1))
        self.bias = nn.Parameter(torch.ones(1, groups, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        _spatial_min("sge", x)
        b, c, h, w = x.shape
        g = x.reshape(b * self.groups, c // self.groups, h, w)
        gf = float32(g)
        t = (gf * gf.mean((2, 3), keepdim=True)).sum(1)  # B*G, H, W
        t = t.reshape(b, self.groups, -1)
        t = t - t.mean(2, keepdim=True)
        t = t / (t.std(2, keepdim=True) + 1e-5)
        t = t.reshape(b, self.groups, h, w) * self.weight + self.bias
        gate = torch.sigmoid(t).reshape(b * self.groups, 1, h, w).to(x.dtype)
        return (g * gate).reshape(b, c, h, w)


# ------------------------------------------------------------------------------------------
# scSE
# ------------------------------------------------------------------------------------------

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
        m = _reduced("scse", channels, reduction)
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


# ------------------------------------------------------------------------------------------
# EMA
# ------------------------------------------------------------------------------------------


@register_attention(
    "ema",
    formula="10(C/G)^2 + 4(C/G)",
    paper="Efficient Multi-Scale Attention Module with Cross-Spatial Learning",
    venue="ICASSP",
    year=2023,
    category="channel+spatial",
    reference="YOLOonMe/EMA-attention-module EMA_attention_module",
    params=lambda c, **h: 10 * (c // h["factor"]) ** 2 + 4 * (c // h["factor"]),
    summary="Per channel group, a strip-pooled 1x1 branch and a 3x3 branch each attend over the "
    "positions of the other (cross-spatial softmax), giving one spatial gate per group.",
    equations="Sec. 3 / Fig. 3: grouping, 1x1 branch (X/Y strip average pooling, shared 1x1 "
    "conv, sigmoid, GroupNorm), 3x3 branch, cross-spatial learning (softmax(GAP) . flatten, "
    "summed), sigmoid re-weighting.",
    source_note="Strip pooling as means (the official AdaptiveAvgPool2d((None, 1)) fails dynamic "
    "ONNX export). GroupNorm and softmax inputs in float32. No license file upstream.",
)
class EMA(nn.Module):
    """Efficient Multi-scale Attention.

    Paper: "Efficient Multi-Scale Attention Module with Cross-Spatial Learning", Daliang Ouyang,
    Su He, Guozhong Zhang, Mingzhu Luo, Huaiyong Guo, Jian Zhan, Zhijiang Huang, ICASSP 2023
    (arXiv 2305.13563).

    Reshape to ``(B*G) x (C/G) x H x W = g``. 1x1 branch: strip means along W and along H,
    concatenated, shared biased 1x1 conv ``C/G -> C/G``, split,
    ``x1 = GN(g * sigmoid(h) * sigmoid(w))`` (one GN group per channel). 3x3 branch:
    ``x2 = conv3x3(g)`` (biased). Cross-spatial learning: ``a1 = softmax(GAP(x1))``,
    ``a2 = softmax(GAP(x2))`` over the C/G channels; ``W = a1^T flat(x2) + a2^T flat(x1)``
    (1 x H x W); output ``g * sigmoid(W)`` reshaped to ``B x C x H x W``.

    Args:
        channels: input channels C (divisible by ``factor``).
        factor: number of groups G (official 32).
    """

    small_hyper = {"factor": 8}

    def __init__(self, channels: int, factor: int = 32) -> None:
        super().__init__()
        require_at_least("ema", "factor", factor, 1, "pass factor>=1")
        require_divisible(
            "ema",
            channels,
            factor,
            "factor",
            f"pass factor={_largest_divisor(channels, factor)} (factor must divide channels)",
        )
        self.groups = factor
        cg = channels // factor
        self.conv1x1 = nn.Conv2d(cg, cg, 1)
        self.conv3x3 = nn.Conv2d(cg, cg, 3, padding=1)
        self.gn = nn.GroupNorm(cg, cg)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        cg = c // self.groups
        g = x.reshape(b * self.groups, cg, h, w)
        zh = g.mean(3, keepdim=True)  # BG, cg, H, 1
        zw = g.mean(2, keepdim=True).transpose(2, 3)  # BG, cg, W, 1
        hw = self.conv1x1(torch.cat([zh, zw], dim=2))
        ah, aw = hw[:, :, :h], hw[:, :, h:].transpose(2, 3)
        x1 = g * torch.sigmoid(ah) * torch.sigmoid(aw)
        x1 = self.gn(float32(x1))  # float32 under autocast
        x2 = float32(self.conv3x3(g))
        a1 = torch.softmax(x1.mean((2, 3)), dim=1).unsqueeze(1)  # BG, 1, cg
        a2 = torch.softmax(x2.mean((2, 3)), dim=1).unsqueeze(1)
        weights = a1 @ x2.flatten(2) + a2 @ x1.flatten(2)  # BG, 1, HW
        gate = torch.sigmoid(weights).reshape(b * self.groups, 1, h, w).to(x.dtype)
        return (g * gate).reshape(b, c, h, w)


# ------------------------------------------------------------------------------------------
# Polarized self-attention
# ------------------------------------------------------------------------------------------


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


_PSA_COMMON = {
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


# ------------------------------------------------------------------------------------------
# CPCA
# ------------------------------------------------------------------------------------------


def _cpca_params(c: int, reduction: int, share_proj: bool) -> int:
    m = c // reduction
    proj = (c * c + c) * (1 if share_proj else 3)
    # depthwise 5x5 + (1x7, 7x1) + (1x11, 11x1) + (1x21, 21x1): 103C weights + 7C biases
    return proj + 2 * c * m + m + c + 110 * c


@register_attention(
    "cpca",
    formula="3C^2/2 + 449C/4 at r=4 (C^2 + 2C^2/r + C/r + 112C; share_proj=False: + 2C^2 + 2C)",
    paper="Channel prior convolutional attention for medical image segmentation",
    venue="Computers in Biology and Medicine",
    year=2024,
    category="channel+spatial",
    reference="Cuthbert-Huang/CPCANet CPCANet/nnunet/network_architecture/CPCANet.py",
    params=lambda c, **h: _cpca_params(c, h["reduction"], h["share_proj"]),
    summary="A channel prior (sum of avg- and max-pooled sigmoid gates), then multi-scale "
    "depthwise strip convolutions giving a per-channel spatial attention map.",
    equations="Sec. 3 (CPCA): channel prior CA(F) = sigmoid(MLP(AvgPool F)) + sigmoid(MLP("
    "MaxPool F)), F_c = CA(F) * F; spatial attention SA = conv1x1(sum_i Branch_i(DwConv5x5(F_c)))"
    "; output conv1x1(SA * F_c); official RepBlock (GELU(conv1x1) in front, shared 1x1).",
    source_note="Follows the official RepBlock (arXiv 2306.05196), where one 1x1 conv is applied "
    "three times (weight sharing); share_proj=False uses three separate convs.",
)
class CPCA(nn.Module):
    """Channel Prior Convolutional Attention (official RepBlock, C -> C).

    Paper: "Channel prior convolutional attention for medical image segmentation", Hejian
    Huang, Zhenjun Chen, Ying Zou, Ming Lu, Chen Chen, Computers in Biology and Medicine 2024
    (arXiv 2306.05196).

    ``x = GELU(P(x))`` (P: biased 1x1 conv ``C -> C``); channel prior
    ``ca = sigmoid(MLP(GAP(x))) + sigmoid(MLP(GMP(x)))`` (shared biased MLP ``C -> C/4 -> C``,
    ReLU; a sum of two sigmoids, range 0-2); ``x = x * ca``; multi-scale depthwise spatial
    attention ``a = DW5x5(x)``, ``s = a + sum_{k in 7, 11, 21} DWkx1(DW1xk(a))``;
    output ``P(P(s) * x)``. The same P is used three times (official code); ``share_proj=False``
    gives three separate 1x1 convs.

    Args:
        channels: input channels C.
        reduction: channel-prior MLP reduction (official 4).
        share_proj: share the 1x1 conv P between its three uses (official True).
    """

    def __init__(self, channels: int, reduction: int = 4, share_proj: bool = True) -> None:
        super().__init__()
        m = _reduced("cpca", channels, reduction)
        c = channels
        self.proj_in = nn.Conv2d(c, c, 1)
        self.proj_att = self.proj_in if share_proj else nn.Conv2d(c, c, 1)
        self.proj_out = self.proj_in if share_proj else nn.Conv2d(c, c, 1)
        self.act = nn.GELU()
        self.fc1 = nn.Conv2d(c, m, 1)
        self.fc2 = nn.Conv2d(m, c, 1)
        self.dw5 = nn.Conv2d(c, c, 5, padding=2, groups=c)
        self.strips = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c, c, (1, k), padding=(0, k // 2), groups=c),
                nn.Conv2d(c, c, (k, 1), padding=(k // 2, 0), groups=c),
            )
            for k in (7, 11, 21)
        )

    def _mlp(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.fc2(F.relu(self.fc1(z))))

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.proj_in(x))
        prior = self._mlp(x.mean((2, 3), keepdim=True)) + self._mlp(x.amax((2, 3), keepdim=True))
        x = x * prior
        a = self.dw5(x)
        s = a
        for strip in self.strips:
            s = s + strip(a)
        return self.proj_out(self.proj_att(s) * x)
