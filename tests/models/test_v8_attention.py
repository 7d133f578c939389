"""Attention on YOLOv8 / YOLO11: presets, renumbering, weight transfer counts, identity insertion."""

from __future__ import annotations

import pytest
import torch

from yoloattn.models import build_model
from yoloattn.models.placement import PRESETS_BY_FAMILY, insertion_points, place_attention
from yoloattn.models.spec import parse_attention_spec
from yoloattn.models.weights import transfer_weights
from yoloattn.nn.gate import ResidualGate

# family -> (backbone preset rows, neck preset rows, detect row)
PRESET_ROWS = {"yolov8n": (8, [15, 18, 21], 22), "yolo11n": (8, [16, 19, 22], 23)}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("name", list(PRESET_ROWS))
def test_presets_and_renumbering(name: str) -> None:
    bb, neck, det = PRESET_ROWS[name]
    (p,) = parse_attention_spec("cbam@all")
    assert insertion_points(name, p) == [bb, *neck]
    cfg, index_map = place_attention(name, "cbam@all")
    rows = cfg["backbone"] + cfg["head"]
    assert len(rows) == det + 1 + 4
    assert rows[index_map[bb] + 1][2] == "cbam"
    assert rows[-1][0] == [index_map[k] + 1 for k in neck]  # Detect reads the attention rows
    # every absolute Concat source that pointed at a refined row now reads its attention row
    for i, r in enumerate(rows):
        if r[2] == "Concat":
            for j in r[0]:
                if j >= 0:
                    assert j - 1 not in [index_map[k] for k in (bb, *neck)] or rows[j][2] == "cbam", (i, r)
    assert "backbone after row 8" in PRESETS_BY_FAMILY["v8" if name == "yolov8n" else "11"].shipped


def _base(name: str):
    torch.manual_seed(0)
    m = build_model(name, nc=2)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m


@pytest.mark.parametrize("name", list(PRESET_ROWS))
def test_identity_insertion_at_neck_equals_the_plain_model(name: str) -> None:
    base = _base(name).eval()
    torch.manual_seed(1)
    model = build_model(name, nc=2, attention="cbam@neck", insert="identity").eval()
    report = transfer_weights(base.state_dict(), model, model.index_map)
    base_keys = len(base.state_dict())
    assert len(report.matched) == base_keys and not report.partial and not report.skipped
    assert not report.unused
    gates = [m for m in model.model if isinstance(m, ResidualGate)]
    assert len(gates) == 3
    cbam_keys = sum(len(g.state_dict()) for g in gates)  # the CBAM tensors + one gate per row
    assert sorted(report.new) == sorted(k for k in model.state_dict() if k not in report.matched)
    assert len(report.new) == cbam_keys and sum(k.endswith(".gate") for k in report.new) == 3
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref, ref_raw = base(x)
        got, raw = model(x)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    for a, b in zip(raw, ref_raw):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    model.train()
    loss = sum(o.float().square().mean() for o in model(x))
    loss.backward()
    assert all(g.gate.grad is not None and g.gate.grad.abs().sum() > 0 for g in gates)


def test_yaml_attention_rows_and_key_on_both_families() -> None:
    from yoloattn.models import load_config

    cfg = load_config("yolo11n")
    cfg["attention"] = [{"after": 10, "module": "se"}, "eca@neck"]
    model = build_model(cfg, nc=2, device="meta")
    assert model.index_map is not None and model.index_map[10] == 10
    assert model.rows[11].name == "se" and model.rows[-1].from_ == [18, 22, 26]
    assert model.family == "11"
    v8 = load_config("yolov8n")
    v8["backbone"].insert(9, [-1, 1, "CBAM", []])  # a hand-written row needs renumbering...
    with pytest.raises(ValueError, match="miswired"):
        build_model(v8, nc=2, device="meta")
    v8_ok, _ = place_attention("yolov8n", "cbam@8")  # ...which placement does
    assert build_model(v8_ok, nc=2, device="meta").rows[9].name == "cbam"


def test_weight_transfer_to_another_class_count() -> None:
    src = build_model("yolov8n", nc=80, device="meta")
    dst = build_model("yolov8n", nc=3, attention="se@backbone")
    sd = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in src.state_dict().items()}
    report = transfer_weights(sd, dst, dst.index_map)
    # nc=3 gives c3 = max(64, 3) = 64 instead of 80: the class branches do not fit, the rest does
    # per level: two Conv blocks (conv weight + 4 BN tensors; num_batches_tracked fits) + the output conv
    assert all(".cv3." in k for k, _, _ in report.skipped) and len(report.skipped) == 3 * (2 * 5 + 2)
    assert not report.unused and not report.partial
    assert report.new == ["model.9.fc1.weight", "model.9.fc1.bias", "model.9.fc2.weight", "model.9.fc2.bias"]
    assert len(report.matched) == len(src.state_dict()) - 36
