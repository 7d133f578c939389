"""Composite blocks of YOLOv5 (v6.0+) and YOLOv7.

Written from ``shared/spec/yolo-architectures.md`` sections 3.3-3.6 and 4.3-4.6. Attribute
names and registration order (``cv1``, ``cv2``, ..., ``m``) are those of the official networks,
so official state dicts load unchanged.

* YOLOv5: ``Bottleneck``, ``C3`` (CSP bottleneck with 3 convs), ``SPP``, ``SPPF``, ``Focus``.
* YOLOv7: ``SPPCSPC``, ``MP`` and ``SP`` (the ELAN and MP-Conv patterns are plain YAML rows).
* Both: ``Concat``.

Papers: the cross-stage-partial split of ``C3``/``SPPCSPC`` follows "CSPNet: A New Backbone that
can Enhance Learning Capability of CNN" (Wang et al., CVPR Workshops 2020, Fig. 2); the pooling
pyramid of ``SPP``/``SPPF``/``SPPCSPC`` follows "Spatial Pyramid Pooling in Deep Convolutional
Networks for Visual Recognition" (He et al., ECCV 2014) in its stride-1, same-size form; YOLOv7
is "YOLOv7: Trainable bag-of-freebies sets new state-of-the-art for real-time object detectors"
(Wang, Bochkovskiy, Liao, CVPR 2023). YOLOv5 has no paper; its blocks follow the spec.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from yoloattn.nn.conv import Conv

__all__ = ["Bottleneck", "C3", "SPP", "SPPF", "SPPCSPC", "Focus", "MP", "SP", "Concat"]


class Bottleneck(nn.Module):
    """``x + cv2(cv1(x))`` (residual only if ``shortcut`` and ``c1 == c2``); hidden ``int(c2*e)``."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1, g=g)
        self.add = bool(shortcut) and c1 == c2

    def forward(self, x: Tensor) -> Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP bottleneck with three convs: ``cv3(cat(m(cv1(x)), cv2(x)))``, bottleneck branch first."""

    def __init__(
        self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5
    ) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: Tensor) -> Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPP(nn.Module):
    """Spatial pyramid pooling: parallel stride-1 max pools of sizes ``k`` on ``cv1(x)``."""

    def __init__(self, c1: int, c2: int, k: tuple[int, ...] | list[int] = (5, 9, 13)) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * (len(k) + 1), c2, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)

    def forward(self, x: Tensor) -> Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [m(x) for m in self.m], 1))


class SPPF(nn.Module):
    """Fast SPP: one ``k x k`` pool applied three times in a chain (equals SPP(5, 9, 13) at k=5)."""

    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: Tensor) -> Tensor:
        a = self.cv1(x)
        b = self.m(a)
        c = self.m(b)
        return self.cv2(torch.cat((a, b, c, self.m(c)), 1))


class SPPCSPC(nn.Module):
    """YOLOv7 CSP spatial pyramid pooling block (spec section 4.5).

    ``x1 = cv4(cv3(cv1(x)))``; ``y1 = cv6(cv5(cat(x1, pool5(x1), pool9(x1), pool13(x1))))``;
    ``y2 = cv2(x)``; output ``cv7(cat(y1, y2))``. ``n``, ``shortcut`` and ``g`` are accepted for
    the parser's CSP argument convention and ignored.
    """

    def __init__(
        self,
        c1: int,
        c2: int,
        n: int = 1,
        shortcut: bool = False,
        g: int = 1,
        e: float = 0.5,
        k: tuple[int, ...] | list[int] = (5, 9, 13),
    ) -> None:
        super().__init__()
        c_ = int(2 * c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(c_, c_, 3, 1)
        self.cv4 = Conv(c_, c_, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)
        self.cv5 = Conv(4 * c_, c_, 1, 1)
        self.cv6 = Conv(c_, c_, 3, 1)
        self.cv7 = Conv(2 * c_, c2, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.cv4(self.cv3(self.cv1(x)))
        y1 = self.cv6(self.cv5(torch.cat([x1] + [m(x1) for m in self.m], 1)))
        y2 = self.cv2(x)
        return self.cv7(torch.cat((y1, y2), 1))


class Focus(nn.Module):
    """Space-to-depth stem of YOLOv5 <= 5.0: four pixel-phase slices concatenated, then a Conv."""

    def __init__(
        self,
        c1: int,
        c2: int,
        k: int = 1,
        s: int = 1,
        p: int | None = None,
        g: int = 1,
        act: bool | nn.Module = True,
    ) -> None:
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, s, p, g, act=act)

    def forward(self, x: Tensor) -> Tensor:
        parts = (x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2])
        return self.conv(torch.cat(parts, 1))


class MP(nn.Module):
    """YOLOv7 down-sampling max pool: ``MaxPool2d(k, stride=k)``."""

    def __init__(self, k: int = 2) -> None:
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=k, stride=k)

    def forward(self, x: Tensor) -> Tensor:
        return self.m(x)


class SP(nn.Module):
    """YOLOv7 size-keeping max pool: ``MaxPool2d(k, stride=s, padding=k // 2)``."""

    def __init__(self, k: int = 3, s: int = 1) -> None:
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=k, stride=s, padding=k // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.m(x)


class Concat(nn.Module):
    """Concatenate a list of tensors along ``dimension`` (the order of the row's ``from``)."""

    def __init__(self, dimension: int = 1) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, x: list[Tensor]) -> Tensor:
        return torch.cat(x, self.d)
