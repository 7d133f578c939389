"""Dual attention: a position attention module plus a channel attention module.

* ``danet`` -- "Dual Attention Network for Scene Segmentation", Fu et al., CVPR 2019,
  Eqs. (1)-(4): ``(alpha * PAM + x) + (beta * CAM + x)``; ``2 x`` at initialisation.
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

__all__ = ["DualAttention"]


def _bmm32(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` in (at least) float32 even under autocast (used for attention energies)."""
    with no_autocast(a):
        return torch.matmul(float32(a), float32(b))


_DANET_CAM = ("paper", "official")


def _danet_params(c: int, reduction: int, head: bool, **_: object) -> int:
    q = c // reduction
    pam = 2 * (c * q + q) + (c * c + c) + 1
    cam = 1
    extra = 2 * (9 * c * c + 2 * c) if head else 0
    return pam + cam + extra


def _conv_bn_relu3(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
    )


@register_attention(
    "danet",
    paper="Dual Attention Network for Scene Segmentation",
    venue="CVPR",
    year=2019,
    category="self-attention",
    reference="junfu1115/DANet encoding/nn/da_att.py",
    params=_danet_params,
    formula="5C^2/4 + 5C/4 + 2",
    summary="Sum of a position attention (each position attends to all positions) and a "
    "channel attention (each channel attends to all channels).",
    equations="Eqs. (1)-(2) position attention module, Eqs. (3)-(4) channel attention module; "
    "plug-in output PAM + CAM.",
    source_note="CAM energy: the paper's Eq. (3) softmax(A_i . A_j) is the default; "
    "channel_energy='official' uses the official code's softmax(max_row(E) - E) "
    "(= softmax(-E)).",
)
class DualAttention(nn.Module):
    """Dual attention, PAM + CAM (DANet, Fu et al., CVPR 2019, arXiv 1809.02983).

    Follows Eqs. (1)-(4) of the paper::

        PAM: q, k = conv1x1_{C->C/8}(x), v = conv1x1_{C->C}(x)
             S = softmax_j(q_i . k_j);  pam = alpha * (v S^T) + x        # alpha init 0
        CAM: X = x flattened (C x HW);  E = X X^T
             Att = softmax(E) (paper Eq. 3)  or softmax(max_row(E) - E) (official code)
             cam = beta * (Att X) + x                                    # beta init 0
        out = pam + cam

    Built-in residual: yes, each branch has the paper's ``+ A`` (Eqs. 2 and 4); the plug-in
    output is their sum, so the freshly built module returns ``2 x`` (not the identity).
    ``head=True`` wraps each branch with the segmentation head's 3x3 conv-BN-ReLU before the
    sum. Memory is O((HW)^2).

    Args:
        channels: input channels C.
        reduction: PAM query/key channels C // reduction (paper: 8).
        channel_energy: ``"paper"`` (softmax(E)) or ``"official"`` (softmax(max(E) - E)).
        head: add the 3x3 conv-BN-ReLU of the DANet head after each branch.
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: int = 8,
        channel_energy: str = "paper",
        head: bool = False,
    ) -> None:
        super().__init__()
        if channel_energy not in _DANET_CAM:
            raise ValueError(f"danet: channel_energy={channel_energy!r} is not one of {_DANET_CAM}")
        require_at_least("danet", "reduction", reduction, 1, "pass reduction=8")
        qk = channels // reduction
        require_at_least(
            "danet",
            f"channels//reduction (channels={channels}, reduction={reduction})",
            qk,
            1,
            "pass a smaller reduction",
        )
        self.channel_energy = channel_energy
        self.query = nn.Conv2d(channels, qk, 1)
        self.key = nn.Conv2d(channels, qk, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.alpha = nn.Parameter(torch.zeros(1))
        self.beta = nn.Parameter(torch.zeros(1))
        self.pam_head = _conv_bn_relu3(channels) if head else None
        self.cam_head = _conv_bn_relu3(channels) if head else None

    def position_attention(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q = self.query(x).flatten(2)  # B x q x N
        k = self.key(x).flatten(2)
        v = self.value(x).flatten(2)  # B x C x N
        attn = _bmm32(q.transpose(1, 2), k).softmax(-1)  # B x N x N, float32
        out = torch.matmul(v, attn.to(v.dtype).transpose(1, 2))
        return self.alpha * out.reshape(b, c, h, w) + x

    def channel_attention(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        xf = x.flatten(2)  # B x C x N
        energy = _bmm32(xf, xf.transpose(1, 2))  # B x C x C, float32
        if self.channel_energy == "official":
            energy = energy.amax(-1, keepdim=True) - energy
        attn = energy.softmax(-1)
        out = torch.matmul(attn.to(xf.dtype), xf)
        return self.beta * out.reshape(b, c, h, w) + x

    def forward(self, x: Tensor) -> Tensor:
        pam = self.position_attention(x)
        cam = self.channel_attention(x)
        if self.pam_head is not None and self.cam_head is not None:
            pam, cam = self.pam_head(pam), self.cam_head(cam)
        return pam + cam
