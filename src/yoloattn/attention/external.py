"""External attention: attention to S learned memory units shared by all samples.

* ``external`` -- "Beyond Self-attention: External Attention using Two Linear Layers for
  Visual Tasks", Guo, Liu, Mu, Hu, TPAMI 2022: double normalisation, ``ReLU(x + BN(conv(y)))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yoloattn.attention._common import (
    float32,
    require_at_least,
)
from yoloattn.attention.registry import register_attention

__all__ = ["ExternalAttention"]


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
