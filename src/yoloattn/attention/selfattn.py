"""Self-attention family: local, sparse, global and MLP-style token mixers.

Every module follows one paper (spec ``attention-zoo.md`` section 3.3; class docstrings cite
title, venue, year and equations):

* ``cot``     -- "Contextual Transformer Networks for Visual Recognition", Li et al.,
  TPAMI 2022: static context (grouped 3x3 conv) + dynamic context (k x k local attention whose
  weights are generated from ``[x, static]``), fused by radix-2 split attention.
* ``bra``     -- "BiFormer: Vision Transformer with Bi-Level Routing Attention", Zhu et al.,
  CVPR 2023: region-level top-k routing, then token attention over the routed regions,
  plus the local context enhancement ``DW3x3(v)``.
* ``mhsa``    -- "Bottleneck Transformers for Visual Recognition", Srinivas et al., CVPR 2021:
  global multi-head self-attention with 2-D relative position logits (size dependent).
* ``acmix``   -- "On the Integration of Self-Attention and Convolution", Pan et al., CVPR 2022:
  shared 1x1 projections feeding a windowed self-attention path and a shift-convolution path,
  ``alpha * att + beta * conv``.
* ``outlook`` -- "VOLO: Vision Outlooker for Visual Recognition", Yuan et al., TPAMI 2022:
  outlook attention, per-position generated ``k^2 x k^2`` attention over a k x k window.
* ``s2mlp``   -- "S2-MLPv2: Improved Spatial-Shift MLP Architecture for Vision", Yu et al.,
  arXiv 2021: spatial-shift MLP with split attention over three branches.

Shared numerics:

* Attention logits and softmaxes run in float32 with autocast disabled locally and the
  weights are cast back to the dtype of the values they multiply (spec rule 5.5); float64
  stays float64.
* k x k neighbourhoods are gathered with ``F.unfold`` (exports to ONNX as Im2Col-like ops);
  the overlap-add of outlook attention (``F.fold``, i.e. ``col2im``, which needs opset 18) is
  written as a sum of ``k^2`` shifted slices, so every module of this file exports to ONNX at
  opset 17 with dynamic H and W.
* BatchNorms (``cot``) tolerate a batch-1 training forward on pooled ``1 x 1`` statistics by
  using their running statistics in that case (spec rule 5.3).
* None of these modules adds a residual connection: each returns exactly its paper operator's
  output (spec rule 5.8); they replace a 3x3 conv / token mixer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yoloattn.attention._checks import float32, require_at_least, require_divisible
from yoloattn.attention.registry import register_attention

__all__ = [
    "CoT",
    "BiLevelRoutingAttention",
    "BoTMHSA",
    "ACmix",
    "OutlookAttention",
    "S2MLPv2",
    "spatial_shift",
    "overlap_add",
]


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------


def _no_autocast(x: Tensor) -> torch.autocast:
    """Context that disables autocast on ``x``'s device (for float32 attention logits)."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def _softmax32(logits: Tensor, dim: int, dtype: torch.dtype, scale: float = 1.0) -> Tensor:
    """``softmax(logits * scale)`` computed in (at least) float32, cast to ``dtype`` afterwards."""
    with _no_autocast(logits):
        return (float32(logits) * scale).softmax(dim).to(dtype)


class _GuardedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that tolerates one value per channel in training mode (spec rule 5.3).

    With ``N * H * W == 1`` batch statistics do not exist; the layer then normalises with its
    running statistics without updating them, as in eval mode. Otherwise a plain BatchNorm2d.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


def _require_odd(module: str, name: str, value: int) -> None:
    if value < 1 or value % 2 == 0:
        raise ValueError(f"{module}: {name}={value} must be a positive odd number; pass {name}=3")


def overlap_add(cols: Tensor, kernel_size: int) -> Tensor:
    """Sum k x k window contributions back onto the grid (``F.fold`` at stride 1, 'same' pad).

    ``cols`` is ``B x C x k^2 x H x W``: ``cols[:, :, i*k + j, y, x]`` is the contribution of
    the window centred at ``(y, x)`` to pixel ``(y + i - k//2, x + j - k//2)``. The result
    equals ``F.fold(cols.reshape(B, C*k*k, H*W), (H, W), k, padding=k//2)`` but is built from
    padding and slices only, so it exports to ONNX below opset 18 (no ``col2im``).
    """
    b, c, k2, h, w = cols.shape
    k = kernel_size
    pad = k // 2
    padded = F.pad(cols.reshape(b, c * k2, h, w), (pad, pad, pad, pad)).reshape(
        b, c, k2, h + 2 * pad, w + 2 * pad
    )
    out = None
    for i in range(k):
        for j in range(k):
            part = padded[:, :, i * k + j, 2 * pad - i : 2 * pad - i + h, 2 * pad - j : 2 * pad - j + w]
            out = part if out is None else out + part
    assert out is not None
    return out


# --------------------------------------------------------------------------------------------
# cot
# --------------------------------------------------------------------------------------------


