"""Bundled demo material: a small raccoon dataset (MIT, see raccoon/LICENSE.md) and base weights."""

from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
DEMO_DATA = DEMO_DIR / "raccoon" / "raccoon.yaml"
DEMO_WEIGHTS = DEMO_DIR / "yolov5n-raccoon.safetensors"


def demo_data() -> Path:
    if not DEMO_DATA.is_file():
        raise FileNotFoundError(f"demo dataset missing at {DEMO_DATA}; reinstall yoloattn")
    return DEMO_DATA


def demo_weights() -> Path:
    if not DEMO_WEIGHTS.is_file():
        raise FileNotFoundError(f"demo weights missing at {DEMO_WEIGHTS}; see docs/demo.md to rebuild them")
    return DEMO_WEIGHTS
