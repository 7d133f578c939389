"""The detector: a routed stack of rows built from an official-format config.

Follows ``shared/spec/yolo-architectures.md`` section 2.4 for the build order (parse, stride
probe, anchor order check, anchors to grid units, head bias priors, BN eps/momentum) so that
the state dict has the official keys and shapes and a seeded build matches the official one.

>>> model = build_model("yolov5s", nc=20)
>>> model.eval()(torch.zeros(1, 3, 320, 256))[0].shape
torch.Size([1, 5040, 25])
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from yoloattn.models.config import config_name
from yoloattn.models.family import family_of
from yoloattn.models.parse import parse_model
from yoloattn.models.placement import Spec, expand_config
from yoloattn.models.rows import Row
from yoloattn.nn import Conv, Detect, DFLDetect, IDetect, RepConv

__all__ = ["Model", "build_model"]

_INPLACE_ACTS = (nn.SiLU, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.Hardswish)

LOGGER = logging.getLogger(__name__)

#: Side of the square zero image used to measure the head strides (as the official code).
STRIDE_PROBE_SIZE = 256


def _is_meta(device: torch.device | str | None) -> bool:
    return device is not None and torch.device(device).type == "meta"


class Model(nn.Module):
    """YOLOv5 / YOLOv7 / YOLOv8 / YOLO11 detector built from a config (name, YAML path or dict).

    Attributes:
        model: ``nn.Sequential`` of the rows; each layer has ``i``, ``f``, ``type``, ``np``.
        yaml: the final config dict (after ``nc``/``ch`` overrides, attention rows placed, no
            ``attention:`` key); ``Model(model.yaml)`` rebuilds the same architecture.
        index_map: original row -> row of this model when attention was placed (by
            :func:`build_model`'s ``attention`` or the config's ``attention:`` key), else None.
        base_yaml: the config the index map starts from (without the placed rows), or None.
        save: rows whose outputs are kept for later rows.
        rows: the resolved :class:`~yoloattn.models.rows.Row` of every layer.
        names: class names (default ``["0", "1", ...]``).
        nc: number of classes.
        stride: ``tensor([8., 16., 32.])`` for the P5 models (non-persistent buffer).
        family: ``v5``, ``v7``, ``v8`` or ``11`` (:mod:`yoloattn.models.family`).

    Forward (anchor-based heads, v5/v7): training mode returns the per-level raw tensors
    ``(N, na, H, W, 5 + nc)``; eval mode returns ``(decoded (N, sum na*H*W, 5 + nc), raw
    levels)``. Anchor-free heads (v8/11, :class:`~yoloattn.nn.DFLDetect`): training mode returns
    the maps ``(N, 64 + nc, H, W)``; eval mode ``(decoded (N, 4 + nc, sum H*W), maps)``. Input
    sides must be multiples of ``stride.max()``.

    Args:
        cfg: shipped name, YAML path or dict.
        ch: input channels (a ``ch`` key in the config wins, as in the official code).
        nc: number of classes; overrides the config's ``nc``.
        device: build device. ``"meta"`` builds without memory or stride probe (strides are
            derived from the rows), for counting parameters of large models quickly.
    """

    model: nn.Sequential
    stride: Tensor  # non-persistent buffer registered in __init__

    def __init__(
        self,
        cfg: str | Path | Mapping[str, Any] = "yolov5s",
        ch: int = 3,
        nc: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.yaml_file = config_name(cfg)
        placed = expand_config(cfg)  # places the config's own `attention:` key, if any
        cfg = placed.cfg
        ch = cfg.setdefault("ch", ch)
        if nc is not None and nc != cfg.get("nc"):
            LOGGER.debug("overriding nc=%s with nc=%s", cfg.get("nc"), nc)
            cfg["nc"] = nc
        self.yaml: dict[str, Any] = cfg
        self.family: str = family_of(cfg)
        meta = _is_meta(device)
        with torch.device("meta") if meta else contextlib.nullcontext():
            layers, save, rows = parse_model(cfg, ch)
        self.model = layers
        self.save = save
        self.rows: list[Row] = rows
        self.nc = int(cfg["nc"])
        names = cfg.get("names")
        self.names = (
            [str(n) for n in names]
            if isinstance(names, list) and len(names) == self.nc
            else [str(i) for i in range(self.nc)]
        )
        self.index_map: dict[int, int] | None = placed.index_map
        self.base_yaml: dict[str, Any] | None = placed.base if placed.index_map is not None else None

        head = self.model[-1]
        if isinstance(head, Detect):
            strides = self._head_strides(rows[-1], ch, meta)
            self._check_anchor_order(head, rows[-1], strides)
            s = torch.tensor(strides, dtype=torch.float32)
            head.stride = s.clone()
            with torch.no_grad():
                head.anchors /= s.view(-1, 1, 1).to(head.anchors.device)
            head.initialize_biases(strides)
        elif isinstance(head, DFLDetect):
            strides = self._head_strides(rows[-1], ch, meta)
            s = torch.tensor(strides, dtype=torch.float32)
            head.stride = s.clone()
            head.initialize_biases(strides)
        else:  # a backbone-only config: report the last row's stride
            last = rows[-1].stride
            s = torch.tensor([last if last is not None else 1.0], dtype=torch.float32)
        self.register_buffer("stride", s, persistent=False)
        self._initialize_weights()
        if device is not None and not meta:
            self.to(device)

    # ------------------------------------------------------------------ build helpers

    def _head_strides(self, head_row: Row, ch: int, meta: bool) -> list[float]:
        analytic = head_row.head_strides or []
        if meta:
            if any(s is None for s in analytic):
                raise ValueError(
                    "cannot derive the head strides without running the model (a row has "
                    "an unknown stride, e.g. size-based upsampling); build on a real device"
                )
            return [float(s) for s in analytic]  # type: ignore[arg-type]
        probed = self._probe_strides(ch)
        if analytic and all(s is not None for s in analytic) and probed != analytic:
            LOGGER.debug("probed strides %s differ from row-derived %s", probed, analytic)
        return probed

    def _probe_strides(self, ch: int) -> list[float]:
        """Run a zero image through the model and read the head's level sizes.

        Like the official build this runs in train mode on one image, so every BatchNorm sees
        one batch of zeros and fresh buffers match the official ones (``running_var = 0.9``,
        ``num_batches_tracked = 1``). If train mode fails (e.g. an attention module with BN
        over pooled ``(1, C, 1, 1)`` maps), the buffers are restored and the probe runs in eval
        mode. The previous train/eval mode is restored.
        """
        s = STRIDE_PROBE_SIZE
        was_training = self.training
        x = torch.zeros(1, ch, s, s)
        head = self.model[-1]
        if isinstance(head, DFLDetect):  # spec 3.3: BN in eval mode, the head returns its maps
            try:
                with torch.no_grad():
                    self.eval()
                    head.train()
                    maps = self._forward_once(x)
            except (RuntimeError, ValueError) as e:
                raise ValueError(
                    f"the model cannot run on a {s}x{s} input to measure its strides: {e}"
                ) from e
            finally:
                self.train(was_training)
            return [s / float(p.shape[-2]) for p in maps]
        try:
            with torch.no_grad():
                saved = {k: b.clone() for k, b in self.named_buffers()}
                try:
                    self.train()
                    out = self._forward_once(x)
                except (RuntimeError, ValueError) as e:
                    LOGGER.debug("train-mode stride probe failed (%s); probing in eval mode", e)
                    for k, b in self.named_buffers():
                        b.copy_(saved[k])
                    self.eval()
                    out = self._forward_once(x)[1]
        except (RuntimeError, ValueError) as e:
            raise ValueError(f"the model cannot run on a {s}x{s} input to measure its strides: {e}") from e
        finally:
            self.train(was_training)
        return [s / float(p.shape[-3]) for p in out]

    @staticmethod
    def _check_anchor_order(head: Detect, head_row: Row, strides: list[float]) -> None:
        """Flip the anchor levels if their mean area decreases while the stride increases."""
        anchors = head_row.args[1]
        areas = [sum(lvl[k] * lvl[k + 1] for k in range(0, len(lvl), 2)) / (len(lvl) // 2) for lvl in anchors]
        da, ds = areas[-1] - areas[0], strides[-1] - strides[0]
        if da and ds and (da > 0) != (ds > 0):
            LOGGER.info("reversing anchor order to match the level strides")
            with torch.no_grad():
                head.anchors.copy_(head.anchors.flip(0))
                if isinstance(head, IDetect):
                    head.anchor_grid.copy_(head.anchor_grid.flip(0))

    def _initialize_weights(self) -> None:
        """BN ``eps=1e-3, momentum=0.03`` everywhere, and the network's own activations in place,
        as the official models set them at init (same outputs, less memory traffic). Attention
        rows keep their activations out of place: a module may still read an activation's input."""
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = 1e-3
                m.momentum = 0.03
        for row, layer in zip(self.rows, self.model):
            if row.kind == "attention":
                continue
            for m in layer.modules():
                if isinstance(m, _INPLACE_ACTS):
                    m.inplace = True

    # ------------------------------------------------------------------ forward

    def _forward_once(self, x: Any) -> Any:
        y: list[Any] = []
        m: Any  # row layers carry the plain attributes ``i`` and ``f`` set by parse_model
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        return x

    def forward(self, x: Tensor) -> Any:
        """Train: list of raw levels; eval: ``(decoded, raw levels)`` (see class docstring)."""
        return self._forward_once(x)

    # ------------------------------------------------------------------ properties

    @property
    def detect(self) -> Detect:
        """The anchor-based head (last row; Detect/IDetect). See :attr:`head` for any head."""
        head = self.model[-1]
        if not isinstance(head, Detect):
            raise AttributeError("this model has no Detect/IDetect head as its last row")
        return head

    @property
    def head(self) -> Detect | DFLDetect:
        """The detection head (last row): Detect/IDetect (v5/v7) or DFLDetect (v8/11)."""
        head = self.model[-1]
        if not isinstance(head, (Detect, DFLDetect)):
            raise AttributeError("this model has no detection head as its last row")
        return head

    # ------------------------------------------------------------------ fuse / info

    @torch.no_grad()
    def fuse(self) -> Model:
        """Fold BN into convs, re-parameterise RepConv and fold the IDetect implicit layers.

        Eval outputs are unchanged up to float rounding. Returns ``self``.
        """
        for m in list(self.modules()):
            if isinstance(m, (Conv, RepConv, IDetect)):
                m.fuse()
        for layer in self.model:
            # nn.Module.__setattr__ is typed for tensors/modules; plain attributes are fine at runtime
            layer.np = sum(p.numel() for p in layer.parameters())  # type: ignore[assignment]
        return self

    @property
    def is_fused(self) -> bool:
        return not any(
            (isinstance(m, Conv) and hasattr(m, "bn"))
            or (isinstance(m, RepConv) and not hasattr(m, "rbr_reparam"))
            for m in self.modules()
        )

    def info(self, imgsz: int | tuple[int, int] = 640, verbose: bool = False) -> dict[str, Any]:
        """Summary: rows, modules, parameters, gradients and GFLOPs at ``imgsz`` (batch 1).

        GFLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (2 x MACs, so
        attention matmuls count); None if the model cannot run at that size.
        """
        from yoloattn.models.profile import count_flops

        params = sum(p.numel() for p in self.parameters())
        grads = sum(p.numel() for p in self.parameters() if p.requires_grad)
        modules = list(self.modules())
        h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
        p0 = next(self.parameters(), None)
        device = p0.device if p0 is not None else torch.device("cpu")
        gflops: float | None
        try:
            gflops = count_flops(self, torch.zeros(1, int(self.yaml["ch"]), h, w, device=device))
        except (RuntimeError, ValueError) as e:
            LOGGER.warning("GFLOPs not computed at %sx%s: %s", h, w, e)
            gflops = None
        out = {
            "name": self.yaml_file,
            "rows": len(self.model),
            "modules": len(modules),
            "leaf_modules": sum(1 for m in modules if not list(m.children())),
            "params": params,
            "gradients": grads,
            "gflops": gflops,
            "imgsz": (h, w),
            "fused": self.is_fused,
        }
        msg = (
            f"{self.yaml_file} summary{' (fused)' if out['fused'] else ''}: {out['rows']} rows, "
            f"{out['modules']} modules, {params:,} parameters, {grads:,} gradients"
            + (f", {gflops:.2f} GFLOPs at {h}x{w}" if gflops is not None else "")
        )
        (LOGGER.info if verbose else LOGGER.debug)(msg)
        return out


