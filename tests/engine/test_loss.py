"""Tests for the YOLOv5 loss (ComputeLoss) and the YOLOv7 loss (ComputeLossOTA)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision.ops import box_convert, complete_box_iou_loss

from yoloattn.engine.loss import (
    ComputeLoss,
    FocalLoss,
    bbox_ciou,
    candidate_targets,
    detect_head,
    objectness_balance,
    smooth_bce,
)
from yoloattn.engine.loss_ota import ComputeLossOTA, dynamic_k_matching

HYP = {
    "box": 0.05,
    "obj": 1.0,
    "cls": 0.5,
    "cls_pw": 1.0,
    "obj_pw": 1.0,
    "anchor_t": 4.0,
    "fl_gamma": 0.0,
}
STRIDES = (8.0, 16.0, 32.0)
# YOLOv5 P5 anchors in pixels.
V5_ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
# Anchors (grid units) spread so far apart that a target matches exactly one anchor of one level.
SPARSE_GRID_ANCHORS = [[1, 1, 5, 5, 25, 25], [5, 5, 25, 25, 125, 125], [25, 25, 125, 125, 625, 625]]


class _Head(nn.Module):
    """Stand-in for Detect/IDetect: only the attributes the losses read."""

    def __init__(self, nc: int, anchors_grid: torch.Tensor, strides: tuple[float, ...]) -> None:
        super().__init__()
        self.nc, self.nl, self.na, self.no = nc, anchors_grid.shape[0], anchors_grid.shape[1], nc + 5
        self.register_buffer("anchors", anchors_grid)
        self.stride = torch.tensor(strides)


class _Model(nn.Module):
    def __init__(self, nc: int = 3, sparse: bool = False) -> None:
        super().__init__()
        if sparse:
            grid = torch.tensor(SPARSE_GRID_ANCHORS, dtype=torch.float32).view(3, 3, 2)
        else:
            grid = torch.tensor(V5_ANCHORS, dtype=torch.float32).view(3, 3, 2)
            grid = grid / torch.tensor(STRIDES).view(3, 1, 1)
        self.detect = _Head(nc, grid, STRIDES)
        self.conv = nn.Conv2d(1, 1, 1)


def _zeros_p(bs: int, nc: int, size: int = 64, fill: float = 0.0) -> list[torch.Tensor]:
    return [torch.full((bs, 3, size // int(s), size // int(s), nc + 5), fill) for s in STRIDES]


def _randn_p(bs: int, nc: int, size: int = 64, seed: int = 0, scale: float = 0.5) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randn(bs, 3, size // int(s), size // int(s), nc + 5, generator=gen) * scale for s in STRIDES
    ]


def _targets(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).view(-1, 6)


# --------------------------------------------------------------------------- CIoU


def test_ciou_equals_torchvision_on_random_boxes() -> None:
    gen = torch.Generator().manual_seed(0)
    scale = torch.tensor([20.0, 20.0, 8.0, 8.0], dtype=torch.float64)
    b1 = torch.rand(500, 4, generator=gen, dtype=torch.float64) * scale + torch.tensor([0, 0, 0.1, 0.1])
    b2 = torch.rand(500, 4, generator=gen, dtype=torch.float64) * scale + torch.tensor([0, 0, 0.1, 0.1])
    ours = bbox_ciou(b1, b2)
    ref = 1 - complete_box_iou_loss(box_convert(b1, "cxcywh", "xyxy"), box_convert(b2, "cxcywh", "xyxy"))
    assert torch.allclose(ours, ref, rtol=0, atol=1e-12)
    # identical boxes give area / (area + eps), far apart boxes a negative value
    area = b1[:, 2] * b1[:, 3]
    assert torch.allclose(bbox_ciou(b1, b1), area / (area + 1e-7), rtol=0, atol=1e-12)
    far = bbox_ciou(torch.tensor([0.0, 0, 1, 1]), torch.tensor([10.0, 10, 1, 1]))
    assert far < 0


def test_ciou_formula_and_alpha_without_grad() -> None:
    b1 = torch.tensor([[1.0, 2.0, 3.0, 1.5]], dtype=torch.float64, requires_grad=True)
    b2 = torch.tensor([[1.5, 2.5, 2.0, 2.5]], dtype=torch.float64)
    eps = 1e-7
    # hand formula
    l1, r1, t1, d1 = 1 - 1.5, 1 + 1.5, 2 - 0.75, 2 + 0.75
    l2, r2, t2, d2 = 0.5, 2.5, 1.25, 3.75
    inter = (min(r1, r2) - max(l1, l2)) * (min(d1, d2) - max(t1, t2))
    iou = inter / (3 * 1.5 + 2 * 2.5 - inter + eps)
    c2 = (max(r1, r2) - min(l1, l2)) ** 2 + (max(d1, d2) - min(t1, t2)) ** 2 + eps
    rho2 = 0.5**2 + 0.5**2
    v = 4 / math.pi**2 * (math.atan(2 / 2.5) - math.atan(3 / 1.5)) ** 2
    alpha = v / (v - iou + 1 + eps)
    ciou = bbox_ciou(b1, b2)
    assert ciou.item() == pytest.approx(iou - (rho2 / c2 + v * alpha), abs=1e-12)
    # the gradient treats alpha as a constant, like torchvision's CIoU loss
    ciou.sum().backward()
    b1_ref = b1.detach().clone().requires_grad_(True)
    loss = complete_box_iou_loss(box_convert(b1_ref, "cxcywh", "xyxy"), box_convert(b2, "cxcywh", "xyxy"))
    (-loss).sum().backward()
    assert torch.allclose(b1.grad, b1_ref.grad, atol=1e-10)


# --------------------------------------------------------------------------- small pieces


def test_smooth_bce_and_balance() -> None:
    assert smooth_bce(0.0) == (1.0, 0.0)
    assert smooth_bce(0.1) == pytest.approx((0.95, 0.05))
    assert objectness_balance(3) == [4.0, 1.0, 0.4]
    assert objectness_balance(4) == [4.0, 1.0, 0.25, 0.06]
    with pytest.raises(ValueError, match="detection levels"):
        objectness_balance(6)


def test_focal_loss_formula() -> None:
    logits = torch.tensor([-2.0, 0.0, 1.5, 3.0])
    target = torch.tensor([0.0, 1.0, 1.0, 0.2])
    gamma, alpha = 1.5, 0.25
    prob = logits.sigmoid()
    bce = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = target * prob + (1 - target) * (1 - prob)
    a_t = target * alpha + (1 - target) * (1 - alpha)
    expected = (bce * a_t * (1 - p_t) ** gamma).mean()
    assert FocalLoss(gamma)(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_detect_head_unwraps_parallel_and_reports_missing() -> None:
    model = _Model()
    assert detect_head(nn.DataParallel(model)) is model.detect
    with pytest.raises(AttributeError, match="detect"):
        detect_head(nn.Linear(2, 2))


# --------------------------------------------------------------------------- target assignment


def _cells(x: float, y: float, grid: int = 8) -> list[tuple[int, int]]:
    """(gi, gj) of the positives of one target of size 1 cell at level 0 (sparse anchors)."""
    t = _targets([[0, 0, x / grid, y / grid, 1 / grid, 1 / grid]])
    anchors = torch.tensor(SPARSE_GRID_ANCHORS, dtype=torch.float32).view(3, 3, 2)
    levels = candidate_targets(t, [(8, 8), (4, 4), (2, 2)], anchors, 4.0)
    assert len(levels[1]) == len(levels[2]) == 0
    lv = levels[0]
    assert (lv.a == 0).all()
    # box target = centre minus the (clamped) cell, in [-0.5, 1.5]
    cell = torch.stack((lv.gi, lv.gj), 1).float()
    assert torch.equal(lv.tbox[:, :2], torch.tensor([[x, y]]) - cell)
    assert ((lv.tbox[:, :2] >= -0.5) & (lv.tbox[:, :2] <= 1.5)).all()
    return [(int(i), int(j)) for i, j in zip(lv.gi, lv.gj)]


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [
        (4.5, 4.5, [(4, 4)]),  # exactly centred: no neighbour (frac < 0.5 is strict)
        (4.25, 4.25, [(4, 4), (3, 4), (4, 3)]),  # near the left/top edge: centre, left, up
        (4.75, 4.75, [(4, 4), (5, 4), (4, 5)]),  # near the right/bottom edge: centre, right, down
        (4.25, 4.75, [(4, 4), (3, 4), (4, 5)]),  # left and down
        (0.25, 4.25, [(0, 4), (0, 3)]),  # first column: no left neighbour (gx > 1 fails)
        (1.25, 4.5, [(1, 4), (0, 4)]),  # second column: left neighbour allowed
        (0.75, 4.5, [(0, 4), (1, 4)]),  # first column, right half: right neighbour
        (7.75, 4.75, [(7, 4), (7, 5)]),  # last column: no right neighbour (inv > 1 fails)
        (6.75, 4.5, [(6, 4), (7, 4)]),  # second-to-last column: right neighbour is column 7
        (8.0, 4.5, [(7, 4), (7, 4)]),  # x = 1.0: centre clamped to 7, left is 7 too (duplicate)
        (4.25, 0.25, [(4, 0), (3, 0)]),  # first row: no upper neighbour
    ],
)
def test_candidate_cells(x: float, y: float, expected: list[tuple[int, int]]) -> None:
    assert _cells(x, y) == expected


def test_candidate_anchor_ratio_threshold_and_order() -> None:
    anchors = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [4.0, 4.0]]])
    # w = h = 2 cells: ratios 2, 1, 2 -> all three anchors; centred so 1 cell each
    t = _targets([[0, 0, 4.5 / 8, 4.5 / 8, 2 / 8, 2 / 8]])
    (lv,) = candidate_targets(t, [(8, 8)], anchors, 4.0)
    assert lv.a.tolist() == [0, 1, 2]
    # w = 4 cells, h = 1 cell against anchor (1, 1): ratio exactly 4 is rejected (strict <)
    t = _targets([[0, 0, 4.5 / 8, 4.5 / 8, 4 / 8, 1 / 8]])
    (lv,) = candidate_targets(t, [(8, 8)], anchors, 4.0)
    assert lv.a.tolist() == [1]  # (2,2): ratios 2 and 2; (4,4): ratio 4 on h -> rejected
    # two targets, near-edge: offset-major order (all centres first), then anchor, then target
    t = _targets([[0, 1, 4.25 / 8, 4.5 / 8, 2 / 8, 2 / 8], [1, 2, 2.25 / 8, 4.5 / 8, 1 / 8, 1 / 8]])
    (lv,) = candidate_targets(t, [(8, 8)], anchors, 4.0)
    # target 0 matches anchors 0,1,2; target 1 matches anchors 0,1 -> 5 pairs x (centre + left)
    assert lv.a.tolist() == [0, 0, 1, 1, 2] * 2
    assert lv.tidx.tolist() == [0, 1, 0, 1, 0] * 2
    assert lv.b.tolist() == [0, 1, 0, 1, 0] * 2
    assert lv.tcls.tolist() == [1, 2, 1, 2, 1] * 2
    assert lv.gi.tolist() == [4, 2, 4, 2, 4] + [3, 1, 3, 1, 3]


def test_candidates_empty_targets() -> None:
    anchors = torch.ones(3, 3, 2)
    levels = candidate_targets(torch.zeros(0, 6), [(8, 8), (4, 4), (2, 2)], anchors, 4.0)
    assert [len(lv) for lv in levels] == [0, 0, 0]
    assert levels[0].tbox.shape == (0, 4)


# --------------------------------------------------------------------------- ComputeLoss values


def test_no_targets_objectness_only_exact() -> None:
    bs, nc = 2, 3
    loss_fn = ComputeLoss(_Model(nc), HYP)
    loss, items = loss_fn(_zeros_p(bs, nc), torch.zeros(0, 6))
    lobj = HYP["obj"] * math.log(2) * (4.0 + 1.0 + 0.4)  # BCE(0, 0) = log 2 on every cell
    assert items.tolist() == pytest.approx([0.0, lobj, 0.0], rel=1e-6)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(lobj * bs, rel=1e-6)
    assert not items.requires_grad


def test_single_target_exact_loss() -> None:
    bs, nc, z = 2, 2, 1.3
    p = _zeros_p(bs, nc)
    for pi in p:
        pi[..., 4] = z  # objectness logit z everywhere, all other logits 0
    # one target centred in cell (4, 4) of level 0, size = anchor 0 (1 x 1 cell) of image 1
    t = _targets([[1, 1, 4.5 / 8, 4.5 / 8, 1 / 8, 1 / 8]])
    loss_fn = ComputeLoss(_Model(nc, sparse=True), HYP)
    positives = loss_fn.build_targets(p, t)
    assert [len(x) for x in positives] == [1, 0, 0]
    loss, items = loss_fn(p, t)
    # prediction with zero logits: xy = 0.5, wh = anchor = 1 -> identical to the target box
    ciou = 1 / (1 + 1e-7)
    softplus = math.log1p(math.exp(z))
    n0 = bs * 3 * 8 * 8
    lobj = 4.0 * (softplus - ciou * z / n0) + 1.0 * softplus + 0.4 * softplus
    lbox = 1 - ciou
    lcls = math.log(2)  # BCE(0, t) = log 2 for t in {0, 1}
    expected = [HYP["box"] * lbox, HYP["obj"] * lobj, HYP["cls"] * lcls]
    assert items.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-9)
    assert loss.item() == pytest.approx(sum(expected) * bs, rel=1e-6)


def test_label_smoothing_changes_class_targets() -> None:
    nc, z, eps = 4, 0.7, 0.2
    p = _zeros_p(1, nc)
    p[0][..., 5:] = z
    t = _targets([[0, 2, 4.5 / 8, 4.5 / 8, 1 / 8, 1 / 8]])  # one positive
    _, items = ComputeLoss(_Model(nc, sparse=True), {**HYP, "label_smoothing": eps})(p, t)
    cp, cn = 1 - 0.5 * eps, 0.5 * eps
    mean_target = (cp + (nc - 1) * cn) / nc
    lcls = math.log1p(math.exp(z)) - z * mean_target  # BCE(z, t) = softplus(z) - t z
    assert items[2].item() == pytest.approx(HYP["cls"] * lcls, rel=1e-6)
    _, items0 = ComputeLoss(_Model(nc, sparse=True), HYP)(p, t)
    assert items0[2].item() == pytest.approx(HYP["cls"] * (math.log1p(math.exp(z)) - z / nc), rel=1e-6)


def test_single_class_has_no_class_loss() -> None:
    p = _randn_p(2, 1)
    t = _targets([[0, 0, 0.5, 0.5, 0.3, 0.4], [1, 0, 0.2, 0.7, 0.1, 0.1]])
    loss, items = ComputeLoss(_Model(nc=1), HYP)(p, t)
    assert items[2].item() == 0.0
    assert items[0].item() > 0 and torch.isfinite(loss).all()


def test_images_without_targets_and_border_boxes() -> None:
    p = _randn_p(3, 3)
    # image 1 has no targets; boxes touching every border, one at x = y = 1.0
    t = _targets([[0, 0, 0.0, 0.0, 0.1, 0.1], [0, 1, 1.0, 1.0, 0.2, 0.2], [2, 2, 0.99, 0.01, 0.5, 0.3]])
    loss, items = ComputeLoss(_Model(), HYP)(p, t)
    assert torch.isfinite(loss).all() and torch.isfinite(items).all()


def test_gradients_flow_to_predictions() -> None:
    p = [x.requires_grad_(True) for x in _randn_p(2, 3)]
    t = _targets([[0, 1, 0.4, 0.6, 0.3, 0.2], [1, 2, 0.7, 0.3, 0.05, 0.08]])
    loss_fn = ComputeLoss(_Model(), HYP)
    loss, _ = loss_fn(p, t)
    loss.backward()
    for pi in p:
        assert torch.isfinite(pi.grad).all()
        assert (pi.grad[..., 4] != 0).all()  # objectness: every cell
    positives = loss_fn.build_targets(p, t)
    for pi, lv in zip(p, positives):
        if len(lv):
            g = pi.grad[lv.b, lv.a, lv.gj, lv.gi]
            assert (g[:, :4].abs().sum(1) > 0).all()  # box channels of every positive
            assert (g[:, 5:].abs().sum(1) > 0).all()  # class channels


def test_input_validation_messages() -> None:
    loss_fn = ComputeLoss(_Model(nc=3), HYP)
    p = _zeros_p(2, 3)
    with pytest.raises(ValueError, match=r"\[nt, 6\]"):
        loss_fn(p, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="class indices"):
        loss_fn(p, _targets([[0, 3, 0.5, 0.5, 0.1, 0.1]]))
    with pytest.raises(ValueError, match="image indices"):
        loss_fn(p, _targets([[2, 0, 0.5, 0.5, 0.1, 0.1]]))
    with pytest.raises(ValueError, match="prediction levels"):
        loss_fn(p[:2], torch.zeros(0, 6))
    with pytest.raises(KeyError, match="anchor_t"):
        ComputeLoss(_Model(), {k: v for k, v in HYP.items() if k != "anchor_t"})


def test_focal_and_autobalance_options_run() -> None:
    p = _randn_p(2, 3)
    t = _targets([[0, 1, 0.4, 0.6, 0.3, 0.2]])
    loss_fn = ComputeLoss(_Model(), {**HYP, "fl_gamma": 1.5}, autobalance=True)
    assert isinstance(loss_fn.bce_cls, FocalLoss)
    loss, _ = loss_fn(p, t)
    assert torch.isfinite(loss).all()
    assert loss_fn.ssi == 1 and loss_fn.balance[1] == 1.0


def _optimise(loss_fn, p, t, steps: int = 25, ota: bool = False) -> tuple[float, float]:
    params = [x.clone().requires_grad_(True) for x in p]
    opt = torch.optim.Adam(params, lr=0.05)
    first = last = 0.0
    for step in range(steps):
        loss, _ = loss_fn(params, t, None) if ota else loss_fn(params, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if step == 0 else first
        last = loss.item()
    return first, last


def test_loss_decreases_when_optimised() -> None:
    p = _randn_p(2, 3, seed=1)
    t = _targets([[0, 1, 0.4, 0.6, 0.3, 0.2], [1, 2, 0.7, 0.3, 0.1, 0.15], [1, 0, 0.2, 0.2, 0.5, 0.6]])
    first, last = _optimise(ComputeLoss(_Model(), HYP), p, t)
    assert last < 0.5 * first


# --------------------------------------------------------------------------- ComputeLossOTA


def test_dynamic_k_matching_by_hand() -> None:
    iou = torch.tensor([[0.9, 0.8, 0.5, 0.1, 0.0], [0.3, 0.2, 0.1, 0.0, 0.0]])
    cost = torch.tensor([[1.0, 2.0, 0.5, 5.0, 6.0], [0.4, 3.0, 3.0, 3.0, 3.0]])
    # k = int(2.3) = 2 for target 0 (candidates 2 and 0), k = max(1, int(0.6)) = 1 for target 1
    # (candidate 0); candidate 0 is shared and goes to the cheaper target 1.
    chosen, gt = dynamic_k_matching(cost, iou)
    assert chosen.tolist() == [True, False, True, False, False]
    assert gt.tolist() == [1, 0]
    # only the 10 largest IoUs count: 20 candidates of IoU 0.95 give k = int(9.5) = 9
    chosen, gt = dynamic_k_matching(torch.arange(20.0)[None], torch.full((1, 20), 0.95))
    assert chosen.nonzero().flatten().tolist() == list(range(9))
    # no candidates / no targets
    chosen, gt = dynamic_k_matching(torch.zeros(2, 0), torch.zeros(2, 0))
    assert chosen.numel() == 0 and gt.numel() == 0


def test_ota_without_targets_equals_v5() -> None:
    p = _randn_p(2, 3)
    empty = torch.zeros(0, 6)
    l5, i5 = ComputeLoss(_Model(), HYP)(p, empty)
    l7, i7 = ComputeLossOTA(_Model(), HYP)(p, empty, torch.zeros(2, 3, 64, 64))
    assert torch.equal(l5, l7) and torch.equal(i5, i7[:3]) and i7[3] == i5.sum()
    assert i7[0] == 0 and i7[2] == 0


def test_ota_positives_are_candidates_and_at_most_10_per_target() -> None:
    p = _randn_p(2, 3, size=128, seed=3)
    t = _targets(
        [
            [0, 0, 0.5, 0.5, 0.4, 0.4],
            [0, 1, 0.52, 0.48, 0.35, 0.45],
            [0, 2, 0.1, 0.1, 0.05, 0.05],
            [1, 1, 0.7, 0.3, 0.2, 0.6],
        ]
    )
    model = _Model()
    ota = ComputeLossOTA(model, HYP)
    positives = ota.build_targets(p, t, torch.zeros(2, 3, 128, 128))
    no_imgs = ota.build_targets(p, t)  # imgs=None derives the same image size
    cands = ComputeLoss(model, HYP).build_targets(p, t)
    per_target = torch.zeros(len(t), dtype=torch.long)
    for level, (lv, lv2, cand) in enumerate(zip(positives, no_imgs, cands)):
        assert torch.equal(lv.b, lv2.b) and torch.equal(lv.gi, lv2.gi)
        cand_cells = {tuple(x) for x in torch.stack((cand.b, cand.a, cand.gj, cand.gi), 1).tolist()}
        for row in torch.stack((lv.b, lv.a, lv.gj, lv.gi), 1).tolist():
            assert tuple(row) in cand_cells
        # a positive belongs to a target of its own image, the box target is gt * grid - cell
        assert torch.equal(t[lv.tidx, 0].long(), lv.b)
        ny, nx = p[level].shape[2:4]
        tb = t[lv.tidx, 2:6] * torch.tensor([nx, ny, nx, ny])
        tb[:, :2] -= torch.stack((lv.gi, lv.gj), 1)
        assert torch.allclose(lv.tbox, tb)
        assert torch.equal(lv.tcls, t[lv.tidx, 1].long())
        per_target += torch.bincount(lv.tidx, minlength=len(t))
    assert per_target.sum() > 0
    assert (per_target <= 10).all()


def test_ota_runs_finite_with_grad_and_nc1() -> None:
    for nc in (3, 1):
        p = [x.requires_grad_(True) for x in _randn_p(2, nc, seed=5)]
        t = _targets([[0, 0, 0.4, 0.6, 0.3, 0.2], [1, 0, 1.0, 0.0, 0.1, 0.15]])
        loss, items = ComputeLossOTA(_Model(nc), HYP)(p, t, torch.zeros(2, 3, 64, 64))
        assert torch.isfinite(loss).all() and items.shape == (4,)  # lbox, lobj, lcls, total (official)
        assert items[3].item() == pytest.approx(items[:3].sum().item()) == pytest.approx(loss.item() / 2)
        assert items[0] > 0 and items[1] > 0
        assert (items[2] > 0) if nc > 1 else (items[2] == 0)
        loss.backward()
        assert all(torch.isfinite(pi.grad).all() for pi in p)


def test_ota_loss_decreases_when_optimised() -> None:
    p = _randn_p(2, 3, seed=2)
    t = _targets([[0, 1, 0.4, 0.6, 0.3, 0.2], [1, 2, 0.7, 0.3, 0.1, 0.15], [1, 0, 0.2, 0.2, 0.5, 0.6]])
    first, last = _optimise(ComputeLossOTA(_Model(), HYP), p, t, ota=True)
    assert last < 0.5 * first


def test_ota_cost_is_finite_when_probabilities_saturate() -> None:
    # sigmoid(+-40) is exactly 1 / about 4e-18 in float32: sqrt(cls * obj) hits 0 or 1 and the
    # official logit would be -inf/inf; the loss must stay finite and still assign positives
    p = _randn_p(2, 3, seed=5)
    for pi in p:
        pi[..., 4] = 40.0
        pi[..., 5:] = -40.0
    t = _targets([[0, 1, 0.5, 0.5, 0.3, 0.3], [1, 2, 0.3, 0.6, 0.2, 0.4]])
    loss_fn = ComputeLossOTA(_Model(3), HYP)
    loss, items = loss_fn(p, t, torch.zeros(2, 3, 64, 64))
    assert torch.isfinite(loss).all() and torch.isfinite(items).all()
    assert sum(len(lv) for lv in loss_fn.build_targets(p, t, torch.zeros(2, 3, 64, 64))) > 0


def test_ota_matches_in_pixels_per_axis_on_non_square_batches(monkeypatch) -> None:
    # a 64 x 256 batch (rect / multi-scale): x and w must scale with the width, y and h with the
    # height; scaling all four by the height (the official shortcut for square images) would put
    # the box far from its candidates and every IoU would be 0
    import yoloattn.engine.loss_ota as ota

    seen = []
    real = ota.dynamic_k_matching
    monkeypatch.setattr(
        ota, "dynamic_k_matching", lambda cost, iou, **kw: (seen.append(iou), real(cost, iou))[1]
    )
    g = torch.Generator().manual_seed(0)
    p = [torch.randn(1, 3, 64 // s, 256 // s, 8, generator=g) * 0.1 for s in (8, 16, 32)]
    t = _targets([[0, 1, 0.875, 0.5, 0.1, 0.5]])
    ComputeLossOTA(_Model(3), HYP)(p, t, torch.zeros(1, 3, 64, 256))
    assert seen and float(seen[0].max()) > 0.1
