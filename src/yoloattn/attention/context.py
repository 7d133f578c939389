"""Global-context and self-attention modules: GC, Non-local, CCNet, DANet, A2-Nets, EANet.

Every module here follows one paper (spec ``attention-zoo.md`` section 3.3) and keeps that
paper's built-in residual connection, nothing more (spec rule 5.8):

* ``gc``       -- "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond",
  Cao et al., ICCV Workshops 2019, Eq. (4): ``x + W_v2 ReLU(LN(W_v1 sum_j a_j x_j))``.
* ``nonlocal`` -- "Non-local Neural Networks", Wang et al., CVPR 2018, Eqs. (1), (3), (6):
  embedded Gaussian, ``x + BN(W_z y)``.
* ``cc``       -- "CCNet: Criss-Cross Attention for Semantic Segmentation", Huang et al.,
  ICCV 2019, Eqs. (1)-(2) with recurrence R=2: ``gamma * agg + x``.
* ``danet``    -- "Dual Attention Network for Scene Segmentation", Fu et al., CVPR 2019,
  Eqs. (1)-(4): position (PAM) and channel (CAM) attention, ``alpha*.. + x`` and ``beta*.. + x``.
* ``a2``       -- "A2-Nets: Double Attention Networks", Chen et al., NeurIPS 2018, gather
  (second-order attention pooling) and distribute steps: ``x + conv(Z)``.
* ``external`` -- "Beyond Self-attention: External Attention using Two Linear Layers for Visual
  Tasks", Guo et al., TPAMI 2022: memory units ``M_k, M_v`` with double normalisation,
  ``ReLU(x + BN(conv(y)))``.

Mixed precision (spec rule 5.5): every softmax (and EANet's double normalisation) runs in
float32; dot-product energies (nonlocal, cc, danet) are also computed in float32 with autocast
disabled locally; the attention weights are cast back to the dtype of the values they
multiply. float64 stays float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yoloattn.attention._checks import float32, require_at_least
from yoloattn.attention.registry import register_attention

__all__ = [
    "GlobalContext",
    "NonLocal",
    "CrissCrossAttention",
    "DualAttention",
    "DoubleAttention",
    "ExternalAttention",
]


def _no_autocast(x: Tensor) -> torch.autocast:
    """Context that disables autocast on ``x``'s device (for float32 attention logits)."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def _softmax32(logits: Tensor, dim: int, dtype: torch.dtype) -> Tensor:
    """Softmax computed in (at least) float32, cast to ``dtype`` afterwards."""
    return float32(logits).softmax(dim).to(dtype)


