import math

import pytest
import torch
from torch import nn

from yoloattn.engine.optim import build_optimizer, lr_lambda, param_groups, warmup_step


def _toy():
    return nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1))


def test_param_groups_split_bias_bn_weights():
    m = _toy()
    g = param_groups(m)
    assert [p.shape for p in g["bias"]] == [torch.Size([8]), torch.Size([4])]  # BN bias + conv bias
    assert [p.shape for p in g["no_decay"]] == [torch.Size([8])]  # BN weight
    assert [p.shape for p in g["decay"]] == [torch.Size([8, 3, 3, 3]), torch.Size([4, 8, 1, 1])]


def test_optimizer_groups_and_decay():
    opt = build_optimizer(_toy(), "SGD", lr=0.01, momentum=0.9, weight_decay=5e-4)
    names = [g["name"] for g in opt.param_groups]
    assert names == ["bias", "decay", "no_decay"]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 5e-4, 0.0]
    assert opt.param_groups[0]["nesterov"] is True
    with pytest.raises(ValueError, match="SGD, AdamW or Adam"):
        build_optimizer(_toy(), "lion")


def test_schedules_at_chosen_epochs():
    lin = lr_lambda("linear", 100, 0.01)
    assert lin(0) == 1.0 and lin(50) == pytest.approx(0.505) and lin(100) == pytest.approx(0.01)
    cos = lr_lambda("cos", 300, 0.1)
    assert cos(0) == 1.0 and cos(150) == pytest.approx(0.55) and cos(300) == pytest.approx(0.1)
    assert cos(75) == pytest.approx(((1 - math.cos(math.pi / 4)) / 2) * (0.1 - 1) + 1)


def test_warmup_ramps_bias_down_others_up_and_momentum():
    hyp = {"warmup_bias_lr": 0.1, "warmup_momentum": 0.8, "momentum": 0.937}
    opt = build_optimizer(_toy(), "SGD", lr=0.01, momentum=0.937)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda("linear", 10, 0.01))
    lf = lr_lambda("linear", 10, 0.01)
    acc = warmup_step(opt, 0, 100, 0, lf, hyp, 64, 16)
    assert acc == 1
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.0, 0.0]
    assert opt.param_groups[1]["momentum"] == pytest.approx(0.8)
    acc = warmup_step(opt, 50, 100, 0, lf, hyp, 64, 16)
    assert acc == 2  # round(interp(50, [0, 100], [1, 4])) = round(2.5) -> 2 (banker's)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.055)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.005)
    acc = warmup_step(opt, 100, 100, 0, lf, hyp, 64, 16)
    assert acc == 4 and all(g["lr"] == pytest.approx(0.01) for g in opt.param_groups)
    del sched


def test_attention_gates_decay_like_other_weights_and_v7_linear_schedule():
    from yoloattn.attention import create_attention

    m = nn.Sequential(nn.Conv2d(3, 8, 1), create_attention("cc", 8))
    g = param_groups(m)
    gamma = m[1].gamma
    assert gamma.ndim == 1 and any(p is gamma for p in g["decay"])  # spec: all other weights decay
    assert not any(p is gamma for p in g["no_decay"] + g["bias"])
    v5, v7 = lr_lambda("linear", 10, 0.1), lr_lambda("linear", 10, 0.1, "v7")
    assert v5(9) == pytest.approx(0.19) and v7(9) == pytest.approx(0.1) and v7(0) == v5(0) == 1.0
    with pytest.raises(ValueError, match="family"):
        lr_lambda("linear", 10, 0.1, "v8")
