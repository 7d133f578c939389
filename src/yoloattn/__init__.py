"""yoloattn: attention modules for YOLOv5/YOLOv7 detectors.

Public entry points are imported lazily so that ``import yoloattn`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "create_attention": "yoloattn.attention.registry",
    "list_attention": "yoloattn.attention.registry",
    "get_attention_info": "yoloattn.attention.registry",
    "AttentionInfo": "yoloattn.attention.registry",
    "build_model": "yoloattn.models.detector",
    "Model": "yoloattn.models.detector",
    "profile": "yoloattn.models.profile",
    "place_attention": "yoloattn.models.placement",
    "load_model": "yoloattn.models.weights",
    "save_model": "yoloattn.models.weights",
    "transfer_weights": "yoloattn.models.weights",
    "TransferReport": "yoloattn.models.weights",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        mod = importlib.import_module(_LAZY[name])
        return getattr(mod, name)
    raise AttributeError(f"module 'yoloattn' has no attribute {name!r}")
