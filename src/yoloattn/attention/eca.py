"""Efficient channel attention: a k-tap 1-D convolution across the pooled channel descriptor.

* ``eca``  -- "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
  Wang et al., CVPR 2020 (gate and adaptive kernel rule ``k = psi(C)``).
* ``ceca`` -- circular-padding ECA of timm (``CecaModule``; no paper of its own).

Keyword ``kernel_size`` (the zoo's vocabulary); the older spelling ``k_size`` is a deprecated
alias.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yoloattn.attention._common import (
    float32,
    require_odd,
)
from yoloattn.attention.registry import register_attention

__all__ = ["ECA", "CECA", "eca_kernel_size"]


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA-Net adaptive kernel size: ``t = int(|(log2(C) + b) / gamma|)``, made odd (``t+1``).

    C=64 -> 3, 256 -> 5, 512 -> 5, 1024 -> 5, 2048 -> 7 (paper defaults gamma=2, b=1).
    Unlike timm, no lower clamp to 3 is applied (the paper has none).
    """
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


def _eca_params(c: int, kernel_size: int | None, gamma: int, b: int, **_: object) -> int:
    return kernel_size if kernel_size else eca_kernel_size(c, gamma, b)


#: deprecated spelling of ``kernel_size`` (spec 3.1 named it ``k_size``, as the official code)
_ALIASES = {"k_size": "kernel_size"}


class _EcaBase(nn.Module):
    def __init__(self, key: str, channels: int, kernel_size: int | None, gamma: int, b: int) -> None:
        super().__init__()
        k = eca_kernel_size(channels, gamma, b) if kernel_size is None else int(kernel_size)
        require_odd(key, "kernel_size", k)
        self.kernel_size = k
        self.conv = nn.Conv1d(1, 1, k, padding=0, bias=False)

    def _pad(self, y: Tensor, p: int) -> Tensor:
        """Pad the B x 1 x C channel descriptor by ``p`` on both sides (zeros for ECA)."""
        return F.pad(y, (p, p))

    def forward(self, x: Tensor) -> Tensor:
        y = float32(x).mean((2, 3)).to(x.dtype).unsqueeze(1)  # B x 1 x C
        p = self.kernel_size // 2
        if p:
            y = self._pad(y, p)
        s = torch.sigmoid(self.conv(y)).transpose(1, 2).unsqueeze(-1)  # B x C x 1 x 1
        return x * s.to(x.dtype)


@register_attention(
    "eca",
    paper="ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
    venue="CVPR",
    year=2020,
    category="channel",
    reference="BangguWu/ECANet models/eca_module.py",
    formula="k = psi(C) (no bias)",
    params=_eca_params,
    aliases=_ALIASES,
    summary="Re-weights channels by a sigmoid gate from a k-tap 1-D convolution across the "
    "pooled channel descriptor (local cross-channel interaction, no dimension reduction).",
    equations="omega = sigma(C1D_k(y)) and adaptive kernel k = psi(C) = |(log2 C + b) / gamma|_odd",
    source_note="Kernel rule coded as in the paper (the official repo passes k by hand); "
    "timm additionally clamps k >= 3, which only differs for C < 16.",
)
class ECA(_EcaBase):
    """Efficient Channel Attention.

    Paper: "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
    Qilong Wang et al., CVPR 2020, arXiv 1910.03151. ``y = GAP(x)`` as a length-C sequence,
    ``out = x * sigmoid(conv1d_k(y))`` with zero padding ``k // 2`` and no bias (the paper's
    ``omega = sigma(C1D_k(y))``); the kernel size follows the adaptive rule
    ``k = psi(C) = |(log2 C + b) / gamma|_odd`` unless
    ``kernel_size`` is given.

    Args:
        channels: input channels C.
        kernel_size: explicit odd kernel size; None selects it from C (64->3, 256->5,
            2048->7). Deprecated alias: ``k_size``.
        gamma, b: constants of the adaptive rule (paper: 2 and 1).
    """

    def __init__(self, channels: int, kernel_size: int | None = None, gamma: int = 2, b: int = 1) -> None:
        super().__init__("eca", channels, kernel_size, gamma, b)


@register_attention(
    "ceca",
    paper="ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks "
    "(circular-padding variant of timm)",
    venue="code",
    year=2020,
    category="channel",
    reference="huggingface/pytorch-image-models timm/layers/eca.py",
    formula="k = psi(C) (no bias)",
    params=_eca_params,
    aliases=_ALIASES,
    summary="ECA whose 1-D channel convolution wraps around the channel axis (circular "
    "padding), so the first and last channels also interact.",
    equations="ECA gate omega = sigma(C1D_k(y)) and psi(C), with circular instead of zero padding",
    source_note="No paper: timm CecaModule by Chris Ha. The wrap is built with torch.cat "
    "instead of F.pad(mode='circular'), whose ONNX export was numerically wrong in the spec "
    "check.",
)
class CECA(_EcaBase):
    """Circular Efficient Channel Attention (timm variant of ECA-Net, CVPR 2020).

    Same as :class:`ECA` (Wang et al., "ECA-Net: Efficient Channel Attention for Deep
    Convolutional Neural Networks", CVPR 2020: gate and kernel rule) but the channel sequence is
    padded circularly: the last ``k // 2`` channels are prepended and the first ``k // 2``
    appended before the 1-D convolution. Source: timm ``CecaModule`` (no paper of its own).
    Arguments as :class:`ECA` (deprecated alias ``k_size`` of ``kernel_size``).
    """

    def __init__(self, channels: int, kernel_size: int | None = None, gamma: int = 2, b: int = 1) -> None:
        super().__init__("ceca", channels, kernel_size, gamma, b)
        if self.kernel_size // 2 > channels:
            raise ValueError(
                f"ceca: kernel_size={self.kernel_size} wraps more than channels={channels}; "
                f"pass kernel_size<={2 * channels + 1}"
            )

    def _pad(self, y: Tensor, p: int) -> Tensor:
        # wrap-around built with cat: F.pad(mode="circular") exported wrong ONNX graphs (spec)
        return torch.cat([y[..., -p:], y, y[..., :p]], dim=-1)
