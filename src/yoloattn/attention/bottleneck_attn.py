"""Bottleneck Transformer MHSA: global multi-head self-attention with 2-D relative positions.

* ``mhsa`` -- "Bottleneck Transformers for Visual Recognition", Srinivas et al., CVPR 2021
  (size dependent: the position tables are built for one H x W).
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
)
from yoloattn.attention.registry import register_attention

__all__ = ["BoTMHSA"]


_MHSA_POS = ("rel", "abs")
_MHSA_RESIZE = ("error", "interpolate")


def _mhsa_params(c: int, heads: int, height: int, width: int, pos: str, **_: object) -> int:
    if pos == "abs":
        return 3 * c * c + 3 * c + c * (height + width)
    d = c // heads
    return 3 * c * c + d * (2 * height - 1 + 2 * width - 1)


def _resize_table(table: Tensor, length: int) -> Tensor:
    """Linearly resample an ``L x d`` table along L to ``length`` rows (end points aligned)."""
    return F.interpolate(table.t().unsqueeze(0), size=length, mode="linear", align_corners=True)[0].t()


def _rel_to_abs(table: Tensor, n: int) -> Tensor:
    """``(2n-1) x d`` relative table -> ``n x n x d`` with ``[i, j] = table[j - i + n - 1]``."""
    pos = torch.arange(n, device=table.device)
    return table[pos.reshape(1, -1) - pos.reshape(-1, 1) + (n - 1)]


@register_attention(
    "mhsa",
    onnx_opset=12,
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
            th: Tensor
            tw: Tensor
            th, tw = self.height_rel, self.width_rel
            if resample:
                th, tw = _resize_table(th, 2 * h - 1), _resize_table(tw, 2 * w - 1)
            rh, rw = _rel_to_abs(float32(th), h), _rel_to_abs(float32(tw), w)  # H x H x d, W x W x d
            lh = torch.einsum("bnyxd,ykd->bnyxk", q, rh)  # key row y'
            lw = torch.einsum("bnyxd,xld->bnyxl", q, rw)  # key column x'
            logits = lh.unsqueeze(-1) + lw.unsqueeze(-2)  # B x n x H x W x H x W
            return logits.reshape(b, self.heads, h * w, h * w)
        ph: Tensor
        pw: Tensor
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
        with no_autocast(x):
            q32, k32 = float32(q), float32(k)
            logits = torch.matmul(q32.transpose(-1, -2), k32) * self.scale  # B x n x HW x HW
            q_grid = q32.transpose(-1, -2).reshape(b, self.heads, h, w, d)
            logits = logits + self.position_logits(q_grid, h, w, resample)
            attn = logits.softmax(-1).to(v.dtype)
        out = torch.matmul(v, attn.transpose(-1, -2))  # B x n x d x HW
        return out.reshape(b, c, h, w)
