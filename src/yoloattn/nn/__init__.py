"""Building blocks of the YOLOv5 (v6.0+) and YOLOv7 detectors.

Every class keeps the official sub-module names and registration order, so official state
dicts load with ``strict=True``. See ``shared/spec/yolo-architectures.md`` sections 3-4.
"""

from yoloattn.nn.blocks import C3, MP, SP, SPP, SPPCSPC, SPPF, Bottleneck, Concat, Focus
from yoloattn.nn.conv import Conv, DWConv, RepConv, autopad, fold_conv_bn, make_act
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
]
