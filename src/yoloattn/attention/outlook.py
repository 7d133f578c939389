"""Outlook attention: per-position generated k^2 x k^2 attention over a k x k window.

* ``outlook`` -- "VOLO: Vision Outlooker for Visual Recognition", Yuan, Hou, Jiang, Feng, Yan,
  TPAMI 2022. The fold (``col2im``, opset 18) is written as :func:`overlap_add`, so the module
  exports to ONNX at opset 17 with dynamic H and W.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yoloattn.attention._common import (
    require_at_least,
    require_divisible,
    require_odd,
    softmax32,
)
from yoloattn.attention.registry import register_attention

__all__ = ["OutlookAttention", "overlap_add"]


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


def _outlook_heads(c: int, heads: int | None) -> int:
    return heads if heads is not None else max(1, c // 32)


def _outlook_params(c: int, heads: int | None, kernel_size: int, **_: object) -> int:
    h = _outlook_heads(c, heads)
    k4 = kernel_size**4
    return c * c + (c * h * k4 + h * k4) + (c * c + c)


@register_attention(
    "outlook",
    onnx_opset=12,
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
        require_odd("outlook", "kernel_size", kernel_size)
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
        attn = softmax32(logits, 3, v.dtype, self.scale)
        y = torch.einsum("bnapl,bndpl->bndal", attn, v).reshape(b, c, k2, h, w)
        return self.proj(overlap_add(y, k))
