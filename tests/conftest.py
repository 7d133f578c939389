"""Shared fixtures: a tiny synthetic YOLO dataset that trains in seconds."""

from __future__ import annotations

from collections.abc import Iterator
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


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time (ns)."""
    if not root.is_dir():
        return {}
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture(scope="session", autouse=True)
def shared_datasets_untouched() -> Iterator[None]:
    """The suite must never write into ``../shared`` (read-only in CI, writable for a root user
    here): the datasets folder is the same, file for file, after the session as before it."""
    before = _snapshot(SHARED)
    yield
    after = _snapshot(SHARED)
    changed = sorted(
        set(before) ^ set(after) | {k for k in before.keys() & after.keys() if before[k] != after[k]}
    )
    assert not changed, f"the tests wrote into {SHARED}: {changed[:10]} (point caches at a temporary folder)"


@pytest.fixture(scope="session")
def make_dataset():
    """:func:`make_tiny_dataset` itself, for tests that need another size."""
    return make_tiny_dataset


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"))
