"""ACmix: shared 1x1 projections feeding a windowed self-attention path and a shift-conv path.

* ``acmix`` -- "On the Integration of Self-Attention and Convolution", Pan et al., CVPR 2022:
  ``alpha * att + beta * conv``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yoloattn.attention._common import (
    float32,
    no_autocast,
    require_at_least,
    require_divisible,
    require_odd,
)
from yoloattn.attention.registry import register_attention

__all__ = ["ACmix"]


def _acmix_params(c: int, heads: int, kernel_att: int, kernel_conv: int, **_: object) -> int:
    d = c // heads
    kc2 = kernel_conv * kernel_conv
    qkv = 3 * (c * c + c)
    pe = 2 * d + d  # conv 2 -> d, biased
    fc = 3 * heads * kc2  # no bias
    dep = c * kc2 * kc2 + c  # grouped conv (groups d): C x kc^2 x kc x kc, biased
    return qkv + pe + fc + dep + 2  # + alpha, beta


def _coordinate_grid(x: Tensor, dtype: torch.dtype) -> Tensor:
    """``1 x 2 x H x W`` grid in [-1, 1], channel 0 = x (width), 1 = y (official ``position``).

    Built from ``arange`` so it follows dynamic H, W in ONNX; a size-1 axis gives -1 like
    ``torch.linspace(-1, 1, 1)``.
    """
    h, w = x.shape[2], x.shape[3]
    ys = torch.arange(h, device=x.device, dtype=dtype)
    xs = torch.arange(w, device=x.device, dtype=dtype)
    ys = ys / ys[-1:].clamp(min=1) * 2 - 1
    xs = xs / xs[-1:].clamp(min=1) * 2 - 1
    gx = xs.reshape(1, 1, 1, -1) + torch.zeros_like(ys).reshape(1, 1, -1, 1)
    gy = ys.reshape(1, 1, -1, 1) + torch.zeros_like(xs).reshape(1, 1, 1, -1)
    return torch.cat([gx, gy], 1)


@register_attention(
    "acmix",
    onnx_opset=10,
    paper="On the Integration of Self-Attention and Convolution",
    venue="CVPR",
    year=2022,
    category="self-attention",
    reference="LeapLabTHU/ACmix ResNet/test_bottleneck.py",
    params=_acmix_params,
    formula="3C^2 + 343C/4 + 110 (heads 4, kernel_att 7, kernel_conv 3)",
    summary="Shares one set of 1x1 q/k/v projections between a local-window self-attention "
    "path (k_att x k_att) and a shift-convolution path, mixed by learnable scalars.",
    equations="Sec. 3.3 / Fig. 2: stage I shared 1x1 projections; stage II attention path "
    "(Eq. 2-3 with relative coordinate encoding) and convolution path (shift + sum, Eq. 12-13); "
    "F_out = alpha F_att + beta F_conv.",
    source_note="Follows the official ACmix class (no licence file; written from the paper and "
    "the spec). The grouped conv keeps its bias, zero-initialised (the official code sets it "
    "to None: C fewer parameters, same function at init). conv_p's bias cancels in "
    "pe - unfold(pe) exactly as in the official code, so it has no effect on the output. "
    "Export: unfold + reflection pad, risky on TensorRT/mobile runtimes.",
)
class ACmix(nn.Module):
    """ACmix: mixed self-attention and convolution (Pan et al., CVPR 2022, arXiv 2111.14556).

    Follows Sec. 3.3 / Fig. 2 of the paper (official ``ACmix`` at stride 1)::

        q, k, v = conv1x1(x) (three biased 1x1 convs, shared by both paths)
        pe = conv1x1_{2->d}(coordinate grid in [-1, 1])           # d = C/heads
        att:  per head, window k_att x k_att (reflection padded):
              w = softmax_window(q * d^-0.5 . (unfold(k) + pe - unfold(pe)))
              F_att = sum_window w * unfold(v)
        conv: f = fc1x1_{3h -> kc^2}([q, k, v] heads stacked)    # no bias
              F_conv = grouped conv kc x kc (groups d, shift-kernel init, zero bias)(f)
        out = alpha * F_att + beta * F_conv                        # alpha = beta = 0.5 at init

    Reflection padding needs ``H, W > kernel_att // 2`` (3 at the default 7): smaller maps
    raise a ValueError (``min_hw = 4``). No residual connection (spec rule 5.8).

    Args:
        channels: input channels C (divisible by ``heads``).
        heads: attention heads (paper: 4).
        kernel_att: attention window (paper: 7).
        kernel_conv: kernel of the convolution path (paper: 3).
    """

    min_hw = 4
    #: parameters kept for the paper's count that provably do not affect the output
    #: (conv_p's bias cancels in pe - unfold(pe)); the contract test skips their gradient check.
    inactive_parameters = ("conv_p.bias",)

    def __init__(
        self,
        channels: int,
        *,
        heads: int = 4,
        kernel_att: int = 7,
        kernel_conv: int = 3,
    ) -> None:
        super().__init__()
        require_at_least("acmix", "heads", heads, 1, "pass heads=4")
        require_divisible("acmix", channels, heads, "heads", "pass heads dividing channels, e.g. heads=4")
        require_odd("acmix", "kernel_att", kernel_att)
        require_odd("acmix", "kernel_conv", kernel_conv)
        c, d = channels, channels // heads
        self.heads = heads
        self.head_dim = d
        self.kernel_att = kernel_att
        self.kernel_conv = kernel_conv
        self.q = nn.Conv2d(c, c, 1)
        self.k = nn.Conv2d(c, c, 1)
        self.v = nn.Conv2d(c, c, 1)
        self.conv_p = nn.Conv2d(2, d, 1)
        kc2 = kernel_conv * kernel_conv
        self.fc = nn.Conv2d(3 * heads, kc2, 1, bias=False)
        self.dep_conv = nn.Conv2d(kc2 * d, c, kernel_conv, padding=kernel_conv // 2, groups=d)
        self.alpha = nn.Parameter(torch.full((1,), 0.5))
        self.beta = nn.Parameter(torch.full((1,), 0.5))
        with torch.no_grad():  # shift kernels: input channel i of each group -> offset i
            shift = torch.zeros(kc2, kernel_conv, kernel_conv)
            for i in range(kc2):
                shift[i, i // kernel_conv, i % kernel_conv] = 1.0
            self.dep_conv.weight.copy_(shift.unsqueeze(0).expand(c, -1, -1, -1))
            assert self.dep_conv.bias is not None
            nn.init.zeros_(self.dep_conv.bias)

    def attention_path(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Windowed attention, one window offset at a time.

        Equivalent to unfolding k, pe and v into ``k_att^2`` copies (the official form) but
        reads shifted views of the padded maps instead, so no ``N x d x k_att^2 x H x W`` tensor
        is built: about 4x faster on CPU at 8x256x40x40, equal to 1e-6.
        """
        b, c, h, w = q.shape
        nh, d, ka = self.heads, self.head_dim, self.kernel_att
        pad = (ka // 2,) * 4
        pe = self.conv_p(_coordinate_grid(q, float32(self.conv_p.weight).dtype))  # 1 x d x H x W
        q = q.reshape(b * nh, d, h, w) * d**-0.5
        offsets = [(i, j) for i in range(ka) for j in range(ka)]  # unfold's window order
        with no_autocast(q):
            q32, pe32 = float32(q), float32(pe)
            kp = F.pad(float32(k.reshape(b * nh, d, h, w)), pad, mode="reflect")
            pep = F.pad(pe32, pad, mode="reflect")
            logits = torch.stack(
                [
                    (q32 * (kp[:, :, i : i + h, j : j + w] + (pe32 - pep[:, :, i : i + h, j : j + w]))).sum(1)
                    for i, j in offsets
                ],
                1,
            )  # (B*heads) x k^2 x H x W
            attn = logits.softmax(1).to(v.dtype)
        vp = F.pad(v.reshape(b * nh, d, h, w), pad, mode="reflect")
        out = attn[:, :1] * vp[:, :, :h, :w]
        for n, (i, j) in enumerate(offsets[1:], 1):
            out = out + attn[:, n : n + 1] * vp[:, :, i : i + h, j : j + w]
        return out.reshape(b, c, h, w)

    def conv_path(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b, c, h, w = q.shape
        nh, d = self.heads, self.head_dim
        stacked = torch.cat([t.reshape(b, nh, d, h * w) for t in (q, k, v)], 1)  # B x 3h x d x HW
        f = self.fc(stacked)  # B x kc^2 x d x HW
        f = f.permute(0, 2, 1, 3).reshape(b, d * self.kernel_conv**2, h, w)
        return self.dep_conv(f)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[2], x.shape[3]
        p = self.kernel_att // 2
        if h <= p or w <= p:
            raise ValueError(
                f"acmix: input {h}x{w} is too small for kernel_att={self.kernel_att} (reflection "
                f"padding needs H, W > {p}); pass a smaller kernel_att"
            )
        q, k, v = self.q(x), self.k(x), self.v(x)
        return self.alpha * self.attention_path(q, k, v) + self.beta * self.conv_path(q, k, v)
