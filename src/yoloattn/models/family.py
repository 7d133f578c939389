"""Model families: which detector a config describes, in one table.

The engine picks its loss, NMS settings, metric rules and training recipe from a model's family
(``model.family``, or :func:`family_of` on a config) instead of testing module names itself:

========  ==========================================  ===================================
family    how a config is recognised                  shipped configs
========  ==========================================  ===================================
``v5``    anchor-based ``Detect`` head                yolov5n/s/m/l/x
``v7``    ``IDetect`` head (YOLOv7 training form)     yolov7-tiny, yolov7, yolov7x
``v8``    anchor-free ``Detect [nc]`` head, no C3k2   yolov8n/s/m/l/x
``11``    anchor-free ``Detect [nc]`` head with C3k2  yolo11n/s/m/l/x
========  ==========================================  ===================================

A config whose last row is no detection head (a backbone-only research config) is ``v5``, as the
engine always treated it. The anchor-free families differ only in the head's class branch
(``legacy``) as far as the engine is concerned: both train with the DFL/CIoU/task-aligned loss
and validate with the NMS rules of ``shared/spec/yolov8-yolo11.md`` section 6.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from yoloattn.models.block_table import NON_LEGACY_HEAD_MODULES
from yoloattn.models.config import config_rows, detect_row, module_key, module_name

__all__ = ["Family", "FAMILIES", "family_of"]


@dataclass(frozen=True)
class Family:
    """One model family.

    Attributes:
        key: ``v5``, ``v7``, ``v8`` or ``11``.
        title: display name.
        anchor_free: the head predicts DFL box bins without anchors or objectness.
        shipped: the shipped config names of the family.
    """

    key: str
    title: str
    anchor_free: bool
    shipped: tuple[str, ...]


FAMILIES: dict[str, Family] = {
    "v5": Family("v5", "YOLOv5", False, tuple(f"yolov5{s}" for s in "nsmlx")),
    "v7": Family("v7", "YOLOv7", False, ("yolov7-tiny", "yolov7", "yolov7x")),
    "v8": Family("v8", "YOLOv8", True, tuple(f"yolov8{s}" for s in "nsmlx")),
    "11": Family("11", "YOLO11", True, tuple(f"yolo11{s}" for s in "nsmlx")),
}


def is_anchor_free_head(row: Any) -> bool:
    """A ``Detect`` row whose args are ``[nc]`` alone (the YOLOv8/11 head, spec 1.2)."""
    return module_key(row) == "detect" and isinstance(row[3], list) and len(row[3]) == 1


def family_of(cfg: Mapping[str, Any]) -> str:
    """The family key (:data:`FAMILIES`) of a config dict (rows as written or expanded)."""
    rows, _ = config_rows(cfg)
    det = detect_row(rows)
    if det is None:
        return "v5"
    head = rows[det]
    if module_key(head) == "idetect":
        return "v7"
    if is_anchor_free_head(head):
        names = {module_name(r[2]) for r in rows}
        return "11" if names & NON_LEGACY_HEAD_MODULES else "v8"
    return "v5"
