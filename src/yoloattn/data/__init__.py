"""YOLO-format data: dataset YAML, checked reading with a scan cache, augmentation, batches.

``data/`` is a ground-floor layer: it imports neither ``nn``, ``attention``, ``models`` nor
``engine``.
"""

from __future__ import annotations

from yoloattn.data.augment import (
    DEFAULT_HYP,
    AugmentParams,
    augment_hsv,
    box_candidates,
    letterbox,
    mixup,
    mosaic4,
    random_perspective,
)
from yoloattn.data.boxes import (
    clip_boxes,
    letterbox_geometry,
    scale_boxes,
    xywh2xyxy,
    xywhn2xyxy,
    xyxy2xywh,
    xyxy2xywhn,
)
from yoloattn.data.dataset import (
    IMG_FORMATS,
    PROBLEM_KINDS,
    DatasetConfig,
    Problem,
    ScanReport,
    YoloDataset,
    img2label_path,
    load_dataset_config,
    read_image,
    scan_split,
)
from yoloattn.data.loader import Batch, YoloBatchSampler, YoloDataLoader, build_dataloader, collate_fn

__all__ = [
    "DEFAULT_HYP",
    "IMG_FORMATS",
    "PROBLEM_KINDS",
    "AugmentParams",
    "Batch",
    "DatasetConfig",
    "Problem",
    "ScanReport",
    "YoloBatchSampler",
    "YoloDataLoader",
    "YoloDataset",
    "augment_hsv",
    "box_candidates",
    "build_dataloader",
    "clip_boxes",
    "collate_fn",
    "img2label_path",
    "letterbox",
    "letterbox_geometry",
    "load_dataset_config",
    "mixup",
    "mosaic4",
    "random_perspective",
    "read_image",
    "scale_boxes",
    "scan_split",
    "xywh2xyxy",
    "xywhn2xyxy",
    "xyxy2xywh",
    "xyxy2xywhn",
]
