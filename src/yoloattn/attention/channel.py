"""Channel attention family: modules that re-weight the C channels of a feature map.

Every module follows its paper (title, venue, year and equations are cited in each class
docstring) and the project spec ``shared/spec/attention-zoo.md`` section 3.1:

* ``se``     Squeeze-and-Excitation Networks (Hu et al., CVPR 2018), Eq. 2-4.
* ``ese``    effective SE from CenterMask (Lee et al., CVPR 2020).
* ``eca``    ECA-Net (Wang et al., CVPR 2020), 1-D conv gate with the adaptive kernel rule.
* ``ceca``   circular ECA (timm variant of ECA, no paper).
* ``gct``    Gated Channel Transformation (Yang et al., CVPR 2020).
* ``srm``    SRM: Style-based Recalibration Module (Lee et al., ICCV 2019).
* ``fca``    FcaNet: Frequency Channel Attention Networks (Qin et al., ICCV 2021).
* ``nam``    NAM: Normalization-based Attention Module (Liu et al., NeurIPS 2021 workshop).
* ``sk``     Selective Kernel Networks (Li et al., CVPR 2019).
* ``splat``  ResNeSt: Split-Attention Networks (Zhang et al., CVPR Workshops 2022).
* ``epsa``   EPSANet pyramid split attention (Zhang et al., ACCV 2022).
* ``soca``   Second-order channel attention of SAN (Dai et al., CVPR 2019).
* ``parnet`` RepVGG-SSE block of "Non-deep Networks" (Goyal et al., NeurIPS 2022).

Numerics shared by the family:

* Global pooling is ``mean``/``amax`` over (H, W) only, so every module exports to ONNX with
  dynamic H and W (spec rule 5.1). ``fca`` resamples to its DCT grid with an explicit
  pooling matrix that reproduces ``adaptive_avg_pool2d`` exactly, so it exports too.
* Pooled statistics are computed in float32 (``float32`` helper, autocast disabled where a
  matmul is involved) and cast back to the input dtype (spec rule 5.5).
* BatchNorm applied to pooled ``B x C x 1 x 1`` statistics (``sk``, ``splat``, ``srm``) cannot
  compute batch statistics from a single value per channel. Following spec rule 5.3 such a
  BatchNorm (:class:`_GuardedBatchNorm2d`) normalises with its running statistics, without
  updating them, when it sees exactly one value per channel in training mode (batch 1), so
  the batch-1 stride probe of YOLOv5/v7 on a freshly built train-mode model works.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yoloattn.attention._checks import float32, require_at_least, require_divisible
from yoloattn.attention.registry import register_attention

__all__ = [
    "SE",
    "ESE",
    "ECA",
    "CECA",
    "GCT",
    "SRM",
    "FCA",
    "NAM",
    "SK",
    "SplAt",
    "EPSA",
    "SOCA",
    "ParNetSSE",
    "eca_kernel_size",
    "fca_dct_filters",
    "nam_l1_penalty",
]


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------


class _GuardedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that tolerates one value per channel in training mode (spec rule 5.3).

    With ``N * H * W == 1`` (a batch-1 forward of pooled statistics) batch statistics do not
    exist; the layer then normalises with its running statistics and leaves them untouched,
    exactly as in eval mode. Otherwise it is a plain ``nn.BatchNorm2d`` (same state_dict).
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


def _gap(x: Tensor) -> Tensor:
    """Global average pool over (H, W) in float32, cast back to ``x.dtype`` (B x C x 1 x 1)."""
    return float32(x).mean((2, 3), keepdim=True).to(x.dtype)


def _no_autocast(x: Tensor) -> torch.autocast:
    return torch.autocast(device_type=x.device.type, enabled=False)


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA-Net adaptive kernel size: ``t = int(|(log2(C) + b) / gamma|)``, made odd (``t+1``).

    C=64 -> 3, 256 -> 5, 512 -> 5, 1024 -> 5, 2048 -> 7 (paper defaults gamma=2, b=1).
    Unlike timm, no lower clamp to 3 is applied (the paper has none).
    """
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


