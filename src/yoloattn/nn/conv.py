"""Convolution blocks of YOLOv5 (v6.0+) and YOLOv7: ``Conv``, ``DWConv`` and ``RepConv``.

Written from ``shared/spec/yolo-architectures.md`` sections 3.1-3.2 and 4.1-4.2, 4.8. The
sub-module attribute names (``conv``/``bn``/``act``; ``rbr_dense``/``rbr_1x1``/
``rbr_identity``) and their registration order are those of the official networks, so the
official state dicts load with ``strict=True`` and a seeded build consumes the RNG in the same
order.

``RepConv`` follows "RepVGG: Making VGG-style ConvNets Great Again" (Ding et al., CVPR 2021):
a 3x3 conv+BN branch, a 1x1 conv+BN branch and an optional identity BN branch are summed during
training (Fig. 2) and folded into one biased 3x3 conv for deployment (Sec. 3.3, Eq. 3-4).
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

__all__ = ["autopad", "Conv", "DWConv", "RepConv", "fold_conv_bn", "make_act"]

IntOrPair = int | tuple[int, int] | list[int]


def autopad(k: IntOrPair, p: IntOrPair | None = None, d: int = 1) -> IntOrPair:
    """Padding that keeps the spatial size at stride 1 ("same" for odd kernels).

    With dilation ``d > 1`` the effective kernel is ``d * (k - 1) + 1``. An explicit ``p`` is
    returned unchanged.
    """
    if p is not None:
        return p
    if isinstance(k, int):
        return (d * (k - 1) + 1) // 2
    return [(d * (x - 1) + 1) // 2 for x in k]


def make_act(act: object) -> nn.Module:
    """``True`` -> SiLU, an ``nn.Module`` -> itself, anything else -> Identity."""
    if act is True:
        return nn.SiLU()
    if isinstance(act, nn.Module):
        return act
    return nn.Identity()


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Return a biased conv equal to ``bn(conv(x))`` with the BN running statistics folded in."""
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        cast("tuple[int, int]", conv.kernel_size),
        cast("tuple[int, int]", conv.stride),
        cast("str | tuple[int, int]", conv.padding),
        cast("tuple[int, int]", conv.dilation),
        conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    assert bn.running_mean is not None and bn.running_var is not None
    w, b = fuse_conv_bn_weights(
        conv.weight,
        conv.bias,
        bn.running_mean,
        bn.running_var,
        bn.eps,
        bn.weight,
        bn.bias,
    )
    fused.weight = nn.Parameter(w.detach().clone(), requires_grad=conv.weight.requires_grad)
    fused.bias = nn.Parameter(b.detach().clone(), requires_grad=conv.weight.requires_grad)
    return fused


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation, the basic block of YOLOv5 and YOLOv7.

    Args:
        c1, c2: input and output channels.
        k, s, p, g, d: kernel, stride, padding (``None`` = :func:`autopad`), groups, dilation.
        act: ``True`` for SiLU, an ``nn.Module`` to use it, anything else for Identity.

    YOLOv7 has no dilation argument, so its rows put the activation 7th
    (``Conv(c1, c2, k, s, p, g, act)``, e.g. ``nn.LeakyReLU(0.1)`` in yolov7-tiny). Both forms
    are accepted: a module or bool in the ``d`` position is taken as ``act``.

    ``uses_default_act`` is True when the activation came from ``act=True``; the model parser
    uses it to apply a YAML-level ``activation:`` override (YOLOv5) without a global default.
    """

    def __init__(
        self,
        c1: int,
        c2: int,
        k: IntOrPair = 1,
        s: int = 1,
        p: IntOrPair | None = None,
        g: int = 1,
        d: int | nn.Module | bool = 1,
        act: bool | nn.Module = True,
    ) -> None:
        super().__init__()
        if isinstance(d, (nn.Module, bool)):  # YOLOv7 positional form: (c1, c2, k, s, p, g, act)
            act, d = d, 1
        # a list kernel/padding is fine at runtime (torch turns any sequence into a tuple)
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)  # type: ignore[arg-type]
        self.bn = nn.BatchNorm2d(c2)
        self.uses_default_act = act is True
        self.act = make_act(act)

    def forward(self, x: Tensor) -> Tensor:
        if hasattr(self, "bn"):
            return self.act(self.bn(self.conv(x)))
        return self.act(self.conv(x))

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold ``bn`` into ``conv`` (which gains a bias) and drop ``bn``."""
        if hasattr(self, "bn"):
            self.conv = fold_conv_bn(self.conv, self.bn)
            del self.bn


