"""A zero-initialised residual gate: insert a module into a trained network as the identity.

``y = x + g * (A(x) - x)`` with a learnable ``g`` that starts at 0, so the gated module computes
exactly its input at step 0 and the network keeps its trained function, while ``dL/dg =
<dL/dy, A(x) - x>`` is non-zero at once and the optimiser can open the gate. The scalar gate
follows the zero-initialised residual scaling of "Fixup Initialization: Residual Learning Without
Normalization" (Zhang, Dauphin, Ma, ICLR 2019) and "ReZero is All You Need: Fast Convergence at
Large Depth" (Bachlechner et al., UAI 2021); the per-channel gate is LayerScale from "Going deeper
with Image Transformers" (Touvron et al., ICCV 2021), initialised at 0 instead of a small epsilon.

State-dict names (stable, documented in docs/models.md): for a gated row ``N`` the module's own
tensors live under ``model.N.attn.`` and the gate is ``model.N.gate`` (shape ``(1,)`` for the
scalar gate, ``(C,)`` per channel).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ResidualGate", "GATE_SHAPES"]

#: Gate shapes: one scalar per inserted row, or one value per channel (LayerScale-style).
GATE_SHAPES = ("scalar", "channel")


class ResidualGate(nn.Module):
    """``x + g * (attn(x) - x)`` with ``g`` initialised to zero.

    Args:
        attn: the wrapped module; it must map ``(N, C, H, W)`` to the same shape.
        channels: ``C`` (used by the per-channel gate).
        shape: ``"scalar"`` (one ``g``) or ``"channel"`` (``C`` values).
    """

    def __init__(self, attn: nn.Module, channels: int, shape: str = "scalar") -> None:
        super().__init__()
        if shape not in GATE_SHAPES:
            raise ValueError(f"gate shape must be one of {GATE_SHAPES}, got {shape!r}")
        self.attn = attn
        self.gate = nn.Parameter(torch.zeros(channels if shape == "channel" else 1))

    @property
    def shape(self) -> str:
        return "scalar" if self.gate.numel() == 1 else "channel"

    def forward(self, x: Tensor) -> Tensor:
        y = self.attn(x)
        g = self.gate.to(y.dtype)
        if g.numel() > 1:
            g = g.view(1, -1, 1, 1)
        return x + g * (y - x)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"
