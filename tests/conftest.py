"""Shared fixtures: a tiny synthetic YOLO dataset that trains in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# Tiny models run fastest on one thread, and one thread cannot be starved by oversubscription
# when the machine is busy (2 threads on 2 loaded cores were 25x slower here).
torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def make_tiny_dataset(root: Path, n_train: int = 8, n_val: int = 4, size: int = 64, nc: int = 2) -> Path:
    """Images with one or two coloured rectangles each, labelled in YOLO format."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = np.full((size, size + 16, 3), 40, np.uint8)
            rows = []
            for _ in range(1 + i % 2):
                c = int(rng.integers(nc))
                w, h = (int(v) for v in rng.integers(12, 28, 2))
                x0, y0 = int(rng.integers(0, size + 16 - w)), int(rng.integers(0, size - h))
                img[y0 : y0 + h, x0 : x0 + w] = (220, 60, 60) if c == 0 else (60, 220, 60)
                W, H = size + 16, size
                rows.append(f"{c} {(x0 + w / 2) / W:.6f} {(y0 + h / 2) / H:.6f} {w / W:.6f} {h / H:.6f}")
            Image.fromarray(img).save(root / "images" / split / f"im{i}.jpg", quality=95)
            (root / "labels" / split / f"im{i}.txt").write_text("\n".join(rows) + "\n")
    names = "\n".join(f"  {i}: c{i}" for i in range(nc))
    yaml_path = root / "tiny.yaml"
    yaml_path.write_text(f"path: .\ntrain: images/train\nval: images/val\nnc: {nc}\nnames:\n{names}\n")
    return yaml_path


@pytest.fixture(scope="session")
def make_dataset():
    """:func:`make_tiny_dataset` itself, for tests that need another size."""
    return make_tiny_dataset


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"))
