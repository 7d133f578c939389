"""In-place activations (as the official models set them at init) and the in-place IDetect decode
give bit-identical outputs and gradients; attention rows keep out-of-place activations."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from yoloattn.attention import create_attention
from yoloattn.models import build_model
from yoloattn.models.detector import _INPLACE_ACTS


def _out_of_place(model: nn.Module) -> nn.Module:
    other = copy.deepcopy(model)
    for m in other.modules():
        if isinstance(m, _INPLACE_ACTS):
            m.inplace = False
    return other


@pytest.mark.parametrize("name", ["yolov5n", "yolov7-tiny"])
def test_inplace_activations_change_nothing(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, nc=3, attention="se@neck,ca@backbone")
    rows = [layer for row, layer in zip(model.rows, model.model) if row.kind != "attention"]
    acts = [m for layer in rows for m in layer.modules() if isinstance(m, _INPLACE_ACTS)]
    assert acts and all(m.inplace for m in acts)
    # attention rows keep the module's own choice of in-place activations
    for row, layer in zip(model.rows, model.model):
        if row.kind == "attention":
            fresh = create_attention(row.name, row.c1, **row.kwargs)
            flags = [m.inplace for m in layer.modules() if isinstance(m, _INPLACE_ACTS)]
            assert flags == [m.inplace for m in fresh.modules() if isinstance(m, _INPLACE_ACTS)]

    ref = _out_of_place(model)
    x = torch.rand(2, 3, 96, 128)
    model.eval(), ref.eval()
    with torch.no_grad():
        assert torch.equal(model(x)[0], ref(x)[0])
    model.train(), ref.train()
    outs, refs = model(x), ref(x)
    for a, b in zip(outs, refs):
        assert torch.equal(a, b)
    sum(o.square().mean() for o in outs).backward()
    sum(o.square().mean() for o in refs).backward()
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        assert p.grad is not None and q.grad is not None
        assert torch.equal(p.grad, q.grad), n


def test_idetect_inference_decode_equals_the_autograd_path() -> None:
    torch.manual_seed(0)
    model = build_model("yolov7-tiny", nc=5).eval()
    x = torch.rand(1, 3, 128, 96)
    with torch.no_grad():
        fast = model(x)[0]
    slow = model(x)[0]  # grad enabled: split + cat, as autograd needs
    assert slow.requires_grad and torch.equal(fast, slow.detach())
