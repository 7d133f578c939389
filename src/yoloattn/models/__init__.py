"""Detectors built from official-format YOLOv5 / YOLOv7 model configs.

``build_model("yolov5s", nc=20)`` builds a model; ``load_config`` reads a shipped name, a YAML
path or a dict; ``profile`` reports per-row parameters, GFLOPs and output shapes.
"""

from yoloattn.models.config import SHIPPED, ConfigError, load_config
from yoloattn.models.detector import Model, build_model
from yoloattn.models.parse import resolve_rows
from yoloattn.models.profile import count_flops, profile

__all__ = [
    "SHIPPED",
    "ConfigError",
    "Model",
    "build_model",
    "count_flops",
    "load_config",
    "profile",
    "resolve_rows",
]
