"""Composite blocks of YOLOv8 and YOLO11: ``C2f``, ``C3k``, ``C3k2``, ``PSAAttention``,
``PSABlock`` and ``C2PSA``.

Written from ``shared/spec/yolov8-yolo11.md`` section 2 (no code of the ultralytics package was
read). Attribute names and registration order (``cv1``, ``cv2``, ``m``, ``attn.qkv``, ...) give
the official state-dict keys, so official weights load with ``strict=True``. ``SPPF``, ``Concat``
and the v5 ``C3`` are shared with YOLOv5 (:mod:`yoloattn.nn.blocks`); the spec's SPPF (SiLU on
``cv1``, one pool applied three times) is the YOLOv5 one.

* ``C2f``: a cross-stage-partial block whose every bottleneck output joins the final concat
  (the "C2f" of YOLOv8; the CSP idea is "CSPNet: A New Backbone that can Enhance Learning
  Capability of CNN", Wang et al., CVPR Workshops 2020).
* ``C3k2``: C2f with either plain bottlenecks (``e = 0.5``) or ``C3k`` blocks as its inner
  modules (YOLO11).
* ``C2PSA``: a C2f-style split around ``n`` position-sensitive attention blocks (multi-head
  self-attention over all positions + depthwise positional encoding + a 1x1 feed-forward),
  after "Attention Is All You Need" (Vaswani et al., NeurIPS 2017).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from yoloattn.nn.conv import Conv, IntOrPair

__all__ = ["BottleneckK", "C2f", "C3k", "C3k2", "PSAAttention", "PSABlock", "C2PSA"]


class BottleneckK(nn.Module):
    """Bottleneck with two kernel sizes ``k = (k1, k2)``: ``x + cv2(cv1(x))`` (spec 2.2).

    The residual is added only if ``shortcut`` and ``c1 == c2``; hidden width ``int(c2 * e)``.
    """

    def __init__(
        self,
        c1: int,
        c2: int,
        shortcut: bool = True,
        g: int = 1,
        k: tuple[IntOrPair, IntOrPair] = (3, 3),
        e: float = 0.5,
    ) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, k[0], 1)
        self.cv2 = Conv(c_, c2, k[1], 1, g=g)
        self.add = bool(shortcut) and c1 == c2

    def forward(self, x: Tensor) -> Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """``cv2(cat(y0, y1, m0(y1), m1(m0(y1)), ...))`` with ``(y0, y1) = split(cv1(x))`` (spec 2.3).

    ``c = int(c2 * e)``; bottlenecks ``BottleneckK(c, c, shortcut, g, (3, 3), e=1.0)``.
    """

    def __init__(
        self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5
    ) -> None:
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(self._inner(shortcut, g) for _ in range(n))

    def _inner(self, shortcut: bool, g: int) -> nn.Module:
        return BottleneckK(self.c, self.c, shortcut, g, k=(3, 3), e=1.0)

    def forward(self, x: Tensor) -> Tensor:
        ys = list(self.cv1(x).split((self.c, self.c), 1))
        for m in self.m:
            ys.append(m(ys[-1]))
        return self.cv2(torch.cat(ys, 1))


class C3k(nn.Module):
    """A ``C3`` whose bottlenecks are ``BottleneckK(c_, c_, shortcut, g, (k, k), e=1.0)`` (spec 2.4):
    ``cv3(cat(m(cv1(x)), cv2(x)))``, bottleneck branch first."""

    def __init__(
        self,
        c1: int,
        c2: int,
        n: int = 1,
        shortcut: bool = True,
        g: int = 1,
        e: float = 0.5,
        k: int = 3,
    ) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(BottleneckK(c_, c_, shortcut, g, k=(k, k), e=1.0) for _ in range(n)))

    def forward(self, x: Tensor) -> Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class C3k2(C2f):
    """C2f whose inner modules are ``C3k(c, c, 2, shortcut, g)`` (``c3k``) or ``BottleneckK(c, c,
    shortcut, g)`` with ``e = 0.5`` (spec 2.5). The second YAML argument is ``c3k``; the
    shortcut is always on in the official configs."""

    def __init__(
        self,
        c1: int,
        c2: int,
        n: int = 1,
        c3k: bool = False,
        e: float = 0.5,
        g: int = 1,
        shortcut: bool = True,
    ) -> None:
        self.c3k = bool(c3k)
        super().__init__(c1, c2, n, shortcut, g, e)

    def _inner(self, shortcut: bool, g: int) -> nn.Module:
        if self.c3k:
            return C3k(self.c, self.c, 2, shortcut, g)
        return BottleneckK(self.c, self.c, shortcut, g)


class PSAAttention(nn.Module):
    """Multi-head self-attention over all positions with a depthwise positional term (spec 2.7).

    ``qkv`` channels are grouped per head as ``[q (key_dim), k (key_dim), v (head_dim)]``;
    ``out = proj(v attn^T + pe(v))`` with ``attn = softmax(q^T k * key_dim^-0.5)`` over keys.
    Cost grows with ``(H W)^2``: it is meant for the stride-32 map.
    """

    def __init__(self, dim: int, num_heads: int = 8, attn_ratio: float = 0.5) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.key_dim = int(self.head_dim * attn_ratio)
        self.scale = self.key_dim**-0.5
        self.qkv = Conv(dim, dim + 2 * num_heads * self.key_dim, 1, act=False)
        self.proj = Conv(dim, dim, 1, act=False)
        self.pe = Conv(dim, dim, 3, 1, g=dim, act=False)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        n = h * w
        t = self.qkv(x).view(b, self.num_heads, 2 * self.key_dim + self.head_dim, n)
        q, k, v = t.split((self.key_dim, self.key_dim, self.head_dim), 2)
        attn = ((q.transpose(-2, -1) @ k) * self.scale).softmax(dim=-1)  # (b, heads, n_q, n_k)
        o = (v @ attn.transpose(-2, -1)).view(b, c, h, w)
        return self.proj(o + self.pe(v.reshape(b, c, h, w)))


class PSABlock(nn.Module):
    """``x + attn(x)`` then ``x + ffn(x)``; ``ffn = Conv(c, 2c, 1) -> Conv(2c, c, 1, act=False)``."""

    def __init__(self, c: int, attn_ratio: float = 0.5, num_heads: int = 4, shortcut: bool = True) -> None:
        super().__init__()
        self.attn = PSAAttention(c, num_heads, attn_ratio)
        self.ffn = nn.Sequential(Conv(c, 2 * c, 1), Conv(2 * c, c, 1, act=False))
        self.add = bool(shortcut)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(x) if self.add else self.attn(x)
        return x + self.ffn(x) if self.add else self.ffn(x)


class C2PSA(nn.Module):
    """``cv2(cat(a, m(b)))`` with ``(a, b) = split(cv1(x))`` and ``n`` PSA blocks (spec 2.9).

    Needs ``c1 == c2``; ``c = int(c1 * e)``; ``max(c // 64, 1)`` heads.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, e: float = 0.5) -> None:
        super().__init__()
        if c1 != c2:
            raise ValueError(f"C2PSA keeps the channel count: got c1={c1}, c2={c2}")
        self.c = int(c1 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv(2 * self.c, c1, 1)
        heads = max(self.c // 64, 1)
        self.m = nn.Sequential(*(PSABlock(self.c, attn_ratio=0.5, num_heads=heads) for _ in range(n)))

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.cv1(x).split((self.c, self.c), 1)
        return self.cv2(torch.cat((a, self.m(b)), 1))
