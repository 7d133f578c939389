"""The attention zoo: plug-in attention modules for any CNN, each faithful to its paper.

``create_attention(name, channels, **hyper)`` builds a module by key and
``list_attention()`` lists them with their metadata (paper, venue, year, parameter formula).
The package knows nothing of YOLO; it can be used with any ``N x C x H x W`` feature map.

One file per module family (timm's grain), each citing its paper(s); helpers shared by the
families live once in ``_common.py``; lookup, metadata and keyword aliases in ``registry.py``;
``attention_map(module, x)`` (``maps.py``) reads any module's attention in one uniform shape.
"""

# Importing a family module registers its keys.
from yoloattn.attention import (  # noqa: F401
    acmix,
    bam,
    bilevel_routing,
    bottleneck_attn,
    cbam,
    coord,
    cot,
    cpca,
    criss_cross,
    double_attention,
    dual_attention,
    eca,
    ema,
    external,
    fca,
    gam,
    gct,
    global_context,
    group_wise,
    large_kernel,
    nam,
    non_local,
    outlook,
    parnet,
    polarized,
    selective_kernel,
    simam,
    soca,
    spatial_shift,
    squeeze_excite,
    srm,
    triplet,
)
from yoloattn.attention.maps import AttentionMap, attention_map, capture_maps
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
    "AttentionMap",
    "attention_map",
    "capture_maps",
    "create_attention",
    "get_attention_info",
    "list_attention",
    "register_attention",
    "resolve_attention_key",
]