# --------------------------------------------------------------------------------------------
# SE / ESE
# --------------------------------------------------------------------------------------------


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
        s = torch.sigmoid(self.fc2(self.act(self.fc1(_gap(x)))))
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
        s = F.hardsigmoid(self.fc(_gap(x)))
        return x * s.to(x.dtype)


# --------------------------------------------------------------------------------------------
# ECA / circular ECA
# --------------------------------------------------------------------------------------------


def _eca_params(c: int, k_size: int | None, gamma: int, b: int, **_: object) -> int:
    return k_size if k_size else eca_kernel_size(c, gamma, b)


class _EcaBase(nn.Module):
    def __init__(self, key: str, channels: int, k_size: int | None, gamma: int, b: int) -> None:
        super().__init__()
        k = eca_kernel_size(channels, gamma, b) if k_size is None else int(k_size)
        if k < 1 or k % 2 == 0:
            raise ValueError(f"{key}: k_size={k} must be a positive odd integer; pass e.g. k_size=3")
        self.k_size = k
        self.conv = nn.Conv1d(1, 1, k, padding=0, bias=False)

    def _pad(self, y: Tensor, p: int) -> Tensor:
        """Pad the B x 1 x C channel descriptor by ``p`` on both sides (zeros for ECA)."""
        return F.pad(y, (p, p))

    def forward(self, x: Tensor) -> Tensor:
        y = float32(x).mean((2, 3)).to(x.dtype).unsqueeze(1)  # B x 1 x C
        p = self.k_size // 2
        if p:
            y = self._pad(y, p)
        s = torch.sigmoid(self.conv(y)).transpose(1, 2).unsqueeze(-1)  # B x C x 1 x 1
        return x * s.to(x.dtype)


@register_attention(
    "eca",
    paper="ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
    venue="CVPR",
    year=2020,
    category="channel",
    reference="BangguWu/ECANet models/eca_module.py",
    formula="k = psi(C) (no bias)",
    params=_eca_params,
    summary="Re-weights channels by a sigmoid gate from a k-tap 1-D convolution across the "
    "pooled channel descriptor (local cross-channel interaction, no dimension reduction).",
    equations="omega = sigma(C1D_k(y)) and adaptive kernel k = psi(C) = |(log2 C + b) / gamma|_odd",
    source_note="Kernel rule coded as in the paper (the official repo passes k by hand); "
    "timm additionally clamps k >= 3, which only differs for C < 16.",
)
class ECA(_EcaBase):
    """Efficient Channel Attention.

    Paper: "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
    Qilong Wang et al., CVPR 2020, arXiv 1910.03151. ``y = GAP(x)`` as a length-C sequence,
    ``out = x * sigmoid(conv1d_k(y))`` with zero padding ``k // 2`` and no bias (the paper's
    ``omega = sigma(C1D_k(y))``); the kernel size follows the adaptive rule
    ``k = psi(C) = |(log2 C + b) / gamma|_odd`` unless
    ``k_size`` is given.

    Args:
        channels: input channels C.
        k_size: explicit odd kernel size; None selects it from C (64->3, 256->5, 2048->7).
        gamma, b: constants of the adaptive rule (paper: 2 and 1).
    """

    def __init__(self, channels: int, k_size: int | None = None, gamma: int = 2, b: int = 1) -> None:
        super().__init__("eca", channels, k_size, gamma, b)


