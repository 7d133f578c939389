"""Drawing boxes with class names and scores on images (Pillow's built-in font; nothing downloaded)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["draw_boxes", "color_for"]

_PALETTE = [
    (255, 56, 56),
    (255, 157, 151),
    (255, 112, 31),
    (255, 178, 29),
    (207, 210, 49),
    (72, 249, 10),
    (146, 204, 23),
    (61, 219, 134),
    (26, 147, 52),
    (0, 212, 187),
    (44, 153, 168),
    (0, 194, 255),
    (52, 69, 147),
    (100, 115, 255),
    (0, 24, 236),
    (132, 56, 255),
    (82, 0, 133),
    (203, 56, 255),
    (255, 149, 200),
    (255, 55, 199),
]


def color_for(c: int) -> tuple[int, int, int]:
    return _PALETTE[int(c) % len(_PALETTE)]


def draw_boxes(
    image: Image.Image | np.ndarray,
    boxes: Sequence[Sequence[float]],
    names: Sequence[str],
    *,
    scores: bool = True,
    line_width: int | None = None,
) -> Image.Image:
    """Draw ``boxes`` rows ``(x1, y1, x2, y2, conf, cls)`` (or ``(cls, x1, y1, x2, y2)`` when
    ``scores`` is False, i.e. ground truth) and return an RGB copy."""
    im = Image.fromarray(image) if isinstance(image, np.ndarray) else image.convert("RGB").copy()
    draw = ImageDraw.Draw(im)
    lw = line_width or max(round(sum(im.size) / 2 * 0.003), 2)
    font = ImageFont.load_default()
    for row in boxes:
        if scores:
            x1, y1, x2, y2, conf, c = (float(v) for v in row[:6])
            label = f"{names[int(c)] if int(c) < len(names) else int(c)} {conf:.2f}"
        else:
            c, x1, y1, x2, y2 = (float(v) for v in row[:5])
            label = names[int(c)] if int(c) < len(names) else str(int(c))
        col = color_for(int(c))
        draw.rectangle((x1, y1, x2, y2), outline=col, width=lw)
        tb = draw.textbbox((x1, y1), label, font=font)
        th = tb[3] - tb[1] + 2
        ty = y1 - th if y1 - th >= 0 else y1
        draw.rectangle((x1, ty, x1 + tb[2] - tb[0] + 4, ty + th), fill=col)
        draw.text((x1 + 2, ty), label, fill=(255, 255, 255), font=font)
    return im
