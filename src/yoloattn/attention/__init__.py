"""The attention zoo: plug-in attention modules for any CNN, each faithful to its paper.

``create_attention(name, channels, **hyper)`` builds a module by key and
``list_attention()`` lists them with their metadata (paper, venue, year, parameter formula).
The package knows nothing of YOLO; it can be used with any ``N x C x H x W`` feature map.
"""

from yoloattn.attention import channel, context, hybrid, kernel, selfattn  # noqa: F401  (registration)
from yoloattn.attention.registry import (
    AttentionInfo,
    create_attention,
    get_attention_info,
    list_attention,
    register_attention,
    resolve_attention_key,
)

__all__ = [
    "AttentionInfo",
    "create_attention",
    "get_attention_info",
    "list_attention",
    "register_attention",
    "resolve_attention_key",
]
