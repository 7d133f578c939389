"""Detection heatmaps: LayerCAM (per detection or per class) and gradient-free EigenCAM.

Both read the feature maps the Detect head receives (``model.model[-1].f`` lists the source
rows: P3, P4 and P5 for the YOLOv5/YOLOv7 models), or the outputs of any rows given as
``layers``, recorded by forward hooks during one forward pass of one image.

**LayerCAM** ("LayerCAM: Exploring Hierarchical Class Activation Maps for Localization", Jiang,
Zhang, Hou, Cheng, Wei, IEEE TIP 2021, Eq. 5-6): for a target score ``y`` and a feature map ``A``,
``M = ReLU(sum_k ReLU(dy/dA_k) * A_k)``, i.e. the positive first-order contributions of the
feature elements to ``y``. Contributions to one score add up across levels, so the level maps
are upsampled to the input size and summed, then scaled to a maximum of 1.

Targets, on the decoded head output (scores ``obj * cls`` as in NMS):

* ``"detection"``: one map per kept detection; its score is the sum of the scores, for the
  detection's class, of the candidates NMS merged into it (score above ``conf``, IoU with the
  kept box above ``iou``). Each YOLO output depends only on its own cell through the 1x1 head
  conv, so a single candidate would light a single cell; the merged candidates cover the object.
* ``"class"``: one map per detected class; its score sums that class over every candidate.

With no detection the best-scoring candidate is the target. The combined heatmap is the
element-wise maximum of the target maps.

**EigenCAM** ("Eigen-CAM: Class Activation Map using Principal Components", Muhammad and
Yeasin, IJCNN 2020): the projection of each level's (mean-centred) activations onto their first
principal component, sign chosen to agree with the activation energy, ReLU; class-agnostic and
gradient-free. Level maps are scaled to a maximum of 1 each and averaged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou

from yoloattn.engine.nms import PREDICT_NMS, non_max_suppression, xywh2xyxy

__all__ = [
    "CAM_METHODS",
    "CAM_TARGETS",
    "CamResult",
    "detect_sources",
    "eigencam_maps",
    "explain_detections",
    "layercam_maps",
]

CAM_METHODS = ("layercam", "eigencam")
CAM_TARGETS = ("detection", "class")


@dataclass
class CamResult:
    """Detection heatmaps of one image, at the network-input (letterboxed) resolution.

    Attributes:
        heatmap: ``(H, W)`` in ``[0, 1]``: the maximum over ``maps`` (LayerCAM) or the EigenCAM map.
        detections: ``(n, 6)`` ``x1 y1 x2 y2 conf cls`` in input pixels (after NMS).
        maps: one ``(H, W)`` map in ``[0, 1]`` per target (LayerCAM); ``[heatmap]`` for EigenCAM.
        labels: a label per map (``"det 0: raccoon 0.87"``, ``"class raccoon"``, ``"eigencam"``).
        layers: the rows whose outputs were explained.
        method, target: as requested.
    """

    heatmap: Tensor
    detections: Tensor
    maps: list[Tensor] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    layers: list[int] = field(default_factory=list)
    method: str = "layercam"
    target: str = "detection"


def detect_sources(model: nn.Module) -> list[int]:
    """The rows whose outputs the Detect head (last row) receives, e.g. ``[17, 20, 23]``."""
    layers: Any = model.model
    head = layers[-1]
    f = head.f
    if isinstance(f, int):
        f = [f]
    n = len(layers)
    return [int(j) % n if j != -1 else int(head.i) - 1 for j in f]


@contextlib.contextmanager
def _record_outputs(model: nn.Module, layers: Sequence[int]) -> Iterator[dict[int, Tensor]]:
    """Forward hooks that keep (a reference to) the outputs of rows ``layers``."""
    feats: dict[int, Tensor] = {}
    rows: Any = model.model
    handles = []
    for i in layers:

        def hook(_m: nn.Module, _a: Any, out: Any, i: int = i) -> None:
            if isinstance(out, Tensor):
                feats[i] = out

        handles.append(rows[i].register_forward_hook(hook))
    try:
        yield feats
    finally:
        for h in handles:
            h.remove()


def layercam_maps(feats: Sequence[Tensor], grads: Sequence[Tensor | None]) -> list[Tensor]:
    """LayerCAM per level: ``ReLU(sum_k ReLU(g_k) * A_k)``, ``(h_i, w_i)`` each (image 0)."""
    out = []
    for a, g in zip(feats, grads):
        if g is None:
            out.append(torch.zeros(a.shape[2:], device=a.device))
        else:
            out.append(F.relu((F.relu(g[0].float()) * a[0].detach().float()).sum(0)))
    return out


def eigencam_maps(feats: Sequence[Tensor]) -> list[Tensor]:
    """EigenCAM per level: ReLU of the first-principal-component projection, ``(h_i, w_i)``."""
    out = []
    for a in feats:
        act = a[0].detach().float()  # C x h x w
        c, h, w = act.shape
        m = act.reshape(c, h * w).t()  # positions x channels
        m = m - m.mean(0, keepdim=True)
        _, _, vh = torch.linalg.svd(m, full_matrices=False)
        proj = m @ vh[0]
        energy = act.norm(dim=0).flatten()
        if (proj * (energy - energy.mean())).sum() < 0:  # the SVD sign is arbitrary
            proj = -proj
        out.append(F.relu(proj).reshape(h, w))
    return out


def _upsample(level: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(level[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]


def _scaled(m: Tensor) -> Tensor:
    return m / m.max().clamp_min(1e-12)


def _targets(
    decoded: Tensor, det: Tensor, names: Sequence[str], target: str, conf: float, iou: float
) -> list[tuple[str, Tensor]]:
    """``(label, score)`` pairs; each score is a scalar with a graph back to the features."""
    p = decoded[0]
    scores = p[:, 4:5] * p[:, 5:]  # candidates x nc
    sd = scores.detach()

    def name(c: int) -> str:
        return names[c] if c < len(names) else str(c)

    if len(det) == 0:
        flat = int(sd.argmax())
        row, c = divmod(flat, sd.shape[1])
        return [(f"best candidate: {name(c)} {float(sd[row, c]):.2f}", scores[row, c])]
    out: list[tuple[str, Tensor]] = []
    if target == "class":
        for c in sorted({int(v) for v in det[:, 5].tolist()}):
            keep = sd[:, c] > conf
            out.append((f"class {name(c)}", scores[keep, c].sum()))
        return out
    boxes = xywh2xyxy(p[:, :4].detach())
    for j, (*xyxy, s, c_) in enumerate(det.tolist()):
        c = int(c_)
        cand = (sd[:, c] > conf).nonzero().flatten()
        ious = box_iou(torch.tensor([xyxy], device=boxes.device, dtype=boxes.dtype), boxes[cand])[0]
        merged = cand[ious > iou]
        if merged.numel() == 0:  # the kept box itself always overlaps; guard against rounding
            merged = cand[ious.argmax()].reshape(1)
        out.append((f"det {j}: {name(c)} {s:.2f}", scores[merged, c].sum()))
    return out


def explain_detections(
    model: nn.Module,
    x: Tensor,
    *,
    method: str = "layercam",
    target: str = "detection",
    layers: Sequence[int] | None = None,
    conf: float = PREDICT_NMS["conf_thres"],
    iou: float = PREDICT_NMS["iou_thres"],
    max_det: int = PREDICT_NMS["max_det"],
    max_targets: int = 20,
) -> CamResult:
    """Detection heatmaps of one image ``x`` (``1 x 3 x H x W``, letterboxed, in ``[0, 1]``).

    Args:
        model: a detector in eval mode (``model.model`` rows, a Detect head last).
        method: ``"layercam"`` or ``"eigencam"`` (see the module docstring).
        target: ``"detection"`` (one map per detection) or ``"class"`` (LayerCAM only).
        layers: rows whose outputs are explained; default the Detect head's inputs.
        conf, iou, max_det: NMS settings (predict defaults); ``conf`` and ``iou`` also select
            the candidates that make up a target.
        max_targets: at most this many target maps (the best detections first).

    The model's parameters receive no gradients; its outputs are unchanged.
    """
    if method not in CAM_METHODS:
        raise ValueError(f"method={method!r} is not one of {CAM_METHODS}")
    if target not in CAM_TARGETS:
        raise ValueError(f"target={target!r} is not one of {CAM_TARGETS}")
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"explain_detections takes one image (1 x 3 x H x W), got shape {tuple(x.shape)}")
    layers = list(layers) if layers is not None else detect_sources(model)
    size = (int(x.shape[2]), int(x.shape[3]))
    names = [str(n) for n in getattr(model, "names", [])]
    grad = method == "layercam"
    if grad:  # a graph to the features even when the parameters are frozen
        x = x.detach().requires_grad_(True)
    with torch.set_grad_enabled(grad), _record_outputs(model, layers) as rec:
        decoded = model(x)[0]
        missing = [i for i in layers if i not in rec]
        if missing:
            raise ValueError(f"rows {missing} produced no tensor output to explain")
        feats = [rec[i] for i in layers]
        det = non_max_suppression(decoded.detach(), conf, iou, max_det=max_det)[0]
        if not grad:
            heat = torch.stack([_scaled(_upsample(m, size)) for m in eigencam_maps(feats)]).mean(0)
            heat = _scaled(heat)
            return CamResult(heat, det, [heat], ["eigencam"], layers, method, target)
        maps, labels = [], []
        for label, score in _targets(decoded, det, names, target, conf, iou)[:max_targets]:
            grads = torch.autograd.grad(score, feats, retain_graph=True, allow_unused=True)
            levels = layercam_maps(feats, grads)
            maps.append(_scaled(torch.stack([_upsample(m, size) for m in levels]).sum(0)))
            labels.append(label)
    heat = torch.stack(maps).amax(0)
    return CamResult(heat, det.detach(), maps, labels, layers, method, target)
