"""Normalization-based attention: BatchNorm scale factors as channel importance.

* ``nam`` -- "NAM: Normalization-based Attention Module", Liu, Shao, Teng, Hoffmann,
  NeurIPS 2021 Workshop. :func:`nam_l1_penalty` gives the paper's sparsity regulariser.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from yoloattn.attention._common import (
    GuardedBatchNorm2d,
)
from yoloattn.attention.registry import register_attention

__all__ = ["NAM", "nam_l1_penalty"]


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
        self.bn = GuardedBatchNorm2d(channels, affine=True)
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
