"""Tests for the task-aligned assigner (yoloattn.engine.assigner_tal), values derived by hand.

Predicted boxes are chosen concentric with the gt and square, so CIoU = IoU (no centre or aspect
term) and the alignment ``score^0.5 * CIoU^6`` is easy to write down.
"""

from __future__ import annotations

import math

import pytest
import torch

from yoloattn.engine.assigner_tal import TaskAlignedAssigner, candidates_in_gts, widen_small_boxes

TOL = dict(rtol=1e-5, atol=1e-6)


def _gt(rows: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image: rows ``(cls, x1, y1, x2, y2)`` -> labels [1, M, 1], boxes [1, M, 4], mask [1, M, 1]."""
    t = torch.tensor(rows, dtype=torch.float32).view(1, -1, 5)
    return t[..., :1], t[..., 1:], t[..., 1:].sum(-1, keepdim=True) > 0


def _scores(per_anchor: list[list[float]]) -> torch.Tensor:
    return torch.tensor(per_anchor, dtype=torch.float32)[None]


def _boxes(per_anchor: list[list[float]]) -> torch.Tensor:
    return torch.tensor(per_anchor, dtype=torch.float32)[None]


GT = [0.0, 0.0, 0.0, 40.0, 40.0]  # class 0, a 40 x 40 box at the origin
# anchors: three inside the gt, one outside
POINTS = torch.tensor([[20.0, 20.0], [18.0, 22.0], [22.0, 18.0], [60.0, 60.0]])
# predictions: exact gt (CIoU 1), 30 x 30 concentric (IoU 900/1600), exact gt, exact gt
BOXES = [[0, 0, 40, 40], [5, 5, 35, 35], [0, 0, 40, 40], [0, 0, 40, 40]]


def test_alignment_metric_and_overlaps_by_hand() -> None:
    labels, gt, mask = _gt([GT])
    a = TaskAlignedAssigner(2)
    in_gts = candidates_in_gts(POINTS, gt) & mask
    assert in_gts[0, 0].tolist() == [True, True, True, False]
    scores = _scores([[0.64, 0.1], [0.81, 0.2], [0.25, 0.9], [1.0, 1.0]])
    align, overlaps = a.metrics(scores, _boxes(BOXES), labels, gt, in_gts)
    u = 900 / 1600
    torch.testing.assert_close(overlaps[0, 0], torch.tensor([1.0, u, 1.0, 0.0]), **TOL)
    expected = torch.tensor([0.8, 0.9 * u**6, 0.5, 0.0])  # sqrt(score of class 0) * CIoU^6
    torch.testing.assert_close(align[0, 0], expected, **TOL)


def test_topk_keeps_the_k_best_and_targets_are_normalised() -> None:
    labels, gt, mask = _gt([GT])
    scores = _scores([[0.64, 0.1], [0.81, 0.2], [0.25, 0.9], [1.0, 1.0]])
    out = TaskAlignedAssigner(2, topk=2)(scores, _boxes(BOXES), POINTS, labels, gt, mask)
    # align = 0.8, 0.0286, 0.5 (inside), 0 (outside): top-2 are anchors 0 and 2 -> the gt is
    # assigned to several anchors
    assert out.fg_mask[0].tolist() == [True, False, True, False]
    assert out.gt_idx[0].tolist() == [0, 0, 0, 0]
    torch.testing.assert_close(out.bboxes[0, 0], torch.tensor([0.0, 0.0, 40.0, 40.0]))
    torch.testing.assert_close(out.bboxes[0, 2], torch.tensor([0.0, 0.0, 40.0, 40.0]))
    # target = align * max CIoU / max align: anchor 0: 0.8 * 1 / 0.8, anchor 2: 0.5 * 1 / 0.8
    expected = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.625, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(out.scores[0], expected, **TOL)
    # with the default k = 10 all three inside anchors are positive, the outside one never
    out10 = TaskAlignedAssigner(2)(scores, _boxes(BOXES), POINTS, labels, gt, mask)
    assert out10.fg_mask[0].tolist() == [True, True, True, False]
    u = 900 / 1600
    torch.testing.assert_close(out10.scores[0, 1, 0], torch.tensor(0.9 * u**6 / 0.8), **TOL)


def test_topk_default_ten_of_twelve_candidates() -> None:
    labels, gt, mask = _gt([GT])
    points = torch.tensor([[2.0 + 3 * i, 20.0] for i in range(12)])  # x = 2 .. 35, all inside
    s = [0.05 * (i + 1) for i in range(12)]  # increasing scores; every predicted box = gt
    scores = _scores([[v] for v in s])
    boxes = _boxes([[0, 0, 40, 40]] * 12)
    out = TaskAlignedAssigner(1)(scores, boxes, points, labels, gt, mask)
    assert out.fg_mask[0].tolist() == [False, False] + [True] * 10
    expected = torch.tensor([0.0, 0.0] + [math.sqrt(v) / math.sqrt(s[-1]) for v in s[2:]])
    torch.testing.assert_close(out.scores[0, :, 0], expected, **TOL)


def test_anchor_claimed_by_two_gts_goes_to_the_larger_ciou() -> None:
    # gt 0: [0, 0, 40, 40]; gt 1: [20, 0, 60, 40] (class 1); anchor 0 at (30, 20) is inside both
    labels, gt, mask = _gt([GT, [1.0, 20.0, 0.0, 60.0, 40.0]])
    points = torch.tensor([[30.0, 20.0], [10.0, 20.0], [50.0, 20.0]])
    boxes = _boxes([[20, 0, 60, 40], [0, 0, 40, 40], [20, 0, 60, 40]])
    scores = _scores([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])
    a = TaskAlignedAssigner(2)
    in_gts = candidates_in_gts(points, gt) & mask
    _, overlaps = a.metrics(scores, boxes, labels, gt, in_gts)
    # CIoU(gt 0, [20, 0, 60, 40]) = IoU 800/2400 - centre distance 20^2 / enclosing diagonal^2 (60^2 + 40^2)
    ciou_0 = 800 / 2400 - 400 / 5200
    torch.testing.assert_close(overlaps[0, :, 0], torch.tensor([ciou_0, 1.0]), **TOL)
    out = a(scores, boxes, points, labels, gt, mask)
    assert out.fg_mask[0].tolist() == [True, True, True]
    assert out.gt_idx[0].tolist() == [1, 0, 1]
    assert out.labels[0].tolist() == [1, 0, 1]
    torch.testing.assert_close(out.bboxes[0, 0], torch.tensor([20.0, 0.0, 60.0, 40.0]))
    # gt 1's anchors 0 and 2 both have align sqrt(0.5) and CIoU 1: target 1 in class 1
    torch.testing.assert_close(out.scores[0, 0], torch.tensor([0.0, 1.0]), **TOL)


def test_anchor_claimed_by_two_gts_tie_takes_the_first() -> None:
    # the predicted box of the shared anchor sits symmetric between the two gts: equal CIoU
    labels, gt, mask = _gt([GT, [1.0, 20.0, 0.0, 60.0, 40.0]])
    points = torch.tensor([[30.0, 20.0]])
    boxes = _boxes([[10, 0, 50, 40]])
    out = TaskAlignedAssigner(2)(_scores([[0.5, 0.5]]), boxes, points, labels, gt, mask)
    assert out.fg_mask[0].tolist() == [True]
    assert out.gt_idx[0].tolist() == [0]
    assert out.labels[0].tolist() == [0]


def test_padded_gt_rows_select_nothing() -> None:
    a = TaskAlignedAssigner(1, topk=3)
    align = torch.rand(1, 2, 5) + 0.1
    mask_gt = torch.tensor([[[True], [False]]])
    sel = a.topk_mask(align, mask_gt)
    assert int(sel[0, 0].sum()) == 3 and not bool(sel[0, 1].any())
    # a whole batch: image 1 has one gt, its second row is padding; nothing is assigned to it
    labels = torch.tensor([[[0.0], [0.0]], [[0.0], [0.0]]])
    gt = torch.tensor([[[0.0, 0, 40, 40], [0, 0, 40, 40]], [[0.0, 0, 40, 40], [0, 0, 0, 0]]])
    mask = gt.sum(-1, keepdim=True) > 0
    points = POINTS[:3]
    out = TaskAlignedAssigner(1)(
        torch.full((2, 3, 1), 0.5), torch.tensor(BOXES[:3]).float().expand(2, 3, 4), points, labels, gt, mask
    )
    assert out.fg_mask.all() and out.gt_idx[1].tolist() == [0, 0, 0]


def test_no_gt_at_all_is_all_background() -> None:
    out = TaskAlignedAssigner(3)(
        torch.rand(2, 4, 3),
        torch.rand(2, 4, 4),
        POINTS,
        torch.zeros(2, 0, 1),
        torch.zeros(2, 0, 4),
        torch.zeros(2, 0, 1, dtype=torch.bool),
    )
    assert out.scores.shape == (2, 4, 3) and not out.scores.any()
    assert not out.fg_mask.any() and out.gt_idx.shape == (2, 4)


def test_widen_small_boxes_by_hand() -> None:
    boxes = torch.tensor([[[13.0, 13, 19, 19], [0, 0, 40, 4], [0, 0, 40, 40], [0, 0, 0, 0]]])
    mask = torch.tensor([[[True], [True], [True], [False]]])
    out = widen_small_boxes(boxes, mask, 16.0)
    expected = torch.tensor([[[8.0, 8, 24, 24], [0, -6, 40, 10], [0, 0, 40, 40], [0, 0, 0, 0]]])
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("widen", [True, False])
def test_small_box_widening_on_vs_off(widen: bool) -> None:
    # a 6 x 6 gt centred at (16, 16); anchors of a stride-8 grid sit at 4, 12, 20, 28
    labels, gt, mask = _gt([[0.0, 13.0, 13.0, 19.0, 19.0]])
    xs = [4.0, 12.0, 20.0, 28.0]
    points = torch.tensor([[x, y] for y in xs for x in xs])
    boxes = _boxes([[13, 13, 19, 19]] * len(points))  # every prediction is the gt box
    scores = torch.full((1, len(points), 1), 0.5)
    out = TaskAlignedAssigner(1, small_box_size=16.0 if widen else None)(
        scores, boxes, points, labels, gt, mask
    )
    fg = {(float(points[i, 0]), float(points[i, 1])) for i in out.fg_mask[0].nonzero().flatten().tolist()}
    if widen:  # widened to [8, 8, 24, 24]: the four anchors around the centre are candidates
        assert fg == {(12.0, 12.0), (20.0, 12.0), (12.0, 20.0), (20.0, 20.0)}
        torch.testing.assert_close(out.bboxes[0, 5], torch.tensor([13.0, 13.0, 19.0, 19.0]))  # real gt box
    else:  # 8.3: no anchor centre lies inside the 6 x 6 box
        assert fg == set()


def test_inside_test_is_strict() -> None:
    gt = torch.tensor([[[0.0, 0.0, 40.0, 40.0]]])
    points = torch.tensor([[0.0, 20.0], [1e-3, 20.0], [40.0, 40.0], [39.9, 39.9]])
    assert candidates_in_gts(points, gt)[0, 0].tolist() == [False, True, False, True]


def _reference_assign(scores, boxes, points, labels, gt, mask, topk, small):  # type: ignore[no-untyped-def]
    """Spec 5.4 step by step with Python loops (same torch.topk for the tie order)."""
    from yoloattn.engine.loss import bbox_ciou_xyxy

    b_n, n, nc = scores.shape
    m = gt.shape[1]
    fg = torch.zeros(b_n, n, dtype=torch.bool)
    gt_idx = torch.zeros(b_n, n, dtype=torch.long)
    target = torch.zeros(b_n, n, nc)
    for b in range(b_n):
        align = torch.zeros(m, n)
        over = torch.zeros(m, n)
        inside = torch.zeros(m, n, dtype=torch.bool)
        for j in range(m):
            if not mask[b, j, 0]:
                continue
            x1, y1, x2, y2 = gt[b, j].tolist()
            if small is not None:
                cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
                w, h = max(w, small), max(h, small)
                x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
            for a in range(n):
                ax, ay = points[a].tolist()
                if min(ax - x1, ay - y1, x2 - ax, y2 - ay) > 1e-9:
                    inside[j, a] = True
                    u = max(float(bbox_ciou_xyxy(gt[b, j], boxes[b, a])), 0.0)
                    over[j, a] = u
                    align[j, a] = scores[b, a, int(labels[b, j, 0])] ** 0.5 * u**6
        pos = torch.zeros(m, n, dtype=torch.bool)
        for j in range(m):
            if mask[b, j, 0]:
                for a in align[j].topk(topk).indices.tolist():
                    pos[j, a] = inside[j, a]
        for a in range(n):
            if pos[:, a].sum() > 1:
                best = int(over[:, a].argmax())
                pos[:, a] = False
                pos[best, a] = True
        for a in range(n):
            if pos[:, a].any():
                fg[b, a] = True
                gt_idx[b, a] = int(pos[:, a].float().argmax())
        norm = torch.zeros(n)
        for j in range(m):
            al, ov = align[j] * pos[j], over[j] * pos[j]
            norm = torch.maximum(norm, al * ov.max() / (al.max() + 1e-9))
        for a in range(n):
            if fg[b, a]:
                target[b, a, int(labels[b, gt_idx[b, a], 0])] = norm[a]
    return fg, gt_idx, target


@pytest.mark.parametrize("small", [None, 16.0])
def test_matches_a_loop_reference_on_random_inputs(small: float | None) -> None:
    gen = torch.Generator().manual_seed(4)
    b_n, n, nc, m = 2, 49, 3, 3
    xs = torch.arange(7, dtype=torch.float32) * 8 + 4
    points = torch.stack(torch.meshgrid(xs, xs, indexing="xy"), -1).view(-1, 2)
    centres = points[None].expand(b_n, -1, -1) + torch.rand(b_n, n, 2, generator=gen) * 8 - 4
    half = torch.rand(b_n, n, 2, generator=gen) * 12 + 2
    boxes = torch.cat((centres - half, centres + half), -1)
    scores = torch.rand(b_n, n, nc, generator=gen)
    c = torch.rand(b_n, m, 2, generator=gen) * 16 + 20  # overlapping gts: anchors claimed twice
    wh = torch.rand(b_n, m, 2, generator=gen) * 30 + 4
    gt = torch.cat((c - wh / 2, c + wh / 2), -1)
    gt[1, 2] = 0.0  # image 1 has two gts and a padding row
    mask = gt.sum(-1, keepdim=True) > 0
    labels = torch.randint(0, nc, (b_n, m, 1), generator=gen).float()
    labels[1, 2] = 0.0
    assigner = TaskAlignedAssigner(nc, topk=6, small_box_size=small)
    out = assigner(scores, boxes, points, labels, gt, mask)
    fg, gt_idx, target = _reference_assign(scores, boxes, points, labels, gt, mask, 6, small)
    test_boxes = gt if small is None else widen_small_boxes(gt, mask, small)
    in_gts = candidates_in_gts(points, test_boxes) & mask
    align, _ = assigner.metrics(scores, boxes, labels, gt, in_gts)
    assert int(((assigner.topk_mask(align, mask) & in_gts).sum(1) > 1).sum()) >= 2  # conflicts exercised
    assert fg.any()
    assert out.fg_mask.tolist() == fg.tolist()
    assert out.gt_idx[fg].tolist() == gt_idx[fg].tolist()
    torch.testing.assert_close(out.scores, target, **TOL)
