"""Double attention: gather global descriptors by second-order pooling, distribute them back.

* ``a2`` -- "A2-Nets: Double Attention Networks", Chen, Kalantidis, Li, Yan, Feng,
  NeurIPS 2018: ``x + conv(Z)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from yoloattn.attention._common import (
    require_at_least,
    softmax32,
)
from yoloattn.attention.registry import register_attention

__all__ = ["DoubleAttention"]


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
        maps = softmax32(maps, -1, feats.dtype)  # attention maps over positions
        vecs = softmax32(vecs, 1, feats.dtype)  # attention vectors over the n descriptors
        g = torch.matmul(feats, maps.transpose(1, 2))  # B x m x n
        z = torch.matmul(g, vecs).reshape(b, self.c_m, h, w)  # B x m x H x W
        return x + self.conv_z(z)
