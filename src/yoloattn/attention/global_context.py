"""Global context block: one query-independent context vector added to every position.

* ``gc`` -- "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond", Cao, Xu,
  Lin, Wei, Hu, ICCV Workshops 2019, Eq. (4): ``x + W_v2 ReLU(LN(W_v1 sum_j a_j x_j))``.
  Exactly the identity at initialisation (last conv zero-initialised).

Keyword ``reduction`` (P = C / reduction, paper r = 16); the older ``ratio`` (P = C * ratio)
is a deprecated alias converted as ``reduction = 1 / ratio``.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from yoloattn.attention._common import (
    require_at_least,
    softmax32,
)
from yoloattn.attention.registry import register_attention

__all__ = ["GlobalContext"]


_GC_POOLING = ("att", "avg")
_GC_FUSIONS = ("add", "mul", "add+mul")


def _gc_planes(channels: int, reduction: float) -> int:
    return int(channels / reduction)


def _ratio_to_reduction(ratio: float) -> float:
    """Deprecated ``ratio`` (P = C * ratio) as ``reduction`` (P = C / reduction)."""
    return 1 / ratio if ratio else float("inf")


def _gc_params(c: int, reduction: float, pooling: str, fusion: str, **_: object) -> int:
    p = _gc_planes(c, reduction)
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
        nn.init.zeros_(cast(Tensor, self[-1].weight))
        nn.init.zeros_(cast(Tensor, self[-1].bias))


@register_attention(
    "gc",
    paper="GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond",
    venue="ICCV Workshops",
    year=2019,
    category="context",
    reference="xvjiarui/GCNet mmdet/ops/ct/context_block.py",
    params=_gc_params,
    aliases={"ratio": ("reduction", _ratio_to_reduction)},
    formula="2C*P + 3P + 2C + 1, P = C/r (r=16: C^2/8 + 3C/16 + 2C + 1)",
    summary="Adds one query-independent global context vector (softmax attention pooling over "
    "all positions, then a LayerNorm bottleneck transform) to every position.",
    equations="Eq. (4) (GC block); pooling 'att' = global attention pooling, fusion 'add'.",
    identity_init="exact",
    source_note="Written from the paper; matches mmcv ContextBlock and timm GlobalContext "
    "(timm: LayerNorm eps 1e-6 and default rd_ratio 1/8, we use LayerNorm eps 1e-5 and r=16).",
)
class GlobalContext(nn.Module):
    """Global Context block (GCNet, Cao et al., ICCV Workshops 2019, arXiv 1904.11492).

    Follows Eq. (4) of the paper::

        a = softmax_HW(conv1x1_{C->1}(x))                   # global attention pooling
        c = sum_hw x * a                                    # C x 1 x 1 context
        t = conv1x1_{P->C}(ReLU(LN(conv1x1_{C->P}(c))))     # bottleneck transform, P = C/r
        out = x + t                                         # fusion "add" (default)

    Built-in residual: yes, the paper's ``x + t`` (fusion ``"add"``). ``fusion="mul"`` gives
    ``x * sigmoid(t')`` instead and ``"add+mul"`` gives ``x * sigmoid(t') + t`` (mmcv's
    ``channel_mul``/``channel_add``). ``pooling="avg"`` replaces the attention pooling by a mean.
    The last conv of each transform is zero-initialised, so at construction the default
    module returns its input exactly.

    Args:
        channels: input channels C.
        reduction: bottleneck ratio r, P = int(C / r) (paper: 16; configs also use 4).
            Deprecated alias: ``ratio`` = 1/r.
        pooling: ``"att"`` (paper) or ``"avg"``.
        fusion: ``"add"`` (paper), ``"mul"`` or ``"add+mul"``.
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: float = 16,
        pooling: str = "att",
        fusion: str = "add",
    ) -> None:
        super().__init__()
        if pooling not in _GC_POOLING:
            raise ValueError(f"gc: pooling={pooling!r} is not one of {_GC_POOLING}")
        if fusion not in _GC_FUSIONS:
            raise ValueError(f"gc: fusion={fusion!r} is not one of {_GC_FUSIONS}")
        planes = _gc_planes(channels, reduction)
        require_at_least(
            "gc",
            f"int(channels/reduction) (channels={channels}, reduction={reduction})",
            planes,
            1,
            "pass a smaller reduction",
        )
        self.pooling = pooling
        self.conv_mask = nn.Conv2d(channels, 1, 1) if pooling == "att" else None
        if self.conv_mask is not None:  # official init: Kaiming (fan_in), zero bias
            nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
            assert self.conv_mask.bias is not None
            nn.init.zeros_(self.conv_mask.bias)
        self.channel_mul = _ContextTransform(channels, planes) if "mul" in fusion else None
        self.channel_add = _ContextTransform(channels, planes) if "add" in fusion else None

    def _context(self, x: Tensor) -> Tensor:
        if self.conv_mask is None:
            return x.mean((2, 3), keepdim=True)
        b, c = x.shape[:2]
        logits = self.conv_mask(x).flatten(2)  # B x 1 x HW
        attn = softmax32(logits, -1, x.dtype)
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