@register_attention(
    "ceca",
    paper="ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks "
    "(circular-padding variant of timm)",
    venue="code",
    year=2020,
    category="channel",
    reference="huggingface/pytorch-image-models timm/layers/eca.py",
    formula="k = psi(C) (no bias)",
    params=_eca_params,
    summary="ECA whose 1-D channel convolution wraps around the channel axis (circular "
    "padding), so the first and last channels also interact.",
    equations="ECA gate omega = sigma(C1D_k(y)) and psi(C), with circular instead of zero padding",
    source_note="No paper: timm CecaModule by Chris Ha. The wrap is built with torch.cat "
    "instead of F.pad(mode='circular'), whose ONNX export was numerically wrong in the spec "
    "check.",
)
class CECA(_EcaBase):
    """Circular Efficient Channel Attention (timm variant of ECA-Net, CVPR 2020).

    Same as :class:`ECA` (Wang et al., "ECA-Net: Efficient Channel Attention for Deep
    Convolutional Neural Networks", CVPR 2020: gate and kernel rule) but the channel sequence is
    padded circularly: the last ``k // 2`` channels are prepended and the first ``k // 2``
    appended before the 1-D convolution. Source: timm ``CecaModule`` (no paper of its own).
    """

    def __init__(self, channels: int, k_size: int | None = None, gamma: int = 2, b: int = 1) -> None:
        super().__init__("ceca", channels, k_size, gamma, b)
        if self.k_size // 2 > channels:
            raise ValueError(
                f"ceca: k_size={self.k_size} wraps more than channels={channels}; "
                f"pass k_size<={2 * channels + 1}"
            )

    def _pad(self, y: Tensor, p: int) -> Tensor:
        # wrap-around built with cat: F.pad(mode="circular") exported wrong ONNX graphs (spec)
        return torch.cat([y[..., -p:], y, y[..., :p]], dim=-1)


# --------------------------------------------------------------------------------------------
# GCT / SRM
# --------------------------------------------------------------------------------------------


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


@register_attention(
    "srm",
    paper="SRM: A Style-based Recalibration Module for Convolutional Neural Networks",
    venue="ICCV",
    year=2019,
    category="channel",
    reference="hyunjaelee410/style-based-recalibration-module models/recalibration_modules.py",
    formula="4C (C x 2 CFC + BN)",
    params=lambda c, **_: 4 * c,
    summary="Re-weights channels from their style statistics (mean and standard deviation "
    "over H, W) combined by a channel-wise 2-tap FC, BatchNorm and sigmoid.",
    equations="style pooling (mean, std) and style integration (CFC, BN, sigmoid)",
)
class SRM(nn.Module):
    """Style-based Recalibration Module.

    Paper: "SRM: A Style-based Recalibration Module for Convolutional Neural Networks",
    HyunJae Lee, Hyo-Eun Kim, Hyeonseob Nam, ICCV 2019, arXiv 1903.10829. Style pooling
    ``t_c = [mean_hw(x_c), sqrt(var_hw(x_c) + 1e-5)]`` (unbiased variance, as the official
    code); channel-wise fully connected ``z_c = w_c1 mean + w_c2 std`` (C x 2 weights, init 0);
    ``out = x * sigmoid(BN(z))``. Statistics in float32. Needs H*W >= 2 (a single pixel has
    no variance). The BN over ``B x C x 1 x 1`` uses running statistics for batch 1 in
    training mode (spec rule 5.3).
    """

    min_hw = 2

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.cfc = nn.Parameter(torch.zeros(channels, 2))
        self.bn = _GuardedBatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        if h * w < 2:
            raise ValueError(
                f"srm: input {h}x{w} has a single pixel, its style std is undefined; "
                "apply srm to feature maps with H*W >= 2"
            )
        v = float32(x).flatten(2)  # B x C x HW
        mean = v.mean(2)
        std = (v.var(2, unbiased=True) + 1e-5).sqrt()
        t = torch.stack([mean, std], dim=2).to(x.dtype)  # B x C x 2
        z = (t * self.cfc).sum(2)[:, :, None, None]
        return x * torch.sigmoid(self.bn(z)).to(x.dtype)


# --------------------------------------------------------------------------------------------
# FcaNet
# --------------------------------------------------------------------------------------------

