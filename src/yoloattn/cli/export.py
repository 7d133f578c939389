"""``yoloattn export``: export weights to ONNX (fused, with metadata; optionally NMS in the graph).

Examples::

    yoloattn export --weights runs/train/exp --dynamic                # runs/train/exp/weights/best.onnx
    yoloattn export --weights model.safetensors --imgsz 640 --nms -o model-nms.onnx
    yoloattn val --weights runs/train/exp/weights/best.onnx --data data.yaml   # run by onnxruntime

The output layout, the metadata keys and the NMS semantics are in docs/export.md. val and
predict accept the exported file (export it with ``--dynamic``, without ``--nms``).
"""

from __future__ import annotations

import argparse
from typing import Any

from yoloattn.cli._options import HelpFormatter, add_config_options, config_options
from yoloattn.engine.export import EXPORT, ExportConfig

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export", help="export weights to ONNX", description=__doc__, formatter_class=HelpFormatter
    )
    add_config_options(p, ExportConfig, EXPORT, "export")
    return p


def run(args: argparse.Namespace) -> int:
    from yoloattn.engine.backend import read_metadata
    from yoloattn.engine.export import export

    cfg = ExportConfig(**config_options(args, ExportConfig, EXPORT))
    path = export(cfg)
    meta = read_metadata(path)
    h, w = meta["imgsz"]
    shape = "N x 3 x H x W (dynamic)" if meta["dynamic"] else f"{meta['batch']} x 3 x {h} x {w}"
    rows = ", ".join(f"{r['key']}@{r['row']}" for r in meta["attention"]) or "none"
    size_mb = path.stat().st_size / 1e6
    print(
        f"exported {path} ({size_mb:.1f} MB, opset {meta['opset']}): input images {shape}; "
        f"output {meta['output']}"
    )
    print(f"attention rows: {rows}")
    return 0
