"""Frequency channel attention: an SE gate whose squeeze uses several 2-D DCT frequencies.

* ``fca`` -- "FcaNet: Frequency Channel Attention Networks", Qin, Zhang, Wu, Li, ICCV 2021.

The official resampling to the DCT grid (``adaptive_avg_pool2d``) is an explicit pooling matrix
here, with identical numbers, so the module exports to ONNX with dynamic H and W.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from yoloattn.attention._common import (
    float32,
    no_autocast,
    require_at_least,
    require_divisible,
)
from yoloattn.attention.registry import register_attention

__all__ = ["FCA", "fca_dct_filters"]


# Paper's ranked list of the 16 best single frequencies on the 7x7 grid ("top16"), (u, v).
_FCA_TOP16: tuple[tuple[int, int], ...] = (
    (0, 0), (0, 1), (6, 0), (0, 5), (0, 2), (1, 0), (1, 2), (4, 0),
    (5, 0), (1, 6), (3, 0), (0, 4), (0, 6), (0, 3), (3, 5), (2, 2),
)  # fmt: skip
_FCA_SELECTIONS = {f"top{n}": n for n in (1, 2, 4, 8, 16)}


def _dct_1d(freq: int, length: int) -> Tensor:
    pos = torch.arange(length, dtype=torch.float64)
    basis = torch.cos(math.pi * freq * (pos + 0.5) / length) / math.sqrt(length)
    return basis * math.sqrt(2.0) if freq > 0 else basis


def fca_dct_filters(channels: int, dct_size: int = 7, freq_sel: str = "top16") -> Tensor:
    """Fixed 2-D DCT filters of FcaNet, shape ``C x d x d``.

    Channel part ``i`` (of ``n`` equal parts) holds the basis of frequency ``(u_i, v_i)``
    scaled by ``d // 7``; basis value ``cos(pi f (p + 0.5) / L) / sqrt(L)``, times sqrt(2)
    for ``f > 0``.
    """
    n = _FCA_SELECTIONS[freq_sel]
    scale = dct_size // 7
    part = channels // n
    out = torch.zeros(channels, dct_size, dct_size, dtype=torch.float64)
    for i, (u, v) in enumerate(_FCA_TOP16[:n]):
        out[i * part : (i + 1) * part] = torch.outer(
            _dct_1d(u * scale, dct_size), _dct_1d(v * scale, dct_size)
        )
    return out.float()


def _adaptive_avg_matrix(size: int, out: int, ref: Tensor) -> Tensor:
    """``out x size`` matrix M with ``M @ v == adaptive_avg_pool1d(v, out)``.

    Bins as in PyTorch: ``[floor(i*size/out), ceil((i+1)*size/out))``. Built from tensor ops
    on the (traced) size, so ONNX export keeps H and W dynamic.
    """
    idx = torch.arange(out, device=ref.device)
    start = torch.div(idx * size, out, rounding_mode="floor")
    end = torch.div((idx + 1) * size + (out - 1), out, rounding_mode="floor")
    pos = torch.arange(size, device=ref.device)
    mask = (pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])
    return mask.to(ref.dtype) / (end - start).to(ref.dtype)[:, None]


@register_attention(
    "fca",
    paper="FcaNet: Frequency Channel Attention Networks",
    venue="ICCV",
    year=2021,
    category="channel",
    reference="cfzd/FcaNet model/layer.py",
    formula="2C^2/r (no bias; DCT filters are a fixed buffer)",
    params=lambda c, reduction, **_: 2 * c * (c // reduction),
    summary="SE whose squeeze uses several 2-D DCT frequencies (one per channel group) "
    "instead of only the DC component (= average pooling).",
    equations="2-D DCT basis; multi-spectral attention s = sigma(W2 delta(W1 DCT(Group(X)))), Y = s X",
    source_note="The official code resamples to the d x d DCT grid with adaptive_avg_pool2d, "
    "which cannot export with dynamic H/W; here the same resampling is an explicit pooling "
    "matrix built from the input size (identical numbers, dynamic export works). DCT filters "
    "are a fixed buffer (not counted as parameters).",
)
class FCA(nn.Module):
    """Multi-spectral channel attention of FcaNet.

    Paper: "FcaNet: Frequency Channel Attention Networks", Zequn Qin, Pengyi Zhang, Fei Wu,
    Xi Li, ICCV 2021, arXiv 2012.11879. The input is resampled to the ``d x d`` DCT grid
    (average pooling with PyTorch's adaptive bins; identity when H = W = d); the channels are
    split into ``n`` parts, part ``i`` is projected on the 2-D DCT basis of frequency
    ``(u_i, v_i)`` (the paper's 2-D DCT basis); then a bias-free SE MLP ``C -> C/r -> C``
    with ReLU and sigmoid gives ``out = x * s`` (multi-spectral channel attention).
    Frequencies are the paper's ranked "top16" list on the 7x7 grid, scaled by ``d // 7``.
    Any H, W works (the result depends on how the map is resampled to ``d x d``); the
    resampling is done in float32.

    Args:
        channels: input channels C (divisible by the number of frequencies).
        reduction: r of the MLP (16).
        dct_size: d, side of the DCT grid (7 for a plug-in; the official ResNet uses
            56/28/14/7 for its four stages).
        freq_sel: ``"top1"``, ``"top2"``, ``"top4"``, ``"top8"`` or ``"top16"``.
    """

    dct_filters: Tensor  # buffer registered in __init__

    def __init__(
        self, channels: int, reduction: int = 16, dct_size: int = 7, freq_sel: str = "top16"
    ) -> None:
        super().__init__()
        if freq_sel not in _FCA_SELECTIONS:
            raise ValueError(
                f"fca: freq_sel={freq_sel!r} is not supported; pass one of {sorted(_FCA_SELECTIONS)}"
            )
        n = _FCA_SELECTIONS[freq_sel]
        require_divisible(
            "fca", channels, n, f"number of frequencies of freq_sel={freq_sel!r}", "pass freq_sel='top8'"
        )
        require_at_least("fca", "dct_size", dct_size, 7, "pass dct_size=7 (or a multiple of 7)")
        hidden = channels // reduction
        require_at_least(
            "fca", "channels // reduction", hidden, 1, f"pass reduction<={channels} for C={channels}"
        )
        self.dct_size = dct_size
        self.register_buffer("dct_filters", fca_dct_filters(channels, dct_size, freq_sel))
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        d = self.dct_size
        with no_autocast(x):
            x32 = float32(x)
            ph = _adaptive_avg_matrix(x.shape[2], d, x32)  # d x H
            pw = _adaptive_avg_matrix(x.shape[3], d, x32)  # d x W
            grid = torch.matmul(torch.matmul(ph, x32), pw.t())  # B x C x d x d
            y = (grid * self.dct_filters.to(x32.dtype)).sum((2, 3), keepdim=True)
        s = torch.sigmoid(self.fc2(self.act(self.fc1(y.to(x.dtype)))))
        return x * s.to(x.dtype)