# Paper's ranked list of the 16 best single frequencies on the 7x7 grid ("top16"), (u, v).
_FCA_TOP16: tuple[tuple[int, int], ...] = (
    (0, 0), (0, 1), (6, 0), (0, 5), (0, 2), (1, 0), (1, 2), (4, 0),
    (5, 0), (1, 6), (3, 0), (0, 4), (0, 6), (0, 3), (3, 5), (2, 2),
)  # fmt: skip
_FCA_SELECTIONS = {f"top{n}": n for n in (1, 2, 4, 8, 16)}


def _dct_1d(freq: int, length: int) -> Tensor:
    pos = torch.arange(length, dtype=torch.float64)
    basis = torch.cos(math.pi * freq * (pos + 0.5) / length) / math.sqrt(length)
    return basis * math.sqrt(2.0) if freq > 0 else basis


def fca_dct_filters(channels: int, dct_size: int = 7, freq_sel: str = "top16") -> Tensor:
    """Fixed 2-D DCT filters of FcaNet, shape ``C x d x d``.

    Channel part ``i`` (of ``n`` equal parts) holds the basis of frequency ``(u_i, v_i)``
    scaled by ``d // 7``; basis value ``cos(pi f (p + 0.5) / L) / sqrt(L)``, times sqrt(2)
    for ``f > 0``.
    """
    n = _FCA_SELECTIONS[freq_sel]
    scale = dct_size // 7
    part = channels // n
    out = torch.zeros(channels, dct_size, dct_size, dtype=torch.float64)
    for i, (u, v) in enumerate(_FCA_TOP16[:n]):
        out[i * part : (i + 1) * part] = torch.outer(
            _dct_1d(u * scale, dct_size), _dct_1d(v * scale, dct_size)
        )
    return out.float()


def _adaptive_avg_matrix(size: int, out: int, ref: Tensor) -> Tensor:
    """``out x size`` matrix M with ``M @ v == adaptive_avg_pool1d(v, out)``.

    Bins as in PyTorch: ``[floor(i*size/out), ceil((i+1)*size/out))``. Built from tensor ops
    on the (traced) size, so ONNX export keeps H and W dynamic.
    """
    idx = torch.arange(out, device=ref.device)
    start = torch.div(idx * size, out, rounding_mode="floor")
    end = torch.div((idx + 1) * size + (out - 1), out, rounding_mode="floor")
    pos = torch.arange(size, device=ref.device)
    mask = (pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])
    return mask.to(ref.dtype) / (end - start).to(ref.dtype)[:, None]


