"""YOLO-format data: dataset YAML, checked reading with a scan cache, augmentation, batches.

``data/`` is a ground-floor layer: it imports neither ``nn``, ``attention``, ``models`` nor
``engine``. Its files, each importing only the ones listed before it:

- ``boxes.py``: box formats, clipping, the letterbox geometry and its inverse;
- ``colour.py``: HSV jitter by lookup tables;
- ``augment.py``: image/box augmentations and the letterbox;
- ``mosaic.py``: the mosaic and its affine in one step (training items);
- ``config.py``: the dataset YAML (:class:`DatasetConfig`);
- ``report.py``: :class:`Problem` and the :class:`ScanReport` of a split;
- ``cache.py``: the ``.npz`` scan cache;
- ``scan.py``: finding and checking images and labels (:func:`scan_split`);
- ``dataset.py``: the torch ``Dataset`` (:class:`YoloDataset`) and :func:`read_image`;
- ``loader.py``: batches (collate function, batch sampler, DataLoader builder);
- ``plots.py``: ``labels.png``.
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
from yoloattn.data.config import DatasetConfig, load_dataset_config
from yoloattn.data.dataset import YoloDataset, read_image
from yoloattn.data.loader import Batch, YoloBatchSampler, YoloDataLoader, build_dataloader, collate_fn
from yoloattn.data.report import IMG_FORMATS, PROBLEM_KINDS, Problem, ScanReport
from yoloattn.data.scan import img2label_path, scan_split

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
