"""Explaining a detector: attention-row maps and detection heatmaps (LayerCAM, EigenCAM).

* :mod:`.rows` -- the attention rows of a detector and their maps
  (:func:`yoloattn.attention.attention_map` on each, via hooks that leave outputs unchanged);
* :mod:`.cam` -- LayerCAM per detection or class, gradient-free EigenCAM, on the Detect inputs;
* :mod:`.render` -- maps back onto the original image (letterbox undone), overlays, captions;
* :mod:`.explainer` -- one image end to end (:func:`explain_image`, :func:`save_explanation`).

Used by ``yoloattn explain`` and ``yoloattn predict --visualize``; see ``docs/explain.md``.
"""

from yoloattn.engine.explain.cam import (
    CAM_METHODS,
    CAM_TARGETS,
    CamResult,
    detect_sources,
    eigencam_maps,
    explain_detections,
    layercam_maps,
)
from yoloattn.engine.explain.explainer import (
    Explanation,
    RowView,
    explain_image,
    explanation_record,
    panel_captions,
    render_explanation,
    save_explanation,
)
from yoloattn.engine.explain.render import overlay, to_image
from yoloattn.engine.explain.rows import AttentionRow, attention_rows, capture_rows

__all__ = [
    "CAM_METHODS",
    "CAM_TARGETS",
    "AttentionRow",
    "CamResult",
    "Explanation",
    "RowView",
    "attention_rows",
    "capture_rows",
    "detect_sources",
    "eigencam_maps",
    "explain_detections",
    "explain_image",
    "explanation_record",
    "layercam_maps",
    "overlay",
    "panel_captions",
    "render_explanation",
    "save_explanation",
    "to_image",
]