@register_attention(
    "fca",
    paper="FcaNet: Frequency Channel Attention Networks",
    venue="ICCV",
    year=2021,
    category="channel",
    reference="cfzd/FcaNet model/layer.py",
    formula="2C^2/r (no bias; DCT filters are a fixed buffer)",
    params=lambda c, reduction, **_: 2 * c * (c // reduction),
    summary="SE whose squeeze uses several 2-D DCT frequencies (one per channel group) "
    "instead of only the DC component (= average pooling).",
    equations="2-D DCT basis; multi-spectral attention s = sigma(W2 delta(W1 DCT(Group(X)))), Y = s X",
    source_note="The official code resamples to the d x d DCT grid with adaptive_avg_pool2d, "
    "which cannot export with dynamic H/W; here the same resampling is an explicit pooling "
    "matrix built from the input size (identical numbers, dynamic export works). DCT filters "
    "are a fixed buffer (not counted as parameters).",
)
class FCA(nn.Module):
    """Multi-spectral channel attention of FcaNet.

    Paper: "FcaNet: Frequency Channel Attention Networks", Zequn Qin, Pengyi Zhang, Fei Wu,
    Xi Li, ICCV 2021, arXiv 2012.11879. The input is resampled to the ``d x d`` DCT grid
    (average pooling with PyTorch's adaptive bins; identity when H = W = d); the channels are
    split into ``n`` parts, part ``i`` is projected on the 2-D DCT basis of frequency
    ``(u_i, v_i)`` (the paper's 2-D DCT basis); then a bias-free SE MLP ``C -> C/r -> C``
    with ReLU and sigmoid gives ``out = x * s`` (multi-spectral channel attention).
    Frequencies are the paper's ranked "top16" list on the 7x7 grid, scaled by ``d // 7``.
    Any H, W works (the result depends on how the map is resampled to ``d x d``); the
    resampling is done in float32.

    Args:
        channels: input channels C (divisible by the number of frequencies).
        reduction: r of the MLP (16).
        dct_size: d, side of the DCT grid (7 for a plug-in; the official ResNet uses
            56/28/14/7 for its four stages).
        freq_sel: ``"top1"``, ``"top2"``, ``"top4"``, ``"top8"`` or ``"top16"``.
    """

    def __init__(
        self, channels: int, reduction: int = 16, dct_size: int = 7, freq_sel: str = "top16"
    ) -> None:
        super().__init__()
        if freq_sel not in _FCA_SELECTIONS:
            raise ValueError(
                f"fca: freq_sel={freq_sel!r} is not supported; pass one of {sorted(_FCA_SELECTIONS)}"
            )
        n = _FCA_SELECTIONS[freq_sel]
        require_divisible(
            "fca", channels, n, f"number of frequencies of freq_sel={freq_sel!r}", "pass freq_sel='top8'"
        )
        require_at_least("fca", "dct_size", dct_size, 7, "pass dct_size=7 (or a multiple of 7)")
        hidden = channels // reduction
        require_at_least(
            "fca", "channels // reduction", hidden, 1, f"pass reduction<={channels} for C={channels}"
        )
        self.dct_size = dct_size
        self.register_buffer("dct_filters", fca_dct_filters(channels, dct_size, freq_sel))
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        d = self.dct_size
        with _no_autocast(x):
            x32 = float32(x)
            ph = _adaptive_avg_matrix(x.shape[2], d, x32)  # d x H
            pw = _adaptive_avg_matrix(x.shape[3], d, x32)  # d x W
            grid = torch.matmul(torch.matmul(ph, x32), pw.t())  # B x C x d x d
            y = (grid * self.dct_filters.to(x32.dtype)).sum((2, 3), keepdim=True)
        s = torch.sigmoid(self.fc2(self.act(self.fc1(y.to(x.dtype)))))
        return x * s.to(x.dtype)


# --------------------------------------------------------------------------------------------
# NAM
# --------------------------------------------------------------------------------------------


@register_attention(
    "nam",
    paper="NAM: Normalization-based Attention Module",
    venue="NeurIPS Workshop",
    year=2021,
    category="channel",
    reference="Christian-lyc/NAM MODELS/attention.py",
    formula="2C (BN affine)",
    params=lambda c, **_: 2 * c,
    summary="Uses the BatchNorm scale factors as channel importance: each normalised channel "
    "is weighted by |gamma_c| / sum|gamma| and passed through a sigmoid gate.",
    equations="channel attention M_c = sigma(W_gamma(BN(F1))); loss with lambda * sum g(gamma)",
    source_note="Channel branch only, as the official code. The official code detaches the "
    "weights |gamma|/sum|gamma| (.data); the paper formula is differentiated by default, "
    "detach_weights=True gives the official behaviour.",
)
class NAM(nn.Module):
    """Normalization-based Attention Module, channel branch.

    Paper: "NAM: Normalization-based Attention Module", Yichao Liu, Zongru Shao, Yueyang Teng,
    Nico Hoffmann, NeurIPS 2021 Workshop (ImageNet PPF), arXiv 2111.12419.
    ``y = BN(x)``, ``w_c = |gamma_c| / sum_j |gamma_j|``, ``out = x * sigmoid(w * y)`` (channel
    attention ``M_c``).
    The paper trains with an extra loss ``lambda * sum |gamma|``, see
    :func:`nam_l1_penalty`. For a batch-1, 1x1 input in training mode the BN uses its running
    statistics (spec rule 5.3).

    Args:
        channels: input channels C.
        detach_weights: official-code variant: no gradient through ``w`` (only through BN).
    """

    def __init__(self, channels: int, detach_weights: bool = False) -> None:
        super().__init__()
        self.bn = _GuardedBatchNorm2d(channels, affine=True)
        self.detach_weights = detach_weights

    def forward(self, x: Tensor) -> Tensor:
        g = self.bn.weight.abs()
        if self.detach_weights:
            g = g.detach()
        w = (g / g.sum()).view(1, -1, 1, 1)
        return x * torch.sigmoid(w * self.bn(x)).to(x.dtype)

    def l1_penalty(self) -> Tensor:
        """``sum_c |gamma_c|`` of this module (the paper's sparsity term without lambda)."""
        return self.bn.weight.abs().sum()


def nam_l1_penalty(model: nn.Module, weight: float = 1e-4) -> Tensor:
    """NAM's training regulariser ``weight * sum |gamma|`` over every :class:`NAM` in ``model``.

    Add the result to the detection loss (the paper's sparsity penalty, lambda = 1e-4). Returns a zero tensor
    when the model contains no NAM module.
    """
    terms = [m.l1_penalty() for m in model.modules() if isinstance(m, NAM)]
    if not terms:
        p = next(model.parameters(), None)
        return torch.zeros((), device=p.device if p is not None else None)
    return weight * torch.stack(terms).sum()


# --------------------------------------------------------------------------------------------
# SK / Split attention / EPSA
# --------------------------------------------------------------------------------------------


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
                _GuardedBatchNorm2d(channels),
                nn.ReLU(inplace=True),
            )
            for m in range(paths)
        )
        self.fc = nn.Conv2d(channels, d, 1, bias=False)
        self.bn = _GuardedBatchNorm2d(d)
        self.act = nn.ReLU(inplace=True)
        self.select = nn.Conv2d(d, paths * channels, 1, bias=False)
        self.num_paths = paths

    def forward(self, x: Tensor) -> Tensor:
        u = torch.stack([p(x) for p in self.paths], dim=1)  # B x M x C x H x W
        z = self.act(self.bn(self.fc(_gap(u.sum(1)))))
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
        self.bn0 = _GuardedBatchNorm2d(channels * radix)
        self.act0 = nn.ReLU(inplace=True)
        self.fc1 = nn.Conv2d(channels, inter, 1, groups=cardinality)
        self.bn1 = _GuardedBatchNorm2d(inter)
        self.act1 = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(inter, channels * radix, 1, groups=cardinality)

    def forward(self, x: Tensor) -> Tensor:
        b, c = x.shape[:2]
        r, k = self.radix, self.cardinality
        u = self.act0(self.bn0(self.conv(x)))
        splits = u.reshape(b, r, c, u.shape[2], u.shape[3])
        g = self.act1(self.bn1(self.fc1(_gap(splits.sum(1)))))
        logits = float32(self.fc2(g))
        if r > 1:  # fc2 output is ordered (cardinal group, split, channel-in-group)
            a = torch.softmax(logits.view(b, k, r, -1), dim=2).transpose(1, 2).reshape(b, r, c, 1, 1)
        else:
            a = torch.sigmoid(logits).view(b, 1, c, 1, 1)
        return (splits * a.to(u.dtype)).sum(1)


