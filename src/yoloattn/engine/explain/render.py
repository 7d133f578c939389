"""Maps back onto the original image (undoing the letterbox) and drawn as coloured overlays.

A map computed on the letterboxed network input (or on a feature map of it, which covers the
input exactly) is upsampled to the input size, the letterbox padding is cut off, and the rest is
resized to the original image: :func:`to_image`. :func:`overlay` blends a ``[0, 1]`` map onto the
image with a colormap; :func:`caption` adds a title strip; :func:`grid` tiles several panels.
Images are Pillow images; colours come from matplotlib's colormaps (no figure is drawn).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

__all__ = ["caption", "channel_strip", "colorize", "grid", "normalise", "overlay", "to_image"]


def to_image(
    m: Tensor,
    input_hw: tuple[int, int],
    ratio: tuple[float, float],
    pad: tuple[float, float],
    orig_hw: tuple[int, int],
) -> np.ndarray:
    """Map ``m`` (``h x w``, over the letterboxed input of size ``input_hw``) to the original image.

    ``ratio = (rw, rh)`` and ``pad = (left, top)`` are what :func:`yoloattn.data.augment.letterbox`
    returned for that input. Returns a float32 ``orig_h x orig_w`` array.
    """
    h_in, w_in = input_hw
    h0, w0 = orig_hw
    t = m.detach().float().cpu()[None, None]
    if tuple(t.shape[2:]) != (h_in, w_in):
        t = F.interpolate(t, size=(h_in, w_in), mode="bilinear", align_corners=False)
    left, top = int(round(pad[0])), int(round(pad[1]))
    uw = min(max(1, int(round(w0 * ratio[0]))), w_in - left)
    uh = min(max(1, int(round(h0 * ratio[1]))), h_in - top)
    t = t[:, :, top : top + uh, left : left + uw]
    t = F.interpolate(t, size=(h0, w0), mode="bilinear", align_corners=False)
    return t[0, 0].numpy()


def normalise(a: np.ndarray, mode: str = "minmax") -> np.ndarray:
    """Scale to ``[0, 1]`` for display: ``"minmax"`` stretches, ``"max"`` divides by the maximum."""
    a = a.astype(np.float32)
    lo = float(a.min()) if mode == "minmax" else 0.0
    span = float(a.max()) - lo
    return np.clip((a - lo) / span, 0.0, 1.0) if span > 1e-12 else np.zeros_like(a)


def colorize(a: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """``[0, 1]`` map -> ``H x W x 3`` uint8 RGB with a matplotlib colormap."""
    from matplotlib import colormaps

    rgba = colormaps[cmap](np.clip(a, 0.0, 1.0))
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def overlay(img0: np.ndarray, a: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> Image.Image:
    """Blend the ``[0, 1]`` map ``a`` (same ``H x W`` as ``img0``) onto the RGB image."""
    if a.shape != img0.shape[:2]:
        raise ValueError(f"map of shape {a.shape} does not match the image {img0.shape[:2]}")
    heat = colorize(a, cmap).astype(np.float32)
    out = img0.astype(np.float32) * (1 - alpha) + heat * alpha
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))


def channel_strip(weights: Tensor, width: int, height: int = 14, cmap: str = "viridis") -> Image.Image:
    """Channel weights as a colour strip (channel 0 left), stretched to their own min-max."""
    w = normalise(weights.detach().float().cpu().numpy()[None, :])
    strip = Image.fromarray(colorize(w, cmap))
    return strip.resize((width, height), Image.Resampling.NEAREST)


def caption(im: Image.Image, text: str, below: Image.Image | None = None) -> Image.Image:
    """``im`` with a black title strip above (and ``below`` pasted under it, e.g. a channel strip)."""
    font = ImageFont.load_default()
    lines = text.split("\n")
    probe = ImageDraw.Draw(im)
    line_h = int(max(probe.textbbox((0, 0), ln, font=font)[3] for ln in lines)) + 4
    top = line_h * len(lines) + 4
    extra = below.height if below is not None else 0
    out = Image.new("RGB", (im.width, im.height + top + extra), (0, 0, 0))
    draw = ImageDraw.Draw(out)
    for k, ln in enumerate(lines):
        draw.text((4, 2 + k * line_h), ln, fill=(255, 255, 255), font=font)
    out.paste(im.convert("RGB"), (0, top))
    if below is not None:
        out.paste(below.convert("RGB"), (0, top + im.height))
    return out


def grid(panels: Sequence[Image.Image], columns: int = 3, width: int = 320) -> Image.Image:
    """Panels resized to ``width`` and tiled row by row (black background)."""
    if not panels:
        raise ValueError("grid needs at least one panel")
    scaled = [
        p.resize((width, max(1, round(p.height * width / p.width))), Image.Resampling.BILINEAR)
        for p in panels
    ]
    cols = min(columns, len(scaled))
    rows = [scaled[i : i + cols] for i in range(0, len(scaled), cols)]
    heights = [max(p.height for p in r) for r in rows]
    out = Image.new("RGB", (cols * width, sum(heights)), (0, 0, 0))
    y = 0
    for r, h in zip(rows, heights):
        for k, p in enumerate(r):
            out.paste(p, (k * width, y))
        y += h
    return out
