"""Bi-level routing attention: region-level top-k routing, then token attention in routed regions.

* ``bra`` -- "BiFormer: Vision Transformer with Bi-Level Routing Attention", Zhu, Wang, Ke,
  Zhang, Lau, CVPR 2023, plus the local context enhancement ``DW3x3(v)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yoloattn.attention._common import (
    float32,
    no_autocast,
    require_at_least,
    require_divisible,
    require_odd,
)
from yoloattn.attention.registry import register_attention

__all__ = ["BiLevelRoutingAttention"]


def _bra_params(c: int, side_kernel: int, **_: object) -> int:
    lce = side_kernel * side_kernel * c + c if side_kernel > 0 else 0
    return (3 * c * c + 3 * c) + lce + (c * c + c)


@register_attention(
    "bra",
    onnx_opset=12,
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
            require_odd("bra", "side_kernel", side_kernel)
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

    def _to_regions(self, t: Tensor, rh: int, rw: int) -> Tensor:
        """``B x C x S*rh x S*rw`` -> ``B x S^2 x (rh*rw) x C``, regions row-major."""
        b, c = t.shape[:2]
        s = self.n_win
        t = t.reshape(b, c, s, rh, s, rw).permute(0, 2, 4, 3, 5, 1)
        return t.reshape(b, s * s, rh * rw, c)

    def route(self, q: Tensor, k: Tensor, valid: Tensor) -> Tensor:
        """Top-k region indices ``B x S^2 x topk`` from region-mean q/k (no gradient).

        ``q``, ``k``: ``B x S^2 x T x C`` region tokens; ``valid``: ``1 x S^2 x T x 1`` mask.
        """
        with no_autocast(q):
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
        with no_autocast(x):
            logits = torch.einsum("brthd,brjhd->brhtj", float32(qh), float32(kg)) * self.scale
            logits = logits.masked_fill(mg == 0, float("-inf"))
            attn = logits.softmax(-1).to(vg.dtype)
        o = torch.einsum("brhtj,brjhd->brthd", attn, vg)  # B x S^2 x T x heads x d
        o = o.reshape(b, s, s, rh, rw, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, s * rh, s * rw)
        o = o[:, :, :h, :w]
        if self.lepe is not None:
            o = o + self.lepe(v)
        return self.out(o)
