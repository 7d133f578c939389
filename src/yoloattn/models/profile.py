"""Parameter, FLOP and output-shape profile of a detector, row by row.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` at the real input size:
convolutions, matmuls (so attention maps count) and other ops with a registered formula, as
``2 x MACs``. BN, activations, pooling and upsampling are not counted. For the official
YOLOv5s at 640x640 this gives 16.434 GFLOPs (``shared/spec/yolo-architectures.md`` section 5).
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_flops", "profile"]


def count_flops(model: nn.Module, x: Tensor) -> float:
    """GFLOPs (1e9 FLOPs, 2 x MACs) of one forward of ``model`` on ``x``, counted in eval mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(x)
    finally:
        model.train(was_training)
    return fc.get_total_flops() / 1e9


def _shape(out: Any) -> Any:
    if isinstance(out, Tensor):
        return list(out.shape)
    if isinstance(out, tuple) and out and isinstance(out[0], Tensor):  # eval head: (decoded, raw)
        return list(out[0].shape)
    if isinstance(out, (list, tuple)):
        return [_shape(o) for o in out]
    return None


def profile(model: nn.Module, imgsz: int | tuple[int, int] = 640, batch: int = 1) -> dict[str, Any]:
    """Profile a :class:`~yoloattn.models.detector.Model` on a zero image (eval mode).

    Returns a dict with ``params``, ``gradients``, ``gflops`` (total at ``imgsz``), ``imgsz``
    ``(h, w)``, ``batch`` and ``layers``: one dict per row with ``i``, ``from``, ``n``
    (repeats), ``type``, ``args``, ``params``, ``gflops`` and ``shape`` (output shape; the
    decoded output for the head). Works on the meta device too (shapes and FLOPs only).
    """
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
    p0 = next(model.parameters(), None)
    device = p0.device if p0 is not None else torch.device("cpu")
    ch = int(getattr(model, "yaml", {}).get("ch", 3))
    x: Any = torch.zeros(batch, ch, h, w, device=device)
    rows = getattr(model, "rows", None)
    save = set(getattr(model, "save", []))
    layers = []
    y: list[Any] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            m: Any  # row layers carry the plain attributes ``i``, ``f``, ``type`` set by parse_model
            for k, m in enumerate(cast(nn.Sequential, model.model)):
                if m.f != -1:
                    x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
                with FlopCounterMode(display=False) as fc:
                    x = m(x)
                y.append(x if m.i in save else None)
                layers.append(
                    {
                        "i": m.i,
                        "from": m.f,
                        "n": rows[k].repeats if rows is not None else 1,
                        "type": m.type,
                        "args": getattr(m, "args", None),
                        "params": sum(p.numel() for p in m.parameters()),
                        "gflops": fc.get_total_flops() / 1e9,
                        "shape": _shape(x),
                    }
                )
    finally:
        model.train(was_training)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "gradients": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "gflops": sum(r["gflops"] for r in layers),
        "imgsz": (h, w),
        "batch": batch,
        "layers": layers,
    }