def _bmm32(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` in (at least) float32 even under autocast (used for attention energies)."""
    with _no_autocast(a):
        return torch.matmul(float32(a), float32(b))


# --------------------------------------------------------------------------------------------
# gc
# --------------------------------------------------------------------------------------------

_GC_POOLING = ("att", "avg")
_GC_FUSIONS = ("add", "mul", "add+mul")


def _gc_planes(channels: int, ratio: float) -> int:
    return int(channels * ratio)


def _gc_params(c: int, ratio: float, pooling: str, fusion: str, **_: object) -> int:
    p = _gc_planes(c, ratio)
    n_fuse = len(fusion.split("+"))
    # conv_mask C->1 (biased) + per fusion: conv C->P (biased), LN(P), conv P->C (biased)
    return (c + 1 if pooling == "att" else 0) + n_fuse * (2 * c * p + 3 * p + c)


class _ContextTransform(nn.Sequential):
    """``conv1x1(C->P) -> LN([P,1,1]) -> ReLU -> conv1x1(P->C)``, last conv zero-initialised."""

    def __init__(self, channels: int, planes: int) -> None:
        super().__init__(
            nn.Conv2d(channels, planes, 1),
            nn.LayerNorm([planes, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, channels, 1),
        )
        nn.init.zeros_(self[-1].weight)
        nn.init.zeros_(self[-1].bias)


@register_attention(
    "gc",
    paper="GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond",
    venue="ICCV Workshops",
    year=2019,
    category="context",
    reference="xvjiarui/GCNet mmdet/ops/ct/context_block.py",
    params=_gc_params,
    formula="2C*P + 3P + 2C + 1, P = C*ratio (r=16: C^2/8 + 3C/16 + 2C + 1)",
    summary="Adds one query-independent global context vector (softmax attention pooling over "
    "all positions, then a LayerNorm bottleneck transform) to every position.",
    equations="Eq. (4) (GC block); pooling 'att' = global attention pooling, fusion 'add'.",
    identity_init="exact",
    source_note="Written from the paper; matches mmcv ContextBlock and timm GlobalContext "
    "(timm: LayerNorm eps 1e-6 and default ratio 1/8, we use LayerNorm eps 1e-5 and r=16).",
)
class GlobalContext(nn.Module):
    """Global Context block (GCNet, Cao et al., ICCV Workshops 2019, arXiv 1904.11492).

    Follows Eq. (4) of the paper::

        a = softmax_HW(conv1x1_{C->1}(x))                   # global attention pooling
        c = sum_hw x * a                                    # C x 1 x 1 context
        t = conv1x1_{P->C}(ReLU(LN(conv1x1_{C->P}(c))))     # bottleneck transform, P = C*ratio
        out = x + t                                         # fusion "add" (default)

    Built-in residual: yes, the paper's ``x + t`` (fusion ``"add"``). ``fusion="mul"`` gives
    ``x * sigmoid(t')`` instead and ``"add+mul"`` gives ``x * sigmoid(t') + t`` (mmcv's
    ``channel_mul``/``channel_add``). ``pooling="avg"`` replaces the attention pooling by a mean.
    The last conv of each transform is zero-initialised, so at construction the default
    module returns its input exactly.

    Args:
        channels: input channels C.
        ratio: bottleneck ratio, P = int(C * ratio) (paper r=16 -> 1/16; configs also use 1/4).
        pooling: ``"att"`` (paper) or ``"avg"``.
        fusion: ``"add"`` (paper), ``"mul"`` or ``"add+mul"``.
    """

    def __init__(
        self,
        channels: int,
        *,
        ratio: float = 1 / 16,
        pooling: str = "att",
        fusion: str = "add",
    ) -> None:
        super().__init__()
        if pooling not in _GC_POOLING:
            raise ValueError(f"gc: pooling={pooling!r} is not one of {_GC_POOLING}")
        if fusion not in _GC_FUSIONS:
            raise ValueError(f"gc: fusion={fusion!r} is not one of {_GC_FUSIONS}")
        planes = _gc_planes(channels, ratio)
        require_at_least(
            "gc",
            f"int(channels*ratio) (channels={channels}, ratio={ratio})",
            planes,
            1,
            "pass a larger ratio",
        )
        self.pooling = pooling
        self.conv_mask = nn.Conv2d(channels, 1, 1) if pooling == "att" else None
        if self.conv_mask is not None:  # official init: Kaiming (fan_in), zero bias
            nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(self.conv_mask.bias)
        self.channel_mul = _ContextTransform(channels, planes) if "mul" in fusion else None
        self.channel_add = _ContextTransform(channels, planes) if "add" in fusion else None

    def _context(self, x: Tensor) -> Tensor:
        if self.conv_mask is None:
            return x.mean((2, 3), keepdim=True)
        b, c = x.shape[:2]
        logits = self.conv_mask(x).flatten(2)  # B x 1 x HW
        attn = _softmax32(logits, -1, x.dtype)
        # B x C x HW @ B x HW x 1 -> B x C x 1
        return torch.matmul(x.flatten(2), attn.transpose(1, 2)).reshape(b, c, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        context = self._context(x)
        out = x
        if self.channel_mul is not None:
            out = out * torch.sigmoid(self.channel_mul(context))
        if self.channel_add is not None:
            out = out + self.channel_add(context)
        return out


# --------------------------------------------------------------------------------------------
# nonlocal
# --------------------------------------------------------------------------------------------


def _nonlocal_params(c: int, reduction: int, **_: object) -> int:
    i = c // reduction
    # theta, phi, g: C->i (biased); W: i->C (biased); BN(C)
    return 3 * (c * i + i) + (i * c + c) + 2 * c


@register_attention(
    "nonlocal",
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
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        src = F.max_pool2d(x, 2, 2, ceil_mode=True) if self.sub_sample else x
        theta = self.theta(x).flatten(2)  # B x i x HW
        phi = self.phi(src).flatten(2)  # B x i x N
        g = self.g(src).flatten(2)  # B x i x N
        with _no_autocast(x):
            logits = torch.matmul(float32(theta).transpose(1, 2), float32(phi)) * self.scale
            attn = logits.softmax(-1)  # B x HW x N
        y = torch.matmul(attn.to(g.dtype), g.transpose(1, 2))  # B x HW x i
        y = y.transpose(1, 2).reshape(b, self.inter_channels, h, w)
        return x + self.bn(self.w(y))


# --------------------------------------------------------------------------------------------
# cc
# --------------------------------------------------------------------------------------------


def _cc_params(c: int, reduction: int, **_: object) -> int:
    q = c // reduction
    return 2 * (c * q + q) + (c * c + c) + 1


@register_attention(
    "cc",
    paper="CCNet: Criss-Cross Attention for Semantic Segmentation",
    venue="ICCV",
    year=2019,
    category="self-attention",
    reference="speedinghzl/CCNet cc_attention/functions.py",
    params=_cc_params,
    formula="5C^2/4 + 5C/4 + 1",
    summary="Each position attends to the positions of its own row and column (criss-cross); "
    "applied twice with shared weights so every position reaches every other.",
    equations="Eq. (1) criss-cross affinity + softmax over H+W-1 positions, Eq. (2) "
    "aggregation H' = gamma * sum A Phi + H; recurrence R=2 (RCCA).",
    identity_init="exact",
    source_note="Pure PyTorch (einsum); the self position is excluded from the column branch "
    "with a -inf mask built from arange (not torch.diag) so the module exports to ONNX.",
)
class CrissCrossAttention(nn.Module):
    """Recurrent Criss-Cross Attention (CCNet, Huang et al., ICCV 2019, arXiv 1811.11721).

    Follows Eqs. (1)-(2) of the paper, applied ``recurrence`` times with shared weights::

        q, k = conv1x1_{C->C/8}(x), v = conv1x1_{C->C}(x)
        e(u, i) = q_u . k_i  for i in row(u) + column(u), the pixel itself counted once
        A = softmax over the H+W-1 criss-cross positions
        out = gamma * sum_i A(u, i) v_i + x        # gamma scalar, init 0

    Built-in residual: yes, the paper's ``+ H`` in Eq. (2), inside every recurrence
    (``out = cca(cca(x))`` for R=2). gamma starts at 0, so the freshly built module returns
    its input exactly.

    Args:
        channels: input channels C.
        reduction: query/key channels C // reduction (paper: 8).
        recurrence: number of shared-weight applications R (paper: 2).
    """

    def __init__(self, channels: int, *, reduction: int = 8, recurrence: int = 2) -> None:
        super().__init__()
        require_at_least("cc", "reduction", reduction, 1, "pass reduction=8")
        require_at_least("cc", "recurrence", recurrence, 1, "pass recurrence=2")
        qk = channels // reduction
        require_at_least(
            "cc",
            f"channels//reduction (channels={channels}, reduction={reduction})",
            qk,
            1,
            "pass a smaller reduction",
        )
        self.recurrence = recurrence
        self.query = nn.Conv2d(channels, qk, 1)
        self.key = nn.Conv2d(channels, qk, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def attend(self, x: Tensor) -> Tensor:
        """One criss-cross attention step (one recurrence)."""
        h = x.shape[2]
        q, k, v = self.query(x), self.key(x), self.value(x)
        with _no_autocast(x):
            q32, k32 = float32(q), float32(k)
            e_col = torch.einsum("bchw,bckw->bhwk", q32, k32)  # B x H x W x H
            e_row = torch.einsum("bchw,bchk->bhwk", q32, k32)  # B x H x W x W
            rows = torch.arange(h, device=x.device)
            self_mask = (rows[:, None] == rows[None, :]).unsqueeze(1)  # H x 1 x H
            e_col = e_col.masked_fill(self_mask, float("-inf"))
            attn = torch.cat([e_col, e_row], -1).softmax(-1)
        attn = attn.to(v.dtype)
        out = torch.einsum("bckw,bhwk->bchw", v, attn[..., :h])
        out = out + torch.einsum("bchk,bhwk->bchw", v, attn[..., h:])
        return self.gamma * out + x

    def forward(self, x: Tensor) -> Tensor:
        for _ in range(self.recurrence):
            x = self.attend(x)
        return x


# --------------------------------------------------------------------------------------------
# danet
# --------------------------------------------------------------------------------------------

_DANET_CAM = ("paper", "official")


def _danet_params(c: int, reduction: int, head: bool, **_: object) -> int:
    q = c // reduction
    pam = 2 * (c * q + q) + (c * c + c) + 1
    cam = 1
    extra = 2 * (9 * c * c + 2 * c) if head else 0
    return pam + cam + extra


def _conv_bn_relu3(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
    )


@register_attention(
    "danet",
    paper="Dual Attention Network for Scene Segmentation",
    venue="CVPR",
    year=2019,
    category="self-attention",
    reference="junfu1115/DANet encoding/nn/da_att.py",
    params=_danet_params,
    formula="5C^2/4 + 5C/4 + 2",
    summary="Sum of a position attention (each position attends to all positions) and a "
    "channel attention (each channel attends to all channels).",
    equations="Eqs. (1)-(2) position attention module, Eqs. (3)-(4) channel attention module; "
    "plug-in output PAM + CAM.",
    source_note="CAM energy: the paper's Eq. (3) softmax(A_i . A_j) is the default; "
    "channel_energy='official' uses the official code's softmax(max_row(E) - E) "
    "(= softmax(-E)).",
)
class DualAttention(nn.Module):
    """Dual attention, PAM + CAM (DANet, Fu et al., CVPR 2019, arXiv 1809.02983).

    Follows Eqs. (1)-(4) of the paper::

        PAM: q, k = conv1x1_{C->C/8}(x), v = conv1x1_{C->C}(x)
             S = softmax_j(q_i . k_j);  pam = alpha * (v S^T) + x        # alpha init 0
        CAM: X = x flattened (C x HW);  E = X X^T
             Att = softmax(E) (paper Eq. 3)  or softmax(max_row(E) - E) (official code)
             cam = beta * (Att X) + x                                    # beta init 0
        out = pam + cam

    Built-in residual: yes, each branch has the paper's ``+ A`` (Eqs. 2 and 4); the plug-in
    output is their sum, so the freshly built module returns ``2 x`` (not the identity).
    ``head=True`` wraps each branch with the segmentation head's 3x3 conv-BN-ReLU before the
    sum. Memory is O((HW)^2).

    Args:
        channels: input channels C.
        reduction: PAM query/key channels C // reduction (paper: 8).
        channel_energy: ``"paper"`` (softmax(E)) or ``"official"`` (softmax(max(E) - E)).
        head: add the 3x3 conv-BN-ReLU of the DANet head after each branch.
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: int = 8,
        channel_energy: str = "paper",
        head: bool = False,
    ) -> None:
        super().__init__()
        if channel_energy not in _DANET_CAM:
            raise ValueError(f"danet: channel_energy={channel_energy!r} is not one of {_DANET_CAM}")
        require_at_least("danet", "reduction", reduction, 1, "pass reduction=8")
        qk = channels // reduction
        require_at_least(
            "danet",
            f"channels//reduction (channels={channels}, reduction={reduction})",
            qk,
            1,
            "pass a smaller reduction",
        )
        self.channel_energy = channel_energy
        self.query = nn.Conv2d(channels, qk, 1)
        self.key = nn.Conv2d(channels, qk, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.alpha = nn.Parameter(torch.zeros(1))
        self.beta = nn.Parameter(torch.zeros(1))
        self.pam_head = _conv_bn_relu3(channels) if head else None
        self.cam_head = _conv_bn_relu3(channels) if head else None

    def position_attention(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q = self.query(x).flatten(2)  # B x q x N
        k = self.key(x).flatten(2)
        v = self.value(x).flatten(2)  # B x C x N
        attn = _bmm32(q.transpose(1, 2), k).softmax(-1)  # B x N x N, float32
        out = torch.matmul(v, attn.to(v.dtype).transpose(1, 2))
        return self.alpha * out.reshape(b, c, h, w) + x

    def channel_attention(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        xf = x.flatten(2)  # B x C x N
        energy = _bmm32(xf, xf.transpose(1, 2))  # B x C x C, float32
        if self.channel_energy == "official":
            energy = energy.amax(-1, keepdim=True) - energy
        attn = energy.softmax(-1)
        out = torch.matmul(attn.to(xf.dtype), xf)
        return self.beta * out.reshape(b, c, h, w) + x

    def forward(self, x: Tensor) -> Tensor:
        pam = self.position_attention(x)
        cam = self.channel_attention(x)
        if self.pam_head is not None and self.cam_head is not None:
            pam, cam = self.pam_head(pam), self.cam_head(cam)
        return pam + cam


# --------------------------------------------------------------------------------------------
# a2
# --------------------------------------------------------------------------------------------


def _a2_dims(c: int, reduction: int, c_m: int | None, c_n: int | None) -> tuple[int, int]:
    return (c_m if c_m is not None else c // reduction, c_n if c_n is not None else c // reduction)


def _a2_params(c: int, reduction: int, c_m: int | None = None, c_n: int | None = None, **_: object) -> int:
    m, n = _a2_dims(c, reduction, c_m, c_n)
    # A: C->m, B: C->n, V: C->n, reconstruct m->C; all biased
    return c * (m + 2 * n) + (m + 2 * n) + (m * c + c)


@register_attention(
    "a2",
    paper="A2-Nets: Double Attention Networks",
    venue="NeurIPS",
    year=2018,
    category="self-attention",
    reference="none",
    params=_a2_params,
    formula="C^2 + 7C/4",
    summary="Gathers c_n global descriptors by second-order attention pooling over all "
    "positions, then distributes them back to each position with a per-position softmax.",
    equations="Double attention block, Sec. 3: gather G = A softmax_HW(B)^T (second-order "
    "attention pooling), distribute Z = G softmax_n(V), out = x + conv(Z).",
    source_note="No official code; c_m = c_n = C/4 as in common implementations "
    "(External-Attention A2Atttention with reconstruct=True).",
)
class DoubleAttention(nn.Module):
    """Double attention block (A2-Nets, Chen et al., NeurIPS 2018, arXiv 1810.11579).

    Gather-distribute of Sec. 3 of the paper::

        A = conv1x1_{C->c_m}(x);  B = conv1x1_{C->c_n}(x);  V = conv1x1_{C->c_n}(x)
        G = A softmax_HW(B)^T                 # c_m x c_n global descriptors (gather)
        Z = G softmax_{c_n}(V)                # c_m x HW (distribute)
        out = x + conv1x1_{c_m->C}(Z)

    Built-in residual: yes, the paper's block output is added to its input. No zero
    initialisation is specified, so the module is not the identity at construction.

    Args:
        channels: input channels C.
        reduction: c_m = c_n = C // reduction unless given (default 4).
        c_m: number of feature channels gathered (overrides ``reduction``).
        c_n: number of attention maps / global descriptors (overrides ``reduction``).
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: int = 4,
        c_m: int | None = None,
        c_n: int | None = None,
    ) -> None:
        super().__init__()
        require_at_least("a2", "reduction", reduction, 1, "pass reduction=4")
        m, n = _a2_dims(channels, reduction, c_m, c_n)
        require_at_least("a2", f"c_m (channels={channels})", m, 1, "pass c_m or a smaller reduction")
        require_at_least("a2", f"c_n (channels={channels})", n, 1, "pass c_n or a smaller reduction")
        self.c_m, self.c_n = m, n
        self.conv_a = nn.Conv2d(channels, m, 1)
        self.conv_b = nn.Conv2d(channels, n, 1)
        self.conv_v = nn.Conv2d(channels, n, 1)
        self.conv_z = nn.Conv2d(m, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        feats = self.conv_a(x).flatten(2)  # B x m x N
        maps = self.conv_b(x).flatten(2)  # B x n x N
        vecs = self.conv_v(x).flatten(2)  # B x n x N
        maps = _softmax32(maps, -1, feats.dtype)  # attention maps over positions
        vecs = _softmax32(vecs, 1, feats.dtype)  # attention vectors over the n descriptors
        g = torch.matmul(feats, maps.transpose(1, 2))  # B x m x n
        z = torch.matmul(g, vecs).reshape(b, self.c_m, h, w)  # B x m x H x W
        return x + self.conv_z(z)


# --------------------------------------------------------------------------------------------
# external
# --------------------------------------------------------------------------------------------


def _external_params(c: int, units: int, **_: object) -> int:
    # conv_in C->C (biased), M_k C->S, M_v S->C (no bias), conv_out C->C (no bias), BN(C)
    return (c * c + c) + 2 * units * c + c * c + 2 * c


@register_attention(
    "external",
    paper="Beyond Self-attention: External Attention using Two Linear Layers for Visual Tasks",
    venue="TPAMI",
    year=2022,
    category="self-attention",
    reference="MenghaoGuo/EANet model_torch.py",
    params=_external_params,
    formula="2C^2 + 2SC + 3C (S=64: 2C^2 + 131C)",
    summary="Each position attends to S learned external memory units shared by all samples "
    "(two linear layers with double normalisation), linear in H*W.",
    equations="External attention A = Norm(F M_k^T), F_out = A M_v with double normalisation "
    "(softmax over positions, then l1 over the S units); EANet block ReLU(x + BN(conv(y))).",
    source_note="Written from the paper; M_v is initialised to M_k^T as in the official code "
    "(an init tie, the weights are independent).",
)
class ExternalAttention(nn.Module):
    """External attention block (EANet, Guo et al., TPAMI 2022, arXiv 2105.02358).

    Follows the paper's external attention with double normalisation::

        y = conv1x1_{C->C}(x)                          # biased
        a = M_k y                                      # S x HW, no bias
        a = softmax_HW(a);  a = a / sum_S(a)           # double normalisation
        y = M_v^T a                                    # C x HW, no bias
        out = ReLU(x + BN(conv1x1_{C->C}(y)))          # conv without bias

    Built-in residual: yes, the official block's ``ReLU(x + BN(...))``; the final ReLU means
    the module is never the identity for negative inputs.

    Args:
        channels: input channels C.
        units: number of memory units S (paper: 64).
    """

    def __init__(self, channels: int, *, units: int = 64) -> None:
        super().__init__()
        require_at_least("external", "units", units, 1, "pass units=64")
        self.conv_in = nn.Conv2d(channels, channels, 1)
        self.mk = nn.Conv1d(channels, units, 1, bias=False)
        self.mv = nn.Conv1d(units, channels, 1, bias=False)
        with torch.no_grad():
            self.mv.weight.copy_(self.mk.weight.permute(1, 0, 2))
        self.conv_out = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        y = self.conv_in(x).flatten(2)  # B x C x N
        logits = self.mk(y)  # B x S x N
        attn = float32(logits).softmax(-1)  # over positions
        attn = attn / (1e-9 + attn.sum(1, keepdim=True))  # l1 over the S units
        y = self.mv(attn.to(y.dtype)).reshape(b, c, h, w)
        return F.relu(x + self.bn(self.conv_out(y)))