def _cot_attn_channels(c: int) -> int:
    return max(c * 2 // 4, 32)  # radix 2, reduction factor 4, at least 32 (official)


def _cot_params(
    c: int, kernel_size: int, share_planes: int, factor: int, key_groups: int, **_: object
) -> int:
    k2 = kernel_size**2
    mid = c // factor
    wch = k2 * c // share_planes
    a = _cot_attn_channels(c)
    key = c * (c // key_groups) * k2 + 2 * c  # grouped kxk conv (no bias) + BN
    embed = 2 * c * mid + 2 * mid + (mid * wch + wch) + 2 * wch  # conv+BN, conv (biased), GN
    value = c * c + 2 * c  # conv1x1 (no bias) + BN
    bn = 2 * c  # BN after the local aggregation
    split = (c * a + a) + 2 * a + (a * 2 * c + 2 * c)  # conv (biased), BN, conv (biased)
    return key + embed + value + bn + split


@register_attention(
    "cot",
    paper="Contextual Transformer Networks for Visual Recognition",
    venue="TPAMI",
    year=2022,
    category="self-attention",
    reference="JDAI-CV/CoTNet models/cotnet.py",
    params=_cot_params,
    formula="101C^2/16 + 111C/8 (k=3, share_planes 8, factor 2, key groups 4, C >= 64)",
    summary="Local k x k self-attention whose per-pixel weights are generated from the query and "
    "a static (3x3 conv) key context; static and dynamic contexts fused by split attention.",
    equations="Sec. 3.2 / Fig. 2 (CoT block): static key K1 = conv3x3(X), A = [K1, Q] W_theta "
    "W_delta, K2 = local aggregation of V with A; output = radix-2 fusion of K1 and K2 "
    "(official CotLayer).",
    source_note="Follows the official CotLayer (Apache-2.0); the CuPy LocalConvolution is "
    "rewritten with F.unfold; channel c uses dynamic kernel c mod (C/share_planes) as in the "
    "official aggregation kernel.",
)
class CoT(nn.Module):
    """Contextual Transformer (CoT) block (Li et al., TPAMI 2022, arXiv 2107.12292).

    Follows the CoT block of the paper (Sec. 3.2, Fig. 2) as in the official ``CotLayer``::

        k1 = ReLU(BN(conv_kxk groups=4 (x)))                       # static context
        w  = GN(conv1x1_{C/2 -> k^2 C/8}(ReLU(BN(conv1x1_{2C->C/2}([x, k1])))))
        v  = BN(conv1x1(x))
        k2[c] = SiLU(BN(sum_{j in kxk} w[c mod C/8, j] * v[c, neighbour j]))   # dynamic context
        a  = softmax_radix(conv(ReLU(BN(conv(GAP(k1 + k2))))))    # radix-2 split attention
        out = a_0 * k2 + a_1 * k1

    No residual connection: the block replaces a 3x3 convolution (spec rule 5.8).

    Args:
        channels: input channels C (divisible by ``share_planes`` and ``key_groups``).
        kernel_size: local window k (paper: 3).
        share_planes: channels sharing one dynamic kernel (C/share_planes kernels, paper 8).
        factor: reduction of the weight-generation bottleneck (paper: 2).
        key_groups: groups of the static k x k key conv (official: 4).
    """

    def __init__(
        self,
        channels: int,
        *,
        kernel_size: int = 3,
        share_planes: int = 8,
        factor: int = 2,
        key_groups: int = 4,
    ) -> None:
        super().__init__()
        _require_odd("cot", "kernel_size", kernel_size)
        require_at_least("cot", "factor", factor, 1, "pass factor=2")
        require_divisible("cot", channels, share_planes, "share_planes", "pass share_planes=8 (or a divisor)")
        require_divisible("cot", channels, key_groups, "key_groups", "pass key_groups=4 (or a divisor)")
        mid = channels // factor
        require_at_least("cot", f"channels//factor (channels={channels})", mid, 1, "pass a smaller factor")
        k, c = kernel_size, channels
        self.kernel_size = k
        self.share_planes = share_planes
        self.key_embed = nn.Sequential(
            nn.Conv2d(c, c, k, padding=k // 2, groups=key_groups, bias=False),
            _GuardedBatchNorm2d(c),
            nn.ReLU(inplace=True),
        )
        wch = k * k * c // share_planes
        self.embed = nn.Sequential(
            nn.Conv2d(2 * c, mid, 1, bias=False),
            _GuardedBatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, wch, 1),
            nn.GroupNorm(c // share_planes, wch),
        )
        self.value = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), _GuardedBatchNorm2d(c))
        self.bn = _GuardedBatchNorm2d(c)
        self.act = nn.SiLU(inplace=True)
        a = _cot_attn_channels(c)
        self.split = nn.Sequential(
            nn.Conv2d(c, a, 1),
            _GuardedBatchNorm2d(a),
            nn.ReLU(inplace=True),
            nn.Conv2d(a, 2 * c, 1),
        )

    def dynamic_context(self, x: Tensor, k1: Tensor) -> Tensor:
        """``k2 = SiLU(BN(local_agg(v, w)))`` with per-pixel kernels generated from [x, k1]."""
        b, c, h, w = x.shape
        k2 = self.kernel_size**2
        groups = c // self.share_planes
        weights = self.embed(torch.cat([x, k1], 1)).reshape(b, 1, groups, k2, h, w)
        v = self.value(x)
        cols = F.unfold(v, self.kernel_size, padding=self.kernel_size // 2)
        # channel c = s * groups + g uses kernel g = c mod groups (strided sharing, official)
        cols = cols.reshape(b, self.share_planes, groups, k2, h, w)
        agg = (cols * weights.to(cols.dtype)).sum(3).reshape(b, c, h, w)
        return self.act(self.bn(agg))

    def forward(self, x: Tensor) -> Tensor:
        b, c = x.shape[:2]
        k1 = self.key_embed(x)
        k2 = self.dynamic_context(x, k1)
        gap = float32(k1 + k2).mean((2, 3), keepdim=True).to(k1.dtype)
        logits = self.split(gap).reshape(b, c, 2, 1, 1)  # channel index c*2 + r (official view)
        attn = _softmax32(logits, 2, k2.dtype)
        return k2 * attn[:, :, 0] + k1 * attn[:, :, 1]


# --------------------------------------------------------------------------------------------
# bra
# --------------------------------------------------------------------------------------------


def _bra_params(c: int, side_kernel: int, **_: object) -> int:
    lce = side_kernel * side_kernel * c + c if side_kernel > 0 else 0
    return (3 * c * c + 3 * c) + lce + (c * c + c)


@register_attention(
    "bra",
    paper="BiFormer: Vision Transformer with Bi-Level Routing Attention",
    venue="CVPR",
    year=2023,
    category="self-attention",
    reference="rayleizhu/BiFormer ops/bra_nchw.py",
    params=_bra_params,
    formula="4C^2 + 14C (qkv C->3C and output 1x1 biased, LCE DW3x3 biased)",
    summary="Each region of an n_win x n_win grid routes to its top-k most related regions; its "
    "tokens attend only to the tokens of those regions, plus a depthwise local context.",
    equations="Sec. 3.2, Eqs. (1)-(6): region descriptors by averaging Q and K per region, "
    "region adjacency A_r = Q_r K_r^T, top-k index I_r, gather K/V, token attention, "
    "O = Attention(Q, K_g, V_g) + LCE(V).",
    size_dependent=True,
    fixed_size=(14, 14),
    source_note="Regions: always an n_win x n_win grid of ceil(H/n_win) x ceil(W/n_win) "
    "tokens; other sizes are zero-padded to that grid and cropped back, with padded tokens "
    "excluded from the region means, the routing and the attention (the official nchw "
    "version pads without masking and uses floor(H/n_win) regions). At multiples of n_win "
    "this is exactly the official computation. Scale C^-0.5 as in the official code.",
)
class BiLevelRoutingAttention(nn.Module):
    """Bi-Level Routing Attention (BiFormer, Zhu et al., CVPR 2023, arXiv 2303.08810).

    Follows Sec. 3.2 (Eqs. 1-6) of the paper, NCHW layout as the official ``bra_nchw``::

        q, k, v = conv1x1_{C->3C}(x)                      # biased
        split the map into S x S regions (S = n_win)
        Q_r, K_r = per-region means of q, k (detached: no gradient through routing)
        I_r = topk(Q_r K_r^T, topk)                       # routed regions per region
        per head: softmax(q . K_g * C^-0.5) V_g           # K_g, V_g: tokens of the routed regions
        out = conv1x1(attn + DW_kxk(v))                   # LCE, both convs biased

    Size handling: the S x S grid is fixed; a region holds ``ceil(H/S) x ceil(W/S)`` tokens.
    Sizes that are not multiples of S are zero-padded at the bottom/right and cropped back;
    padded tokens are masked out of the region means, the routing and the attention, so any
    H, W >= 1 works. At multiples of S (e.g. 14x14 with S=7) no padding occurs and the result
    is the official one. YOLO P3-P5 sizes at 640 (80, 40, 20) are not multiples of 7: pass
    ``n_win=5`` or ``10`` to avoid padding.

    No residual connection (spec rule 5.8).

    Args:
        channels: input channels C (divisible by ``heads``).
        heads: attention heads (paper: 8).
        n_win: regions per side S (paper: 7).
        topk: regions each region attends to (paper default 4; at most ``n_win**2``).
        side_kernel: kernel of the depthwise local context enhancement (0 disables it).
    """

    small_hyper = {"heads": 4}

    def __init__(
        self,
        channels: int,
        *,
        heads: int = 8,
        n_win: int = 7,
        topk: int = 4,
        side_kernel: int = 3,
    ) -> None:
        super().__init__()
        require_at_least("bra", "heads", heads, 1, "pass heads=8")
        require_divisible("bra", channels, heads, "heads", "pass heads dividing channels, e.g. heads=4")
        require_at_least("bra", "n_win", n_win, 1, "pass n_win=7")
        require_at_least("bra", "topk", topk, 1, "pass topk=4")
        if topk > n_win * n_win:
            raise ValueError(f"bra: topk={topk} must be <= n_win**2={n_win * n_win}; pass a smaller topk")
        if side_kernel != 0:
            _require_odd("bra", "side_kernel", side_kernel)
        self.heads = heads
        self.n_win = n_win
        self.topk = topk
        self.scale = channels**-0.5
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.lepe = (
            nn.Conv2d(channels, channels, side_kernel, padding=side_kernel // 2, groups=channels)
            if side_kernel > 0
            else None
        )
        self.out = nn.Conv2d(channels, channels, 1)

    def _to_regions(self, t: Tensor, rh: Tensor | int, rw: Tensor | int) -> Tensor:
        """``B x C x S*rh x S*rw`` -> ``B x S^2 x (rh*rw) x C``, regions row-major."""
        b, c = t.shape[:2]
        s = self.n_win
        t = t.reshape(b, c, s, rh, s, rw).permute(0, 2, 4, 3, 5, 1)
        return t.reshape(b, s * s, rh * rw, c)

    def route(self, q: Tensor, k: Tensor, valid: Tensor) -> Tensor:
        """Top-k region indices ``B x S^2 x topk`` from region-mean q/k (no gradient).

        ``q``, ``k``: ``B x S^2 x T x C`` region tokens; ``valid``: ``1 x S^2 x T x 1`` mask.
        """
        with _no_autocast(q):
            q, k, m = float32(q.detach()), float32(k.detach()), float32(valid)
            count = m.sum(2)  # 1 x S^2 x 1
            q_r = (q * m).sum(2) / count.clamp(min=1)
            k_r = (k * m).sum(2) / count.clamp(min=1)
            affinity = torch.matmul(q_r, k_r.transpose(1, 2))  # B x S^2 x S^2
            affinity = affinity.masked_fill(count.transpose(1, 2) == 0, float("-inf"))
            return torch.topk(affinity, self.topk, dim=-1).indices

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        s, heads = self.n_win, self.heads
        d = c // heads
        q, k, v = self.qkv(x).chunk(3, 1)
        rh, rw = (h + s - 1) // s, (w + s - 1) // s
        pad = (0, rw * s - w, 0, rh * s - h)
        valid = F.pad(torch.ones_like(x[:1, :1]), pad)  # 1 x 1 x S*rh x S*rw
        qr, kr, vr = (self._to_regions(F.pad(t, pad), rh, rw) for t in (q, k, v))
        mask = self._to_regions(valid, rh, rw)  # 1 x S^2 x T x 1
        idx = self.route(qr, kr, mask)  # B x S^2 x topk
        t = qr.shape[2]
        # gather the tokens of the routed regions: B x S^2 x topk*T x C
        flat = idx + torch.arange(b, device=x.device).reshape(b, 1, 1) * (s * s)
        kg = kr.reshape(b * s * s, t, c)[flat].reshape(b, s * s, self.topk * t, heads, d)
        vg = vr.reshape(b * s * s, t, c)[flat].reshape(b, s * s, self.topk * t, heads, d)
        mg = mask.reshape(s * s, t)[idx].reshape(b, s * s, 1, 1, self.topk * t)
        qh = qr.reshape(b, s * s, t, heads, d)
        with _no_autocast(x):
            logits = torch.einsum("brthd,brjhd->brhtj", float32(qh), float32(kg)) * self.scale
            logits = logits.masked_fill(mg == 0, float("-inf"))
            attn = logits.softmax(-1).to(vg.dtype)
        o = torch.einsum("brhtj,brjhd->brthd", attn, vg)  # B x S^2 x T x heads x d
        o = o.reshape(b, s, s, rh, rw, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, s * rh, s * rw)
        o = o[:, :, :h, :w]
        if self.lepe is not None:
            o = o + self.lepe(v)
        return self.out(o)


# --------------------------------------------------------------------------------------------
# mhsa
# --------------------------------------------------------------------------------------------

_MHSA_POS = ("rel", "abs")
_MHSA_RESIZE = ("error", "interpolate")


def _mhsa_params(c: int, heads: int, height: int, width: int, pos: str, **_: object) -> int:
    if pos == "abs":
        return 3 * c * c + 3 * c + c * (height + width)
    d = c // heads
    return 3 * c * c + d * (2 * height - 1 + 2 * width - 1)


def _resize_table(table: Tensor, length: Tensor | int) -> Tensor:
    """Linearly resample an ``L x d`` table along L to ``length`` rows (end points aligned)."""
    return F.interpolate(table.t().unsqueeze(0), size=length, mode="linear", align_corners=True)[0].t()


def _rel_to_abs(table: Tensor, n: Tensor | int) -> Tensor:
    """``(2n-1) x d`` relative table -> ``n x n x d`` with ``[i, j] = table[j - i + n - 1]``."""
    pos = torch.arange(n, device=table.device)
    return table[pos.reshape(1, -1) - pos.reshape(-1, 1) + (n - 1)]


@register_attention(
    "mhsa",
    paper="Bottleneck Transformers for Visual Recognition",
    venue="CVPR",
    year=2021,
    category="self-attention",
    reference="rwightman/pytorch-image-models timm/layers/bottleneck_attn.py",
    params=_mhsa_params,
    formula="3C^2 + d(2H-1 + 2W-1), d = C/heads (pos='abs': 3C^2 + 3C + C(H+W))",
    summary="Global multi-head self-attention over all positions with content-content and "
    "content-position (2-D relative) logits, as in the BoTNet bottleneck.",
    equations="Fig. 4 (MHSA layer): softmax(q k^T / sqrt(d) + q r^T) v with r the sum of "
    "height and width relative embeddings (relative logits of Attention Augmented Conv, "
    "as in the official TF gist).",
    size_dependent=True,
    fixed_size=(14, 14),
    source_note="Relative tables (2H-1) x d and (2W-1) x d shared across heads, as in the "
    "official TF gist and timm BottleneckAttn (logits q.k/sqrt(d) + q.r, the position term "
    "unscaled as in timm's default). Built for height x width; other sizes raise unless "
    "resize='interpolate' (tables linearly resampled; not in the paper).",
)
class BoTMHSA(nn.Module):
    """MHSA layer of the Bottleneck Transformer (Srinivas et al., CVPR 2021, arXiv 2101.11605).

    Follows the MHSA layer of Fig. 4 of the paper::

        q, k, v = conv1x1_{C->C}(x)  (no bias), split into ``heads`` heads of d = C/heads
        logits[(y,x),(y',x')] = q.k / sqrt(d) + q.R_h[y'-y] + q.R_w[x'-x]    # pos="rel"
        out = softmax(logits) v                                             # no projection

    ``R_h`` ((2H-1) x d) and ``R_w`` ((2W-1) x d) are shared by all heads. ``pos="abs"``
    instead adds learnable absolute height (C x H) and width (C x W) embeddings to the keys
    (the variant found in most YOLO repositories, with biased q/k/v):
    ``q.k / sqrt(d) + q.(P_h[y'] + P_w[x'])``.

    Size dependence: the tables are sized for ``height x width`` (e.g. 20x20 for P5 at 640).
    By default (``resize="error"``) any other input size raises a ValueError naming the built
    size; ``resize="interpolate"`` linearly resamples the tables to the input size instead
    (an adaptation for multi-scale/rectangular inference, not part of the paper).

    No residual connection; no output projection (the BoT block has none; spec rule 5.8).

    Args:
        channels: input channels C (divisible by ``heads``).
        heads: attention heads (paper: 4).
        height: input height H the position tables are built for (paper: 14 at 224 input).
        width: input width W the position tables are built for.
        pos: ``"rel"`` (paper) or ``"abs"``.
        resize: ``"error"`` (default) or ``"interpolate"`` for inputs of another size.
    """

    def __init__(
        self,
        channels: int,
        *,
        heads: int = 4,
        height: int = 14,
        width: int = 14,
        pos: str = "rel",
        resize: str = "error",
    ) -> None:
        super().__init__()
        if pos not in _MHSA_POS:
            raise ValueError(f"mhsa: pos={pos!r} is not one of {_MHSA_POS}")
        if resize not in _MHSA_RESIZE:
            raise ValueError(f"mhsa: resize={resize!r} is not one of {_MHSA_RESIZE}")
        require_at_least("mhsa", "heads", heads, 1, "pass heads=4")
        require_divisible("mhsa", channels, heads, "heads", "pass heads dividing channels, e.g. heads=4")
        require_at_least("mhsa", "height", height, 1, "pass the feature-map height, e.g. height=20")
        require_at_least("mhsa", "width", width, 1, "pass the feature-map width, e.g. width=20")
        self.heads = heads
        self.height, self.width = height, width
        self.pos = pos
        self.resize = resize
        d = channels // heads
        self.scale = d**-0.5
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=pos == "abs")
        if pos == "rel":
            self.height_rel = nn.Parameter(torch.randn(2 * height - 1, d) * self.scale)
            self.width_rel = nn.Parameter(torch.randn(2 * width - 1, d) * self.scale)
        else:
            self.height_abs = nn.Parameter(torch.randn(heads, d, height, 1) * self.scale)
            self.width_abs = nn.Parameter(torch.randn(heads, d, 1, width) * self.scale)

    def _check_size(self, h: int, w: int) -> bool:
        """True when the tables must be resampled; raises in ``resize="error"`` mode."""
        if h == self.height and w == self.width:
            return False
        if self.resize == "error":
            raise ValueError(
                f"mhsa: built for {self.height}x{self.width} inputs (height={self.height}, "
                f"width={self.width}) but got {h}x{w}; build it with height={h}, width={w} "
                "or pass resize='interpolate'"
            )
        return True

    def position_logits(self, q: Tensor, h: int, w: int, resample: bool) -> Tensor:
        """Content-position logits ``B x heads x HW x HW`` for queries ``B x heads x H x W x d``."""
        b = q.shape[0]
        if self.pos == "rel":
            th, tw = self.height_rel, self.width_rel
            if resample:
                th, tw = _resize_table(th, 2 * h - 1), _resize_table(tw, 2 * w - 1)
            rh, rw = _rel_to_abs(float32(th), h), _rel_to_abs(float32(tw), w)  # H x H x d, W x W x d
            lh = torch.einsum("bnyxd,ykd->bnyxk", q, rh)  # key row y'
            lw = torch.einsum("bnyxd,xld->bnyxl", q, rw)  # key column x'
            logits = lh.unsqueeze(-1) + lw.unsqueeze(-2)  # B x n x H x W x H x W
            return logits.reshape(b, self.heads, h * w, h * w)
        ph, pw = self.height_abs, self.width_abs
        if resample:
            ph = F.interpolate(ph, size=(h, 1), mode="bilinear", align_corners=True)
            pw = F.interpolate(pw, size=(1, w), mode="bilinear", align_corners=True)
        p = float32(ph + pw).flatten(2)  # heads x d x HW
        return torch.einsum("bnyxd,ndk->bnyxk", q, p).reshape(b, self.heads, h * w, h * w)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        resample = self._check_size(h, w)
        d = c // self.heads
        q, k, v = self.qkv(x).reshape(b, 3, self.heads, d, h * w).unbind(1)  # B x n x d x HW
        with _no_autocast(x):
            q32, k32 = float32(q), float32(k)
            logits = torch.matmul(q32.transpose(-1, -2), k32) * self.scale  # B x n x HW x HW
            q_grid = q32.transpose(-1, -2).reshape(b, self.heads, h, w, d)
            logits = logits + self.position_logits(q_grid, h, w, resample)
            attn = logits.softmax(-1).to(v.dtype)
        out = torch.matmul(v, attn.transpose(-1, -2))  # B x n x d x HW
        return out.reshape(b, c, h, w)


# --------------------------------------------------------------------------------------------
# acmix
# --------------------------------------------------------------------------------------------


def _acmix_params(c: int, heads: int, kernel_att: int, kernel_conv: int, **_: object) -> int:
    d = c // heads
    kc2 = kernel_conv * kernel_conv
    qkv = 3 * (c * c + c)
    pe = 2 * d + d  # conv 2 -> d, biased
    fc = 3 * heads * kc2  # no bias
    dep = c * kc2 * kc2 + c  # grouped conv (groups d): C x kc^2 x kc x kc, biased
    return qkv + pe + fc + dep + 2  # + alpha, beta


def _coordinate_grid(x: Tensor, dtype: torch.dtype) -> Tensor:
    """``1 x 2 x H x W`` grid in [-1, 1], channel 0 = x (width), 1 = y (official ``position``).

    Built from ``arange`` so it follows dynamic H, W in ONNX; a size-1 axis gives -1 like
    ``torch.linspace(-1, 1, 1)``.
    """
    h, w = x.shape[2], x.shape[3]
    ys = torch.arange(h, device=x.device, dtype=dtype)
    xs = torch.arange(w, device=x.device, dtype=dtype)
    ys = ys / ys[-1:].clamp(min=1) * 2 - 1
    xs = xs / xs[-1:].clamp(min=1) * 2 - 1
    gx = xs.reshape(1, 1, 1, -1) + torch.zeros_like(ys).reshape(1, 1, -1, 1)
    gy = ys.reshape(1, 1, -1, 1) + torch.zeros_like(xs).reshape(1, 1, 1, -1)
    return torch.cat([gx, gy], 1)


@register_attention(
    "acmix",
    paper="On the Integration of Self-Attention and Convolution",
    venue="CVPR",
    year=2022,
    category="self-attention",
    reference="LeapLabTHU/ACmix ResNet/test_bottleneck.py",
    params=_acmix_params,
    formula="3C^2 + 343C/4 + 110 (heads 4, kernel_att 7, kernel_conv 3)",
    summary="Shares one set of 1x1 q/k/v projections between a local-window self-attention "
    "path (k_att x k_att) and a shift-convolution path, mixed by learnable scalars.",
    equations="Sec. 3.3 / Fig. 2: stage I shared 1x1 projections; stage II attention path "
    "(Eq. 2-3 with relative coordinate encoding) and convolution path (shift + sum, Eq. 12-13); "
    "F_out = alpha F_att + beta F_conv.",
    source_note="Follows the official ACmix class (no licence file; written from the paper and "
    "the spec). The grouped conv keeps its bias, zero-initialised (the official code sets it "
    "to None: C fewer parameters, same function at init). conv_p's bias cancels in "
    "pe - unfold(pe) exactly as in the official code, so it has no effect on the output. "
    "Export: unfold + reflection pad, risky on TensorRT/mobile runtimes.",
)
class ACmix(nn.Module):
    """ACmix: mixed self-attention and convolution (Pan et al., CVPR 2022, arXiv 2111.14556).

    Follows Sec. 3.3 / Fig. 2 of the paper (official ``ACmix`` at stride 1)::

        q, k, v = conv1x1(x) (three biased 1x1 convs, shared by both paths)
        pe = conv1x1_{2->d}(coordinate grid in [-1, 1])           # d = C/heads
        att:  per head, window k_att x k_att (reflection padded):
              w = softmax_window(q * d^-0.5 . (unfold(k) + pe - unfold(pe)))
              F_att = sum_window w * unfold(v)
        conv: f = fc1x1_{3h -> kc^2}([q, k, v] heads stacked)    # no bias
              F_conv = grouped conv kc x kc (groups d, shift-kernel init, zero bias)(f)
        out = alpha * F_att + beta * F_conv                        # alpha = beta = 0.5 at init

    Reflection padding needs ``H, W > kernel_att // 2`` (3 at the default 7): smaller maps
    raise a ValueError (``min_hw = 4``). No residual connection (spec rule 5.8).

    Args:
        channels: input channels C (divisible by ``heads``).
        heads: attention heads (paper: 4).
        kernel_att: attention window (paper: 7).
        kernel_conv: kernel of the convolution path (paper: 3).
    """

    min_hw = 4
    #: parameters kept for the paper's count that provably do not affect the output
    #: (conv_p's bias cancels in pe - unfold(pe)); the contract test skips their gradient check.
    inactive_parameters = ("conv_p.bias",)

    def __init__(
        self,
        channels: int,
        *,
        heads: int = 4,
        kernel_att: int = 7,
        kernel_conv: int = 3,
    ) -> None:
        super().__init__()
        require_at_least("acmix", "heads", heads, 1, "pass heads=4")
        require_divisible("acmix", channels, heads, "heads", "pass heads dividing channels, e.g. heads=4")
        _require_odd("acmix", "kernel_att", kernel_att)
        _require_odd("acmix", "kernel_conv", kernel_conv)
        c, d = channels, channels // heads
        self.heads = heads
        self.head_dim = d
        self.kernel_att = kernel_att
        self.kernel_conv = kernel_conv
        self.q = nn.Conv2d(c, c, 1)
        self.k = nn.Conv2d(c, c, 1)
        self.v = nn.Conv2d(c, c, 1)
        self.conv_p = nn.Conv2d(2, d, 1)
        kc2 = kernel_conv * kernel_conv
        self.fc = nn.Conv2d(3 * heads, kc2, 1, bias=False)
        self.dep_conv = nn.Conv2d(kc2 * d, c, kernel_conv, padding=kernel_conv // 2, groups=d)
        self.alpha = nn.Parameter(torch.full((1,), 0.5))
        self.beta = nn.Parameter(torch.full((1,), 0.5))
        with torch.no_grad():  # shift kernels: input channel i of each group -> offset i
            shift = torch.zeros(kc2, kernel_conv, kernel_conv)
            for i in range(kc2):
                shift[i, i // kernel_conv, i % kernel_conv] = 1.0
            self.dep_conv.weight.copy_(shift.unsqueeze(0).expand(c, -1, -1, -1))
            nn.init.zeros_(self.dep_conv.bias)

    def attention_path(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Windowed attention, one window offset at a time.

        Equivalent to unfolding k, pe and v into ``k_att^2`` copies (the official form) but
        reads shifted views of the padded maps instead, so no ``N x d x k_att^2 x H x W`` tensor
        is built: about 4x faster on CPU at 8x256x40x40, equal to 1e-6.
        """
        b, c, h, w = q.shape
        nh, d, ka = self.heads, self.head_dim, self.kernel_att
        pad = (ka // 2,) * 4
        pe = self.conv_p(_coordinate_grid(q, float32(self.conv_p.weight).dtype))  # 1 x d x H x W
        q = q.reshape(b * nh, d, h, w) * d**-0.5
        offsets = [(i, j) for i in range(ka) for j in range(ka)]  # unfold's window order
        with _no_autocast(q):
            q32, pe32 = float32(q), float32(pe)
            kp = F.pad(float32(k.reshape(b * nh, d, h, w)), pad, mode="reflect")
            pep = F.pad(pe32, pad, mode="reflect")
            logits = torch.stack(
                [
                    (q32 * (kp[:, :, i : i + h, j : j + w] + (pe32 - pep[:, :, i : i + h, j : j + w]))).sum(1)
                    for i, j in offsets
                ],
                1,
            )  # (B*heads) x k^2 x H x W
            attn = logits.softmax(1).to(v.dtype)
        vp = F.pad(v.reshape(b * nh, d, h, w), pad, mode="reflect")
        out = attn[:, :1] * vp[:, :, :h, :w]
        for n, (i, j) in enumerate(offsets[1:], 1):
            out = out + attn[:, n : n + 1] * vp[:, :, i : i + h, j : j + w]
        return out.reshape(b, c, h, w)

    def conv_path(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b, c, h, w = q.shape
        nh, d = self.heads, self.head_dim
        stacked = torch.cat([t.reshape(b, nh, d, h * w) for t in (q, k, v)], 1)  # B x 3h x d x HW
        f = self.fc(stacked)  # B x kc^2 x d x HW
        f = f.permute(0, 2, 1, 3).reshape(b, d * self.kernel_conv**2, h, w)
        return self.dep_conv(f)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[2], x.shape[3]
        p = self.kernel_att // 2
        if h <= p or w <= p:
            raise ValueError(
                f"acmix: input {h}x{w} is too small for kernel_att={self.kernel_att} (reflection "
                f"padding needs H, W > {p}); pass a smaller kernel_att"
            )
        q, k, v = self.q(x), self.k(x), self.v(x)
        return self.alpha * self.attention_path(q, k, v) + self.beta * self.conv_path(q, k, v)


# --------------------------------------------------------------------------------------------
# outlook
# --------------------------------------------------------------------------------------------


def _outlook_heads(c: int, heads: int | None) -> int:
    return heads if heads is not None else max(1, c // 32)


def _outlook_params(c: int, heads: int | None, kernel_size: int, **_: object) -> int:
    h = _outlook_heads(c, heads)
    k4 = kernel_size**4
    return c * c + (c * h * k4 + h * k4) + (c * c + c)


@register_attention(
    "outlook",
    paper="VOLO: Vision Outlooker for Visual Recognition",
    venue="TPAMI",
    year=2022,
    category="self-attention",
    reference="sail-sg/volo models/volo.py",
    params=_outlook_params,
    formula="2C^2 + 81hC + C + 81h, h = max(1, C/32) (k=3)",
    summary="Each position generates (from its own feature) k^2 x k^2 attention weights that "
    "aggregate the values of its k x k window; windows overlap-add back onto the map.",
    equations="Sec. 3.1, Eqs. (2)-(5): V = X W_V, A = softmax(X W_A reshaped k^2 x k^2), "
    "Y_window = A V_window, fold (sum over overlapping windows), linear projection.",
    source_note="Written from the paper and the spec (official VOLO is Apache-2.0); stride 1 "
    "(no pooling) for a plug-in. Fold is written as shifted slices (overlap_add), so it "
    "exports at opset 17 where F.fold (col2im) needs opset 18.",
)
class OutlookAttention(nn.Module):
    """Outlook attention (VOLO, Yuan et al., TPAMI 2022, arXiv 2106.13112).

    Follows Eqs. (2)-(5) of the paper at stride 1::

        v = conv1x1_{C->C}(x)                          # no bias (Linear on channels)
        A = conv1x1_{C->h k^4}(x)                      # biased; per position, h matrices k^2 x k^2
        A = softmax_over_window_inputs(A * (C/h)^-0.5)
        Y[window at p] = A_p unfold(v)[p]              # per head
        Y = overlap_add(Y)                             # fold: sum over overlapping windows
        out = conv1x1_{C->C}(Y)                        # biased projection

    No residual connection (the VOLO Outlooker block adds it with LayerNorm; spec rule 5.8).

    Args:
        channels: input channels C (divisible by ``heads``).
        heads: attention heads; default ``max(1, C // 32)`` (head dim 32 as in VOLO).
        kernel_size: window k (paper: 3).
    """

    def __init__(self, channels: int, *, heads: int | None = None, kernel_size: int = 3) -> None:
        super().__init__()
        nh = _outlook_heads(channels, heads)
        require_at_least("outlook", "heads", nh, 1, "pass heads=1 or more")
        require_divisible("outlook", channels, nh, "heads", "pass heads dividing channels, e.g. heads=1")
        _require_odd("outlook", "kernel_size", kernel_size)
        self.heads = nh
        self.kernel_size = kernel_size
        self.scale = (channels // nh) ** -0.5
        self.v = nn.Conv2d(channels, channels, 1, bias=False)
        self.attn = nn.Conv2d(channels, nh * kernel_size**4, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        k, nh = self.kernel_size, self.heads
        k2 = k * k
        v = F.unfold(self.v(x), k, padding=k // 2).reshape(b, nh, c // nh, k2, h * w)
        logits = self.attn(x).reshape(b, nh, k2, k2, h * w)  # (head, out pos a, in pos p)
        attn = _softmax32(logits, 3, v.dtype, self.scale)
        y = torch.einsum("bnapl,bndpl->bndal", attn, v).reshape(b, c, k2, h, w)
        return self.proj(overlap_add(y, k))


# --------------------------------------------------------------------------------------------
# s2mlp
# --------------------------------------------------------------------------------------------

_SHIFT_ORDERS = {
    1: ("+w", "-w", "+h", "-h"),
    2: ("+h", "-h", "+w", "-w"),
}


def _shift1(t: Tensor, direction: str) -> Tensor:
    """Move content one pixel in ``direction``; the vacated border keeps its own value."""
    if direction == "+w":
        return torch.cat([t[..., :1], t[..., :-1]], -1)
    if direction == "-w":
        return torch.cat([t[..., 1:], t[..., -1:]], -1)
    if direction == "+h":
        return torch.cat([t[..., :1, :], t[..., :-1, :]], -2)
    return torch.cat([t[..., 1:, :], t[..., -1:, :]], -2)  # "-h"


def spatial_shift(x: Tensor, order: int) -> Tensor:
    """S2-MLP spatial shift of the four channel quarters of ``x`` (B x C x H x W).

    ``order=1`` shifts the quarters by one pixel along +W, -W, +H, -H; ``order=2`` along
    +H, -H, +W, -W. As in the paper's pseudo code (S2-MLP Algorithm 1) the first row/column
    in the direction of the shift keeps its original value.
    """
    if order not in _SHIFT_ORDERS:
        raise ValueError(f"spatial_shift: order={order!r} must be 1 or 2")
    q = x.shape[1] // 4
    parts = [x[:, i * q : (i + 1) * q] for i in range(4)]
    return torch.cat([_shift1(p, d) for p, d in zip(parts, _SHIFT_ORDERS[order])], 1)


@register_attention(
    "s2mlp",
    paper="S2-MLPv2: Improved Spatial-Shift MLP Architecture for Vision",
    venue="arXiv",
    year=2021,
    category="mlp",
    reference="none",
    params=lambda c, **_: 8 * c * c + 4 * c,
    formula="8C^2 + 4C",
    summary="Expands channels 3x, shifts two copies spatially in the four directions (in two "
    "orders), and mixes the three branches with split attention over their global mean.",
    equations="Sec. 3 / Fig. 1 (S2-MLPv2 spatial-shift block): X -> MLP_1 (C->3C), two "
    "spatial-shift branches and one identity branch, split attention (ResNeSt-style), MLP_2.",
    source_note="No official code. Split attention pools with the mean over H, W (spec; the "
    "External-Attention S2Attention sums) and its radix index is the outer one of the 3C "
    "output (reshape B x 3 x C). Written from the paper and the spec.",
)
class S2MLPv2(nn.Module):
    """S2-MLPv2 spatial-shift block (Yu et al., arXiv 2108.01072, 2021).

    Follows the spatial-shift block of the paper (Sec. 3, Fig. 1) in NCHW layout::

        y = conv1x1_{C->3C}(x)                         # biased (Linear on channels)
        x1 = shift_1(y[:C]); x2 = shift_2(y[C:2C]); x3 = y[2C:]
        a = softmax_over_3(L2(GELU(L1(mean_HW(x1 + x2 + x3)))))   # L1 C->C, L2 C->3C, no bias
        out = conv1x1_{C->C}(a_1 x1 + a_2 x2 + a_3 x3)  # biased

    ``shift_1`` moves the four channel quarters one pixel along +W, -W, +H, -H and
    ``shift_2`` along +H, -H, +W, -W (see :func:`spatial_shift`). No residual connection
    (the paper's block wraps it with LayerNorm and a residual; spec rule 5.8).

    Args:
        channels: input channels C (divisible by 4).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        require_divisible("s2mlp", channels, 4, "4 (channel quarters)", "pass channels divisible by 4")
        c = channels
        self.mlp1 = nn.Conv2d(c, 3 * c, 1)
        self.fc1 = nn.Conv2d(c, c, 1, bias=False)
        self.fc2 = nn.Conv2d(c, 3 * c, 1, bias=False)
        self.mlp2 = nn.Conv2d(c, c, 1)

    def split_attention(self, parts: Tensor) -> Tensor:
        """Weights ``B x 3 x C x 1 x 1`` (softmax over the 3 branches) for ``B x 3 x C x H x W``."""
        b, r, c = parts.shape[:3]
        pooled = float32(parts.sum(1)).mean((2, 3), keepdim=True).to(parts.dtype)
        logits = self.fc2(F.gelu(self.fc1(pooled))).reshape(b, r, c, 1, 1)
        return _softmax32(logits, 1, parts.dtype)

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        y = self.mlp1(x)
        parts = torch.stack([spatial_shift(y[:, :c], 1), spatial_shift(y[:, c : 2 * c], 2), y[:, 2 * c :]], 1)
        a = self.split_attention(parts)
        return self.mlp2((a * parts).sum(1))
