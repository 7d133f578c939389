"""Engine layer: training loop, losses, NMS, metrics, COCO evaluation, prediction and plots.

Submodules are imported explicitly (``from yoloattn.engine.nms import non_max_suppression``);
this package file stays empty so that importing one part does not pull in the others.
"""