class DWConv(Conv):
    """Depth-wise convolution block: :class:`Conv` with ``groups = gcd(c1, c2)``."""

    def __init__(
        self,
        c1: int,
        c2: int,
        k: IntOrPair = 1,
        s: int = 1,
        d: int = 1,
        act: bool | nn.Module = True,
    ) -> None:
        super().__init__(c1, c2, k, s, g=math.gcd(c1, c2), d=d, act=act)


class RepConv(nn.Module):
    """RepVGG-style re-parameterisable 3x3 block (YOLOv7 rows 102-104).

    Training: ``act(rbr_dense(x) + rbr_1x1(x) + rbr_identity(x))`` where ``rbr_identity`` is a
    BatchNorm2d present only when ``c1 == c2 and s == 1``. :meth:`fuse` folds all branches into
    the single biased 3x3 conv ``rbr_reparam`` (RepVGG Sec. 3.3).
    """

    def __init__(
        self,
        c1: int,
        c2: int,
        k: int = 3,
        s: int = 1,
        p: int | None = None,
        g: int = 1,
        act: bool | nn.Module = True,
        deploy: bool = False,
    ) -> None:
        super().__init__()
        if k != 3 or autopad(k, p) != 1:
            raise ValueError(f"RepConv needs kernel 3 and padding 1, got k={k}, p={p}")
        self.deploy = deploy
        self.groups = g
        self.in_channels = c1
        self.out_channels = c2
        self.uses_default_act = act is True
        self.act = make_act(act)
        if deploy:
            self.rbr_reparam = nn.Conv2d(c1, c2, 3, s, 1, groups=g, bias=True)
        else:
            self.rbr_identity = nn.BatchNorm2d(c1) if (c2 == c1 and s == 1) else None
            self.rbr_dense = nn.Sequential(
                nn.Conv2d(c1, c2, 3, s, 1, groups=g, bias=False), nn.BatchNorm2d(c2)
            )
            self.rbr_1x1 = nn.Sequential(nn.Conv2d(c1, c2, 1, s, 0, groups=g, bias=False), nn.BatchNorm2d(c2))

    def forward(self, x: Tensor) -> Tensor:
        if hasattr(self, "rbr_reparam"):
            return self.act(self.rbr_reparam(x))
        y = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            y = y + self.rbr_identity(x)
        return self.act(y)

    @staticmethod
    def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
        assert bn.running_mean is not None and bn.running_var is not None
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        return scale, bn.bias - bn.running_mean * scale

    @torch.no_grad()
    def equivalent_kernel_bias(self) -> tuple[Tensor, Tensor]:
        """The 3x3 kernel and bias of the single conv equal to the three training branches."""
        conv3, bn3 = cast(nn.Conv2d, self.rbr_dense[0]), cast(nn.BatchNorm2d, self.rbr_dense[1])
        s3, b3 = self._bn_scale_shift(bn3)
        kernel = conv3.weight * s3.view(-1, 1, 1, 1)
        bias = b3.clone()
        conv1, bn1 = cast(nn.Conv2d, self.rbr_1x1[0]), cast(nn.BatchNorm2d, self.rbr_1x1[1])
        s1, b1 = self._bn_scale_shift(bn1)
        kernel = kernel + nn.functional.pad(conv1.weight * s1.view(-1, 1, 1, 1), [1, 1, 1, 1])
        bias = bias + b1
        if self.rbr_identity is not None:
            cin_g = self.in_channels // self.groups
            ident = torch.zeros_like(kernel)
            idx = torch.arange(self.in_channels, device=kernel.device)
            ident[idx, idx % cin_g, 1, 1] = 1.0
            si, bi = self._bn_scale_shift(self.rbr_identity)
            kernel = kernel + ident * si.view(-1, 1, 1, 1)
            bias = bias + bi
        return kernel, bias

    @torch.no_grad()
    def fuse(self) -> None:
        """Re-parameterise into ``rbr_reparam`` and delete the training branches."""
        if hasattr(self, "rbr_reparam"):
            return
        kernel, bias = self.equivalent_kernel_bias()
        dense = cast(nn.Conv2d, self.rbr_dense[0])
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            3,
            cast("tuple[int, int]", dense.stride),
            1,
            groups=self.groups,
            bias=True,
            device=kernel.device,
            dtype=kernel.dtype,
        )
        conv.weight = nn.Parameter(kernel.detach().clone())
        conv.bias = nn.Parameter(bias.detach().clone())
        del self.rbr_dense, self.rbr_1x1, self.rbr_identity
        self.rbr_reparam = conv
        self.deploy = True
