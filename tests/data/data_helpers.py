"""Helpers shared by the data tests: a tiny synthetic YOLO split with known boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
COLOURS = [(230, 20, 20), (20, 200, 40), (30, 60, 220), (240, 220, 30)]


def make_split(
    root: Path, split: str, items: list[tuple[int, int, list[tuple[int, int, int, int, int]]]]
) -> Path:
    """Write PNG images (grey with solid class-coloured rectangles) and YOLO labels."""
    img_dir, lbl_dir = root / "images" / split, root / "labels" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    for k, (h, w, rects) in enumerate(items):
        img = np.full((h, w, 3), 60, np.uint8)
        lines = []
        for c, x1, y1, x2, y2 in rects:
            img[y1:y2, x1:x2] = COLOURS[c]
            lines.append(
                f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
            )
        Image.fromarray(img).save(img_dir / f"im{k:02d}.png")
        (lbl_dir / f"im{k:02d}.txt").write_text("\n".join(lines) + "\n")
    return img_dir


def tiny_items(n: int = 6) -> list[tuple[int, int, list[tuple[int, int, int, int, int]]]]:
    out = []
    for k in range(n):
        h, w = (48, 64) if k % 2 else (64, 40)
        out.append((h, w, [(k % 4, 4, 4, 24, 30), ((k + 1) % 4, w - 16, h - 20, w - 2, h - 2)]))
    return out
