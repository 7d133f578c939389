"""Tests for the YOLOv8/YOLO11 loss (yoloattn.engine.loss_v8), values derived by hand.

The model is a stand-in with the attributes the loss reads from the anchor-free Detect head
(``nc``, ``reg_max``, ``stride``, ``no`` on ``model.model[-1]``).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision.ops import complete_box_iou

from yoloattn.engine.loss import bbox_ciou_xyxy
from yoloattn.engine.loss_v8 import (
    V8DetectionLoss,
    anchor_free_head,
    anchor_points,
    dfl_loss,
    distances_to_boxes,
    targets_to_padded,
)

TOL = dict(rtol=1e-5, atol=1e-6)


class _Head(nn.Module):
    def __init__(self, nc: int, strides: tuple[float, ...], reg_max: int = 16) -> None:
        super().__init__()
        self.nc, self.reg_max, self.no = nc, reg_max, nc + 4 * reg_max
        self.stride = torch.tensor(strides)


class _Model(nn.Module):
    def __init__(self, nc: int = 1, strides: tuple[float, ...] = (8.0, 16.0, 32.0)) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(3, 3, 1), _Head(nc, strides))


def _preds(bs: int, nc: int, size: int, strides=(8, 16, 32), fill: float = 0.0) -> list[torch.Tensor]:
    return [torch.full((bs, 64 + nc, size // s, size // s), fill, requires_grad=True) for s in strides]


def _randn_preds(bs: int, nc: int, size: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(bs, 64 + nc, size // s, size // s, generator=gen) * 0.5).requires_grad_()
        for s in (8, 16, 32)
    ]


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x)) if x < 30 else x


# --------------------------------------------------------------------------- CIoU


def test_ciou_at_known_boxes() -> None:
    gt = torch.tensor([0.0, 0.0, 40.0, 40.0])
    cases = [
        (torch.tensor([0.0, 0.0, 40.0, 40.0]), 1.0),  # identical
        (torch.tensor([10.0, 10.0, 30.0, 30.0]), 400 / 1600),  # concentric, same shape: CIoU = IoU
        (torch.tensor([20.0, 0.0, 60.0, 40.0]), 800 / 2400 - 400 / 5200),  # shifted: IoU - rho^2 / c^2
    ]
    for box, expected in cases:
        assert bbox_ciou_xyxy(box, gt).item() == pytest.approx(expected, abs=1e-6)
    # disjoint boxes of different aspect: IoU 0, rho^2 = (5^2 + 1^2) / 4, c^2 = 4^2 + 2^2, v term
    a, b = torch.tensor([0.0, 0.0, 2.0, 1.0]), torch.tensor([3.0, 0.0, 4.0, 2.0])
    v = 4 / math.pi**2 * (math.atan(1 / 2) - math.atan(2 / 1)) ** 2
    expected = -(6.5 / 20 + v * v / (1 + v))
    assert bbox_ciou_xyxy(a, b).item() == pytest.approx(expected, abs=1e-6)


def test_ciou_matches_torchvision_and_alpha_has_no_gradient() -> None:
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=gen) * 50
    b1 = torch.cat((xy, xy + torch.rand(50, 2, generator=gen) * 30 + 1), 1)
    xy = torch.rand(50, 2, generator=gen) * 50
    b2 = torch.cat((xy, xy + torch.rand(50, 2, generator=gen) * 30 + 1), 1)
    ours = bbox_ciou_xyxy(b1, b2)
    ref = complete_box_iou(b1, b2).diagonal()
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
    # gradient of 1 - CIoU with alpha held constant: finite and nonzero
    p = b1.clone().requires_grad_()
    (1 - bbox_ciou_xyxy(p, b2)).sum().backward()
    assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


# --------------------------------------------------------------------------- helpers


def test_anchor_points_row_major_p3_first() -> None:
    pts, st = anchor_points([(2, 3), (1, 1)], [8.0, 16.0], torch.device("cpu"))
    expected = [[0.5, 0.5], [1.5, 0.5], [2.5, 0.5], [0.5, 1.5], [1.5, 1.5], [2.5, 1.5], [0.5, 0.5]]
    assert pts.tolist() == expected
    assert st.flatten().tolist() == [8.0] * 6 + [16.0]


def test_distances_to_boxes_uniform_logits_give_7_5() -> None:
    pts = torch.tensor([[3.5, 4.5]])
    boxes = distances_to_boxes(torch.zeros(1, 1, 64), pts, 16)
    torch.testing.assert_close(boxes[0, 0], torch.tensor([-4.0, -3.0, 11.0, 12.0]))
    logits = torch.full((1, 1, 4, 16), -1e4)  # one bin per side: distances (2, 5, 0, 15)
    for side, k in enumerate((2, 5, 0, 15)):
        logits[0, 0, side, k] = 0.0
    boxes = distances_to_boxes(logits.view(1, 1, 64), pts, 16)
    torch.testing.assert_close(boxes[0, 0], torch.tensor([1.5, -0.5, 3.5, 19.5]))


def test_dfl_loss_by_hand() -> None:
    logits = torch.zeros(1, 4, 16)
    logits[0, :, 3] = 2.0
    target = torch.tensor([[3.25, 3.25, 0.0, 14.99]])
    lse = math.log(math.exp(2.0) + 15)
    side0 = -(0.75 * (2.0 - lse) + 0.25 * (0.0 - lse))  # bins 3 and 4
    side2 = -(1.0 * (0.0 - lse))  # t = 0: all weight on bin 0
    side3 = -(0.01 * (0.0 - lse) + 0.99 * (0.0 - lse))  # bins 14 and 15
    expected = (2 * side0 + side2 + side3) / 4
    assert dfl_loss(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_targets_to_padded_keeps_order_and_pads() -> None:
    t = torch.tensor(
        [
            [1, 2, 0.5, 0.5, 0.5, 0.25],
            [0, 1, 0.25, 0.25, 0.5, 0.5],
            [1, 0, 0.75, 0.5, 0.25, 0.5],
        ]
    )
    labels, boxes, mask = targets_to_padded(t, 3, torch.tensor([64.0, 32.0]))
    assert labels.shape == (3, 2, 1) and boxes.shape == (3, 2, 4)
    assert labels[..., 0].tolist() == [[1, 0], [2, 0], [0, 0]]
    assert boxes[1].tolist() == [[16.0, 12.0, 48.0, 20.0], [40.0, 8.0, 56.0, 24.0]]
    assert boxes[0, 0].tolist() == [0.0, 0.0, 32.0, 16.0]
    assert mask[..., 0].tolist() == [[True, False], [True, True], [False, False]]
    labels, boxes, mask = targets_to_padded(torch.zeros(0, 6), 2, torch.tensor([64.0, 64.0]))
    assert boxes.shape == (2, 0, 4) and mask.shape == (2, 0, 1)


# --------------------------------------------------------------------------- loss by hand

L_BIN = 10.0  # logit of bin 15 of every side at the chosen anchor


def _one_level_case() -> tuple[V8DetectionLoss, list[torch.Tensor], torch.Tensor, float]:
    """One level of stride 1 on a 40 x 40 image, one class, top-1 assignment.

    The gt covers the whole image; anchor (20.5, 20.5) (index 820) is the only confident one and its
    box logits peak at bin 15, so its side distances (20.5, 20.5, 19.5, 19.5) exceed reg_max - 1
    and are clamped to 14.99 by the DFL target.
    """
    model = _Model(nc=1, strides=(1.0,))
    loss = V8DetectionLoss(model, topk=1)
    p = torch.zeros(1, 65, 40, 40)
    p[0, 64] = -20.0
    p[0, 64, 20, 20] = 20.0
    for side in range(4):
        p[0, side * 16 + 15, 20, 20] = L_BIN
    targets = torch.tensor([[0, 0, 0.5, 0.5, 1.0, 1.0]])
    e = (15 * math.exp(L_BIN) + sum(range(15))) / (math.exp(L_BIN) + 15)  # expected distance
    # predicted box [20.5 - e, 20.5 + e]^2 inside the gt: IoU = (2e)^2 / 1600, centre offset (0.5, 0.5),
    # enclosing box = the gt (c^2 = 3200), equal aspect (v = 0)
    u = (2 * e) ** 2 / 1600 - 0.5 / 3200
    return loss, [p.requires_grad_()], targets, u


def test_loss_by_hand_with_dfl_clamp() -> None:
    loss, preds, targets, u = _one_level_case()
    assignment, _ = loss.assign(preds, targets)
    assert assignment.fg_mask[0].nonzero().flatten().tolist() == [820]
    assert assignment.scores[0, 820, 0].item() == pytest.approx(u, rel=1e-5)  # best anchor: its CIoU
    total, items = loss(preds, targets)
    s = 1.0  # max(sum of target scores = u, 1)
    lse = math.log(math.exp(L_BIN) + 15)
    side = -(0.01 * (0.0 - lse) + 0.99 * (L_BIN - lse))  # t = 14.99: bins 14 and 15
    cls = (1599 * _softplus(-20.0) + _softplus(20.0) - 20.0 * u) / s
    box = (1 - u) * u / s
    dfl = side * u / s
    expected = torch.tensor([7.5 * box, 0.5 * cls, 1.5 * dfl])
    torch.testing.assert_close(items, expected, rtol=1e-4, atol=1e-6)
    assert total.shape == (1,)
    assert total.item() == pytest.approx(float(expected.sum()), rel=1e-5)


def test_image_without_targets_adds_only_its_classification_term() -> None:
    loss, preds, targets, u = _one_level_case()
    _, items1 = loss(preds, targets)
    p2 = torch.cat((preds[0].detach(), torch.zeros(1, 65, 40, 40))).requires_grad_()
    total2, items2 = loss([p2], targets)  # image 1 has no targets, logits 0
    extra = 0.5 * 1600 * math.log(2.0)  # its BCE against all-zero targets, over S = 1, cls gain 0.5
    torch.testing.assert_close(items2, items1 + torch.tensor([0.0, extra, 0.0]), rtol=1e-5, atol=1e-5)
    assert total2.item() == pytest.approx(2 * float(items2.sum()), rel=1e-6)  # x batch size


def test_batch_without_targets() -> None:
    model = _Model(nc=2)
    preds = _preds(2, 2, 64)
    total, items = V8DetectionLoss(model)(preds, torch.zeros(0, 6))
    n = 64 + 16 + 4
    expected_cls = 0.5 * 2 * n * 2 * math.log(2.0)  # B * N * nc elements of BCE(0, 0), S = 1
    assert items.tolist() == pytest.approx([0.0, expected_cls, 0.0], rel=1e-6)
    assert items[0].item() == 0.0 and math.copysign(1, items[0].item()) == 1  # not -0.0
    total.backward()
    assert preds[0].grad is not None
    assert preds[0].grad[:, :64].abs().sum() == 0 and preds[0].grad[:, 64:].abs().sum() > 0


@pytest.mark.parametrize("widen", [True, False])
def test_small_box_widening_on_vs_off(widen: bool) -> None:
    # a 3 x 3 px gt centred at (14, 14) on a 64 px image: no anchor centre (every 4 px) lies inside it;
    # widened to 16 x 16 ([6, 22]^2) it holds P3 anchors around it, P4 (8, 8) and P5 (16, 16)
    model = _Model(nc=1)
    targets = torch.tensor([[0, 0, 14 / 64, 14 / 64, 3 / 64, 3 / 64]])
    loss = V8DetectionLoss(model, small_box_widening=widen)
    preds = _preds(1, 1, 64)
    assignment, _ = loss.assign(preds, targets)
    fg = set(assignment.fg_mask[0].nonzero().flatten().tolist())
    _, items = loss(preds, targets)
    if widen:
        # P3 anchor (12, 12) = index 9 and P5 anchor (16, 16) = index 80 have CIoU > 0
        assert {9, 80} <= fg and fg <= {9, 10, 17, 18, 64, 80}
        assert items[0] > 0 and items[2] > 0
    else:
        assert fg == set()
        assert items[0].item() == 0.0 and items[2].item() == 0.0


# --------------------------------------------------------------------------- interface


def test_shapes_and_gradients_flow() -> None:
    model = _Model(nc=3)
    preds = _randn_preds(2, 3, 64)
    targets = torch.tensor(
        [[0, 1, 0.5, 0.5, 0.4, 0.3], [0, 2, 0.3, 0.3, 0.2, 0.2], [1, 0, 0.6, 0.6, 0.5, 0.5]]
    )
    total, items = V8DetectionLoss(model)(preds, targets)
    assert total.shape == (1,) and items.shape == (3,) and not items.requires_grad
    assert torch.isfinite(total).all() and (items > 0).all()
    total.backward()
    for p in preds:
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert sum(float(p.grad[:, :64].abs().sum()) for p in preds) > 0  # box / DFL
    assert sum(float(p.grad[:, 64:].abs().sum()) for p in preds) > 0  # classes


def test_duplicated_batch_normaliser_is_global() -> None:
    model = _Model(nc=3)
    preds = _randn_preds(1, 3, 64, seed=1)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.4, 0.3], [0, 2, 0.3, 0.3, 0.2, 0.2]])
    loss = V8DetectionLoss(model)
    s0 = float(loss.assign(preds, targets)[0].scores.sum())
    t1, i1 = loss(preds, targets)
    dup = [torch.cat((p, p)) for p in preds]
    second = targets.clone()
    second[:, 0] = 1
    t2, i2 = loss(dup, torch.cat((targets, second)))
    # every sum doubles and S = max(sum of target scores, 1) is taken over the whole batch
    ratio = 2 * max(s0, 1.0) / max(2 * s0, 1.0)
    torch.testing.assert_close(i2, i1 * ratio, **TOL)
    torch.testing.assert_close(t2, 2 * i2.sum().reshape(1), **TOL)  # total = items x B


def test_gains_from_hyp_and_v5_recipe_refused() -> None:
    model = _Model(nc=3)
    preds = _randn_preds(1, 3, 64, seed=2)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.4, 0.3]])
    _, base = V8DetectionLoss(model)(preds, targets)
    _, unit = V8DetectionLoss(model, {"box": 1.0, "cls": 1.0, "dfl": 1.0})(preds, targets)
    torch.testing.assert_close(unit * torch.tensor([7.5, 0.5, 1.5]), base, **TOL)
    with pytest.raises(KeyError, match="dfl"):
        V8DetectionLoss(model, {"box": 0.05, "obj": 1.0, "cls": 0.5})


def test_head_lookup_and_input_checks() -> None:
    model = _Model(nc=2)
    assert anchor_free_head(model) is model.model[-1]
    assert anchor_free_head(nn.DataParallel(model)) is model.model[-1]
    head = _Head(2, (8.0, 16.0, 32.0))
    assert anchor_free_head(head) is head
    with pytest.raises(AttributeError, match="anchor-free"):
        anchor_free_head(nn.Sequential(nn.Conv2d(1, 1, 1)))
    loss = V8DetectionLoss(model)
    with pytest.raises(ValueError, match="prediction level 0"):
        loss([torch.zeros(1, 65, 8, 8)] * 3, torch.zeros(0, 6))
    with pytest.raises(ValueError, match="3 prediction levels"):
        loss(_preds(1, 2, 64)[:2], torch.zeros(0, 6))
    with pytest.raises(ValueError, match="class indices"):
        loss(_preds(1, 2, 64), torch.tensor([[0, 2, 0.5, 0.5, 0.1, 0.1]]))


def test_stride_read_at_call_time() -> None:
    model = _Model(nc=1)
    head = model.model[-1]
    head.stride = torch.zeros(3)  # not built yet
    loss = V8DetectionLoss(model)
    with pytest.raises(ValueError, match="stride"):
        loss(_preds(1, 1, 64), torch.zeros(0, 6))
    head.stride = torch.tensor([8.0, 16.0, 32.0])
    loss(_preds(1, 1, 64), torch.zeros(0, 6))


def test_autocast_leaves_the_loss_in_float32() -> None:
    model = _Model(nc=3)
    preds = _randn_preds(2, 3, 64, seed=4)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.4, 0.3], [1, 0, 0.6, 0.6, 0.5, 0.5]])
    loss = V8DetectionLoss(model)
    total, items = loss(preds, targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total_amp, items_amp = loss(preds, targets)
    assert total_amp.dtype == torch.float32
    torch.testing.assert_close(items_amp, items, **TOL)


def test_minimising_the_loss_fits_the_boxes() -> None:
    """Free prediction maps trained on the loss alone end with the gt boxes and classes on top."""
    torch.manual_seed(0)
    model = _Model(nc=2)
    preds = [(torch.randn(1, 66, 64 // s, 64 // s) * 0.1).requires_grad_() for s in (8, 16, 32)]
    targets = torch.tensor([[0, 1, 0.3, 0.4, 0.25, 0.4], [0, 0, 0.7, 0.6, 0.5, 0.3]])
    loss = V8DetectionLoss(model)
    opt = torch.optim.Adam(preds, lr=0.1)
    first = None
    for _ in range(120):
        opt.zero_grad()
        total, items = loss(preds, targets)
        first = float(total.detach()) if first is None else first
        total.backward()
        opt.step()
    assert float(total.detach()) < 0.1 * first
    with torch.no_grad():
        distri, scores = loss.split(preds)
        points, stride = anchor_points([(8, 8), (4, 4), (2, 2)], [8.0, 16.0, 32.0], torch.device("cpu"))
        boxes = distances_to_boxes(distri, points, 16)[0] * stride  # pixels
        probs = scores[0].sigmoid()
    gt = torch.tensor([[11.2, 12.8, 27.2, 38.4], [28.8, 28.8, 60.8, 48.0]])
    for j, cls in enumerate((1, 0)):
        best = int(probs[:, cls].argmax())
        assert probs[best, cls] > 0.5
        assert float(complete_box_iou(boxes[best : best + 1], gt[j : j + 1])) > 0.9
