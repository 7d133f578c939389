"""Insertion gates in training: their own optimizer group, and the engagement meter."""

from __future__ import annotations

import pytest
import torch

from yoloattn.engine.engagement import gate_values, mean_engagement, measure_engagement
from yoloattn.engine.optim import build_optimizer, param_groups
from yoloattn.models.detector import build_model


@pytest.fixture(scope="module")
def gated():
    torch.manual_seed(0)
    return build_model("yolov5n", nc=2, attention="se@backbone,cbam@neck", insert="identity")


def test_plain_model_keeps_the_official_three_groups() -> None:
    torch.manual_seed(0)
    plain = build_model("yolov5n", nc=2, attention="cbam@neck")
    opt = build_optimizer(plain, "SGD", lr=0.01, gate_lr_mult=100.0)
    assert [g["name"] for g in opt.param_groups] == ["bias", "decay", "no_decay"]
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(plain.parameters()))


def test_gates_get_their_own_group_without_decay(gated) -> None:
    opt = build_optimizer(gated, "SGD", lr=0.01, weight_decay=5e-4, gate_lr_mult=100.0, new_lr_mult=3.0)
    groups = {g["name"]: g for g in opt.param_groups}
    assert [g["name"] for g in opt.param_groups][:3] == ["bias", "decay", "no_decay"]
    assert len(groups["gate"]["params"]) == 4  # 1 backbone row + 3 neck rows
    assert groups["gate"]["weight_decay"] == 0.0 and groups["gate"]["lr"] == pytest.approx(1.0)
    assert groups["new_decay"]["lr"] == pytest.approx(0.03) and groups["new_decay"]["weight_decay"] == 5e-4
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(gated.parameters()))
    n_new = sum(p.numel() for g in ("new_bias", "new_decay", "new_no_decay") for p in groups[g]["params"])
    n_attn = sum(p.numel() for i in (9, 19, 23, 27) for p in gated.model[i].attn.parameters())
    assert n_new == n_attn


def test_new_lr_mult_one_keeps_attention_in_base_groups(gated) -> None:
    groups = param_groups(gated, split_new=False)
    assert not groups["new_decay"] and len(groups["gate"]) == 4


def test_engagement_is_zero_at_init_and_exact_when_open(gated) -> None:
    gated.eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), measure_engagement(gated) as meter:
        gated(x)
    s = meter.summary()
    assert sorted(s) == [9, 19, 23, 27]
    assert all(v["contribution"] == 0.0 and v["gate"] == [0.0] and v["images"] == 2 for v in s.values())
    assert mean_engagement(s) == 0.0
    row = gated.model[9]
    captured = {}
    h = row.attn.register_forward_hook(lambda m, a, o: captured.update(x=a[0], a=o))
    with torch.no_grad():
        row.gate.fill_(0.5)
        try:
            with measure_engagement(gated) as meter:
                gated(x)
        finally:
            row.gate.zero_()
            h.remove()
    xin, a = captured["x"].flatten(1), captured["a"].flatten(1)
    want = (0.5 * (a - xin)).norm(dim=1) / xin.norm(dim=1)
    got = meter.summary()[9]
    assert got["contribution"] == pytest.approx(float(want.mean()), rel=1e-5)
    assert got["gate"] == [0.5] and gate_values(gated)[9] == [0.0]
    assert not row._forward_hooks or len(row._forward_hooks) == 0  # hooks removed