def _epsa_params(c: int, kernels: Sequence[int], groups: Sequence[int], reduction: int, **_: object) -> int:
    n = len(kernels)
    split = c // n
    hidden = split // reduction
    convs = sum(split * (c // g) * k * k for k, g in zip(kernels, groups))
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
        kernels: kernel size of each branch (3, 5, 7, 9).
        groups: groups of each branch conv (1, 4, 8, 16).
        reduction: SE reduction (16).
        official_order: concatenate branches in the official code's reversed order.
    """

    def __init__(
        self,
        channels: int,
        kernels: Sequence[int] = (3, 5, 7, 9),
        groups: Sequence[int] = (1, 4, 8, 16),
        reduction: int = 16,
        official_order: bool = False,
    ) -> None:
        super().__init__()
        kernels, groups = tuple(int(k) for k in kernels), tuple(int(g) for g in groups)
        if len(kernels) != len(groups) or not kernels:
            raise ValueError(
                f"epsa: kernels={kernels} and groups={groups} must have the same non-zero length"
            )
        n = len(kernels)
        hint = f"pass groups=({', '.join('1' for _ in groups)}) or another C"
        for k, g in zip(kernels, groups):
            if k < 1 or k % 2 == 0:
                raise ValueError(f"epsa: kernels={kernels} must be odd; pass kernels=(3, 5, 7, 9)")
            require_divisible("epsa", channels, n * g, f"{n} branches x groups={g}", hint)
        split = channels // n
        require_at_least(
            "epsa",
            "channels // len(kernels) // reduction",
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
        return torch.sigmoid(self.se_fc2(self.se_act(self.se_fc1(_gap(t)))))

    def forward(self, x: Tensor) -> Tensor:
        feats = torch.stack([conv(x) for conv in self.convs], dim=1)  # B x n x C/n x H x W
        w = torch.stack([self._se(feats[:, i]) for i in range(feats.shape[1])], dim=1)
        a = torch.softmax(float32(w), dim=1).to(feats.dtype)
        out = feats * a
        if self.official_order:
            out = out.flip(1)
        return out.flatten(1, 2)


# --------------------------------------------------------------------------------------------
# SOCA
# --------------------------------------------------------------------------------------------


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
        with _no_autocast(x):
            v = float32(sub).flatten(2)
            v = v - v.mean(2, keepdim=True)
            cov = torch.bmm(v, v.transpose(1, 2)) / v.shape[2]
            root = _sqrtm_newton_schulz(cov, self.iterations)
            z = root.mean(1).view(b, c, 1, 1)
        s = torch.sigmoid(self.fc2(self.act(self.fc1(z.to(x.dtype)))))
        return x * s.to(x.dtype)


# --------------------------------------------------------------------------------------------
# ParNet
# --------------------------------------------------------------------------------------------


@register_attention(
    "parnet",
    paper="Non-deep Networks",
    venue="NeurIPS",
    year=2022,
    category="channel",
    reference="imankgoyal/NonDeepNetworks imagenet/timm/models/simplenet_impl/repvgg.py",
    formula="11C^2 + 6C",
    params=lambda c, **_: 11 * c * c + 6 * c,
    summary="RepVGG block (3x3 + 1x1 conv branches) whose identity branch is re-weighted by a "
    "Skip-Squeeze-Excitation gate (single C -> C FC on the pooled BN(x)), then SiLU.",
    equations="RepVGG-SSE block figure (Skip-Squeeze-Excitation)",
    source_note="A block (not a pure gate): out = SiLU(BN(conv3x3 x) + BN(conv1x1 x) + SSE(BN x)). "
    "External-Attention's ParNetAttention applies the SSE to x instead of BN(x).",
)
class ParNetSSE(nn.Module):
    """ParNet RepVGG-SSE block (stride 1, C -> C).

    Paper: "Non-deep Networks", Ankit Goyal, Alexey Bochkovskiy, Jia Deng, Vladlen Koltun,
    NeurIPS 2022, arXiv 2110.07641. ``y = BN0(x)``;
    ``out = SiLU(BN3(conv3x3(x)) + BN1(conv1x1(x)) + y * sigmoid(conv1x1_se(GAP(y))))``,
    all convs without bias (Skip-Squeeze-Excitation: a single FC, no bottleneck).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn_id = _GuardedBatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn3 = _GuardedBatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn1 = _GuardedBatchNorm2d(channels)
        self.se = nn.Conv2d(channels, channels, 1, bias=False)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn_id(x)
        sse = y * torch.sigmoid(self.se(_gap(y))).to(y.dtype)
        return self.act(self.bn3(self.conv3(x)) + self.bn1(self.conv1(x)) + sse)
