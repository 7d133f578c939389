"""Criss-cross attention: each position attends to its own row and column, applied recurrently.

* ``cc`` -- "CCNet: Criss-Cross Attention for Semantic Segmentation", Huang et al., ICCV 2019,
  Eqs. (1)-(2) with recurrence R=2: ``gamma * agg + x``. Exactly the identity at
  initialisation (gamma = 0).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from yoloattn.attention._common import (
    float32,
    no_autocast,
    require_at_least,
)
from yoloattn.attention.registry import register_attention

__all__ = ["CrissCrossAttention"]


def _cc_params(c: int, reduction: int, **_: object) -> int:
    q = c // reduction
    return 2 * (c * q + q) + (c * c + c) + 1


@register_attention(
    "cc",
    onnx_opset=12,
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
        with no_autocast(x):
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
