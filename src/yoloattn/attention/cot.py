"""Contextual Transformer: local self-attention with weights generated from a static key context.

* ``cot`` -- "Contextual Transformer Networks for Visual Recognition", Li, Yao, Pan, Mei,
  TPAMI 2022: static context (grouped k x k conv) + dynamic context (k x k local attention),
  fused by radix-2 split attention. No residual (it replaces a 3x3 conv, spec rule 5.8).

Keyword ``reduction`` (the weight-generation bottleneck C -> C / reduction); the official
code's ``factor`` is a deprecated alias.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yoloattn.attention._common import (
    GuardedBatchNorm2d,
    float32,
    require_at_least,
    require_divisible,
    require_odd,
    softmax32,
)
from yoloattn.attention.registry import register_attention

__all__ = ["CoT"]


def _cot_attn_channels(c: int) -> int:
    return max(c * 2 // 4, 32)  # radix 2, reduction factor 4, at least 32 (official)


def _cot_params(
    c: int, kernel_size: int, share_planes: int, reduction: int, key_groups: int, **_: object
) -> int:
    k2 = kernel_size**2
    mid = c // reduction
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
    onnx_opset=11,
    paper="Contextual Transformer Networks for Visual Recognition",
    venue="TPAMI",
    year=2022,
    category="self-attention",
    reference="JDAI-CV/CoTNet models/cotnet.py",
    params=_cot_params,
    formula="101C^2/16 + 111C/8 (k=3, share_planes 8, reduction 2, key groups 4, C >= 64)",
    aliases={"factor": "reduction"},
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
        reduction: reduction of the weight-generation bottleneck (paper: 2; the official
            code's ``factor``, a deprecated alias here).
        key_groups: groups of the static k x k key conv (official: 4).
    """

    def __init__(
        self,
        channels: int,
        *,
        kernel_size: int = 3,
        share_planes: int = 8,
        reduction: int = 2,
        key_groups: int = 4,
    ) -> None:
        super().__init__()
        require_odd("cot", "kernel_size", kernel_size)
        require_at_least("cot", "reduction", reduction, 1, "pass reduction=2")
        require_divisible("cot", channels, share_planes, "share_planes", "pass share_planes=8 (or a divisor)")
        require_divisible("cot", channels, key_groups, "key_groups", "pass key_groups=4 (or a divisor)")
        mid = channels // reduction
        require_at_least(
            "cot", f"channels//reduction (channels={channels})", mid, 1, "pass a smaller reduction"
        )
        k, c = kernel_size, channels
        self.kernel_size = k
        self.share_planes = share_planes
        self.key_embed = nn.Sequential(
            nn.Conv2d(c, c, k, padding=k // 2, groups=key_groups, bias=False),
            GuardedBatchNorm2d(c),
            nn.ReLU(inplace=True),
        )
        wch = k * k * c // share_planes
        self.embed = nn.Sequential(
            nn.Conv2d(2 * c, mid, 1, bias=False),
            GuardedBatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, wch, 1),
            nn.GroupNorm(c // share_planes, wch),
        )
        self.value = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), GuardedBatchNorm2d(c))
        self.bn = GuardedBatchNorm2d(c)
        self.act = nn.SiLU(inplace=True)
        a = _cot_attn_channels(c)
        self.split = nn.Sequential(
            nn.Conv2d(c, a, 1),
            GuardedBatchNorm2d(a),
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
        attn = softmax32(logits, 2, k2.dtype)
        return k2 * attn[:, :, 0] + k1 * attn[:, :, 1]
