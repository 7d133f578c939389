"""Tests for yoloattn.engine.nms: official NMS semantics and the letterbox inverse."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torchvision

from yoloattn.data.boxes import scale_boxes
from yoloattn.engine.nms import (
    NMS_PRESETS,
    PREDICT_NMS,
    VAL_NMS,
    clip_boxes,
    non_max_suppression,
    xywh2xyxy,
    xyxy2xywh,
)


def _row(cx: float, cy: float, w: float, h: float, obj: float, cls: list[float]) -> list[float]:
    return [cx, cy, w, h, obj, *cls]


def _pred(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor([rows], dtype=torch.float32)


def test_presets_match_spec() -> None:
    assert VAL_NMS == dict(conf_thres=0.001, iou_thres=0.6, multi_label=True, max_det=300)
    assert PREDICT_NMS == dict(conf_thres=0.25, iou_thres=0.45, multi_label=False, max_det=1000)
    assert NMS_PRESETS["v7-test"]["iou_thres"] == 0.65 and NMS_PRESETS["v7-test"]["max_wh"] == 4096
    # every preset is a valid keyword set (the anchor-free ones take the v8 layout [N, 4 + nc, A])
    x = _pred([_row(50, 50, 20, 20, 0.9, [0.8, 0.1])])
    x_v8 = torch.tensor([[[50.0], [50.0], [20.0], [20.0], [0.8], [0.1]]])
    for kw in NMS_PRESETS.values():
        assert non_max_suppression(x_v8 if kw.get("anchor_free") else x, **kw)[0].shape[1] == 6


def test_score_is_obj_times_cls_and_boxes_are_xyxy() -> None:
    out = non_max_suppression(_pred([_row(50, 40, 20, 10, 0.8, [0.5, 0.9, 0.1])]), conf_thres=0.25)[0]
    assert out.shape == (1, 6)
    torch.testing.assert_close(out[0, :4], torch.tensor([40.0, 35.0, 60.0, 45.0]))
    assert out[0, 4].item() == pytest.approx(0.8 * 0.9)
    assert out[0, 5].item() == 1.0


def test_candidates_need_objectness_above_threshold() -> None:
    # obj 0.2 < conf_thres although obj*cls would also be low; obj 0.3 passes obj but 0.3*0.5 fails score
    rows = [
        _row(50, 50, 10, 10, 0.2, [1.0]),
        _row(50, 50, 10, 10, 0.3, [0.5]),
        _row(10, 10, 4, 4, 0.9, [0.9]),
    ]
    out = non_max_suppression(_pred(rows), conf_thres=0.25)[0]
    assert out.shape[0] == 1 and out[0, 4].item() == pytest.approx(0.81)


def test_multi_label_keeps_every_class_above_threshold() -> None:
    x = _pred([_row(50, 50, 20, 20, 0.9, [0.8, 0.5, 0.01])])
    single = non_max_suppression(x, conf_thres=0.1, multi_label=False)[0]
    multi = non_max_suppression(x, conf_thres=0.1, multi_label=True)[0]
    assert single[:, 5].tolist() == [0.0]
    assert multi[:, 5].tolist() == [0.0, 1.0]  # same box twice, sorted by score; class 2 (0.009) dropped
    torch.testing.assert_close(multi[:, 4], torch.tensor([0.72, 0.45]))
    torch.testing.assert_close(multi[0, :4], multi[1, :4])


def test_class_offset_keeps_overlapping_boxes_of_other_classes() -> None:
    rows = [
        _row(50, 50, 20, 20, 0.9, [0.9, 0.0]),
        _row(51, 50, 20, 20, 0.9, [0.8, 0.0]),  # same class, IoU ~0.9: suppressed
        _row(50, 51, 20, 20, 0.9, [0.0, 0.7]),  # other class: kept unless agnostic
    ]
    out = non_max_suppression(_pred(rows), conf_thres=0.25, iou_thres=0.45)[0]
    assert out[:, 5].tolist() == [0.0, 1.0]
    out_agn = non_max_suppression(_pred(rows), conf_thres=0.25, iou_thres=0.45, agnostic=True)[0]
    assert out_agn[:, 5].tolist() == [0.0]


def test_classes_filter_max_det_and_sorting() -> None:
    g = torch.Generator().manual_seed(0)
    n = 50
    xy = torch.rand(n, 2, generator=g) * 600
    rows = torch.cat(
        (
            xy,
            torch.full((n, 2), 8.0),
            torch.rand(n, 1, generator=g) * 0.5 + 0.5,
            torch.rand(n, 3, generator=g),
        ),
        1,
    )
    out = non_max_suppression(rows[None], conf_thres=0.05, max_det=7)[0]
    assert out.shape[0] == 7
    assert torch.all(out[:-1, 4] >= out[1:, 4])
    only = non_max_suppression(rows[None], conf_thres=0.05, classes=[2])[0]
    assert only.shape[0] > 0 and set(only[:, 5].tolist()) == {2.0}


@pytest.mark.parametrize("multi_label", [False, True])
def test_matches_torchvision_batched_nms_reference(multi_label: bool) -> None:
    g = torch.Generator().manual_seed(1)
    n, nc = 400, 4
    xy = torch.rand(n, 2, generator=g) * 200
    wh = torch.rand(n, 2, generator=g) * 60 + 5
    x = torch.cat((xy, wh, torch.rand(n, 1, generator=g), torch.rand(n, nc, generator=g)), 1)
    conf, iou = 0.3, 0.5
    out = non_max_suppression(
        x[None], conf_thres=conf, iou_thres=iou, multi_label=multi_label, max_det=10**6
    )[0]
    # independent reference: explicit enumeration + torchvision.ops.batched_nms
    c = x[x[:, 4] > conf]
    s = c[:, 5:] * c[:, 4:5]
    b = torchvision.ops.box_convert(c[:, :4], "cxcywh", "xyxy")
    if multi_label:
        i, j = torch.where(s > conf)
        b, sc, cl = b[i], s[i, j], j
    else:
        sc, cl = s.max(1)
        keep = sc > conf
        b, sc, cl = b[keep], sc[keep], cl[keep]
    k = torchvision.ops.batched_nms(b, sc, cl, iou)
    ref = torch.cat((b[k], sc[k, None], cl[k, None].float()), 1)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref)


def test_large_coordinates_fall_back_to_batched_nms() -> None:
    # boxes spanning more than max_wh: a tiny max_wh would mix classes with the offset trick
    rows = [_row(50, 50, 20, 20, 0.9, [0.9, 0.0]), _row(150, 50, 20, 20, 0.9, [0.0, 0.8])]
    out = non_max_suppression(_pred(rows), conf_thres=0.25, max_wh=100)[0]
    assert out.shape[0] == 2


def test_v7_single_class_uses_objectness() -> None:
    x = _pred([_row(50, 50, 20, 20, 0.6, [0.3])])
    assert non_max_suppression(x, conf_thres=0.25)[0].shape[0] == 0  # 0.18 < 0.25
    out = non_max_suppression(x, conf_thres=0.25, nc1_obj_only=True)[0]
    assert out[0, 4].item() == pytest.approx(0.6)


def test_batch_empty_images_tuple_input_and_dtype() -> None:
    x = torch.zeros(3, 10, 7, dtype=torch.float64)
    x[1, 0] = torch.tensor([50, 50, 10, 10, 0.9, 0.9, 0.1], dtype=torch.float64)
    out = non_max_suppression((x, [torch.zeros(1)]), conf_thres=0.25)
    assert [o.shape[0] for o in out] == [0, 1, 0]
    assert all(o.shape[1] == 6 and o.dtype == torch.float64 for o in out)


def test_time_limit_stops_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    x = torch.tensor([[_row(50, 50, 10, 10, 0.9, [0.9])]] * 3)
    with caplog.at_level(logging.WARNING):
        out = non_max_suppression(x, conf_thres=0.25, time_limit=0.0)
    assert [o.shape[0] for o in out] == [1, 0, 0]
    assert "time limit" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(prediction=torch.zeros(10, 7)), r"\[N, A, 5\+nc\]"),
        (dict(prediction=torch.zeros(1, 10, 5)), "nc >= 1"),
        (dict(prediction=torch.zeros(1, 10, 7), conf_thres=1.5), "conf_thres"),
        (dict(prediction=torch.zeros(1, 10, 7), iou_thres=-0.1), "iou_thres"),
    ],
)
def test_bad_input_messages(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        non_max_suppression(**kwargs)


def test_box_format_round_trip_tensor_and_numpy() -> None:
    b = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    torch.testing.assert_close(xyxy2xywh(b), torch.tensor([[20.0, 40.0, 20.0, 40.0]]))
    torch.testing.assert_close(xywh2xyxy(xyxy2xywh(b)), b)
    a = np.array([[20.0, 40.0, 20.0, 40.0]])
    np.testing.assert_allclose(xywh2xyxy(a), [[10.0, 20.0, 30.0, 60.0]])


def _letterbox_forward(boxes: np.ndarray, shape0: tuple[int, int], new: tuple[int, int]) -> tuple:
    """Spec 9.1 letterbox geometry applied to boxes: scale by r, shift by the top/left padding."""
    h0, w0 = shape0
    r = min(new[0] / h0, new[1] / w0)
    w, h = round(w0 * r), round(h0 * r)
    dw, dh = (new[1] - w) / 2, (new[0] - h) / 2
    left, top = round(dw - 0.1), round(dh - 0.1)
    out = boxes * r
    out[:, [0, 2]] += left
    out[:, [1, 3]] += top
    return out, ((r, r), (left, top))


def test_scale_boxes_inverts_letterbox() -> None:
    shape0 = (480, 640)  # h, w
    boxes0 = np.array([[10.0, 20.0, 300.0, 400.0], [600.0, 5.0, 640.0, 480.0]])
    lb, ratio_pad = _letterbox_forward(boxes0, shape0, (640, 640))
    back = scale_boxes((640, 640), torch.tensor(lb), shape0, ratio_pad, official=True)
    torch.testing.assert_close(back, torch.tensor(boxes0, dtype=back.dtype))
    # without ratio_pad the pad is recomputed (centred, unrounded): sub-pixel agreement here
    back2 = scale_boxes((640, 640), lb, (*shape0, 3), official=True)
    np.testing.assert_allclose(back2, boxes0, atol=1e-6)
    # extra columns are carried along and the input is untouched
    full = torch.tensor(np.concatenate((lb, [[0.9, 1], [0.8, 2]]), 1))
    before = full.clone()
    scaled = scale_boxes((640, 640), full, shape0, ratio_pad, official=True)
    torch.testing.assert_close(full, before)
    torch.testing.assert_close(scaled[:, 4:], before[:, 4:])


def test_clip_boxes() -> None:
    b = torch.tensor([[-5.0, -1.0, 700.0, 300.0]])
    torch.testing.assert_close(clip_boxes(b, (200, 640)), torch.tensor([[0.0, 0.0, 640.0, 200.0]]))
    np.testing.assert_allclose(clip_boxes(b.numpy(), (200, 640)), [[0.0, 0.0, 640.0, 200.0]])
    assert b[0, 0].item() == -5.0  # copy, not in place


# --------------------------------------------------------------------------- YOLOv8 / YOLO11


def _v8(rows: list[list[float]]) -> torch.Tensor:
    """Rows ``(cx, cy, w, h, cls_1..cls_nc)`` -> the anchor-free head layout ``[1, 4 + nc, A]``."""
    return torch.tensor([rows], dtype=torch.float32).transpose(1, 2)


def test_anchor_free_scores_are_class_probabilities() -> None:
    out = non_max_suppression(_v8([[50, 40, 20, 10, 0.5, 0.9, 0.1]]), conf_thres=0.25, anchor_free=True)[0]
    assert out.shape == (1, 6)
    torch.testing.assert_close(out[0, :4], torch.tensor([40.0, 35.0, 60.0, 45.0]))
    assert out[0, 4].item() == pytest.approx(0.9) and out[0, 5].item() == 1.0  # no objectness factor
    # candidates need their best class probability above conf; multi-label keeps every class above it
    rows = [[50, 50, 10, 10, 0.2, 0.1], [10, 10, 4, 4, 0.6, 0.3]]
    out = non_max_suppression(_v8(rows), **NMS_PRESETS["v8-predict"])[0]
    assert out[:, 4].tolist() == pytest.approx([0.6])
    out = non_max_suppression(_v8(rows), **NMS_PRESETS["v8-val"])[0]
    assert sorted(out[:, 4].tolist()) == pytest.approx([0.1, 0.2, 0.3, 0.6])


def test_v8_presets_and_iou_07() -> None:
    assert NMS_PRESETS["v8-val"] == dict(
        conf_thres=0.001, iou_thres=0.7, multi_label=True, max_det=300, anchor_free=True
    )
    assert NMS_PRESETS["v8-predict"]["iou_thres"] == 0.7 and NMS_PRESETS["v8-predict"]["conf_thres"] == 0.25
    # two same-class boxes with IoU 0.65 (10x10 and 10x6.5 sharing a corner): v8 keeps both, v5 val drops one
    rows = [[5, 5, 10, 10, 0.9], [5, 3.25, 10, 6.5, 0.8]]
    assert non_max_suppression(_v8(rows), **NMS_PRESETS["v8-val"])[0].shape[0] == 2
    v5_rows = [[*r[:4], 1.0, r[4]] for r in rows]
    assert non_max_suppression(_pred(v5_rows), **VAL_NMS)[0].shape[0] == 1


def test_anchor_free_shape_error() -> None:
    with pytest.raises(ValueError, match="4\\+nc, A"):
        non_max_suppression(torch.zeros(1, 4, 10), anchor_free=True)
