"""Building blocks of the YOLOv5 (v6.0+), YOLOv7, YOLOv8 and YOLO11 detectors.

Every class keeps the official sub-module names and registration order, so official state
dicts load with ``strict=True``. See ``shared/spec/yolo-architectures.md`` sections 3-4,
and ``shared/spec/yolov8-yolo11.md`` sections 2-3.
"""

from yoloattn.nn.blocks import C3, MP, SP, SPP, SPPCSPC, SPPF, Bottleneck, Concat, Focus
from yoloattn.nn.blocks_v8 import C2PSA, BottleneckK, C2f, C3k, C3k2, PSAAttention, PSABlock
from yoloattn.nn.conv import Conv, DWConv, RepConv, autopad, fold_conv_bn, make_act
from yoloattn.nn.head_v8 import DFL, DFLDetect, dist2bbox, make_anchors
from yoloattn.nn.heads import Detect, IDetect, ImplicitA, ImplicitM

__all__ = [
    "autopad",
    "make_act",
    "fold_conv_bn",
    "Conv",
    "DWConv",
    "RepConv",
    "Bottleneck",
    "C3",
    "SPP",
    "SPPF",
    "SPPCSPC",
    "Focus",
    "MP",
    "SP",
    "Concat",
    "Detect",
    "IDetect",
    "ImplicitA",
    "ImplicitM",
    "BottleneckK",
    "C2f",
    "C3k",
    "C3k2",
    "PSAAttention",
    "PSABlock",
    "C2PSA",
    "DFL",
    "DFLDetect",
    "make_anchors",
    "dist2bbox",
]