def build_model(
    cfg: str | Path | Mapping[str, Any],
    nc: int | None = None,
    attention: Spec | None = None,
    ch: int = 3,
    device: torch.device | str | None = None,
    insert: str | None = None,
    gate: str | None = None,
    allow_unused_rows: bool = False,
) -> Model:
    """Build a detector: config + attention placement (+ insertion mode, gate) -> model + index map.

    Args:
        cfg: a shipped name (``yolov5n/s/m/l/x``, ``yolov7-tiny``, ``yolov7``, ``yolov7x``,
            ``yolov8n/s/m/l/x``, ``yolo11n/s/m/l/x``), a YAML path or a config dict. A
            model-level ``attention:`` key in it is placed first.
        nc: number of classes (overrides the config).
        attention: an attention placement spec (``cbam@neck``, ...), placed after the config's
            ``attention:`` key; indices in both are rows of ``cfg`` as written.
        ch: input channels.
        device: where to build; ``"meta"`` builds a parameter-shape-only model quickly.
        insert: insertion mode of the attention rows: ``identity`` (zero-initialised residual
            gates: the model computes the base network's function at step 0), ``plain`` or
            ``auto`` (``plain`` here: this function transfers no weights; the trainer resolves
            ``auto`` to ``identity`` when it does). None keeps the config's ``insert`` key.
        gate: ``scalar`` (default) or ``channel`` gates for ``identity`` insertion.
        allow_unused_rows: skip the parser's miswire check (written into ``model.yaml`` as
            ``allow_unused_rows: true``), for research configs.

    Returns:
        The model; ``model.yaml`` is the expanded config (``Model(model.yaml)`` rebuilds the
        same network), ``model.index_map`` maps the rows of ``cfg`` as written to the model's
        rows (None when nothing was placed) and ``model.base_yaml`` is the config they belong
        to (build it, e.g. ``build_model(model.base_yaml, nc=nc)``, to move its weights in with
        :func:`~yoloattn.models.weights.transfer_weights`).
    """
    placed = expand_config(cfg, attention, insert=insert, gate=gate, allow_unused_rows=allow_unused_rows)
    model = Model(placed.cfg, ch=ch, nc=nc, device=device)
    model.yaml_file = config_name(cfg)
    model.index_map = placed.index_map
    model.base_yaml = placed.base if placed.index_map is not None else None
    return model
