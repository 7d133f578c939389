"""Explaining detections: LayerCAM / EigenCAM on a hand-built detector whose object features are
known, the letterbox undone, attention-row capture on a real model, and the two CLI entry points."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from yoloattn.engine.explain import (
    attention_rows,
    capture_rows,
    detect_sources,
    explain_detections,
    explain_image,
    to_image,
)
from yoloattn.models.detector import build_model
from yoloattn.nn import Detect
from yoloattn.nn.gate import ResidualGate

ROOT = Path(__file__).resolve().parents[2]
DEMO_WEIGHTS = ROOT / "src" / "yoloattn" / "demo" / "yolov5n-raccoon.safetensors"
DEMO_IMAGES = ROOT / "src" / "yoloattn" / "demo" / "raccoon" / "images" / "val"

# ---- a detector whose only object features are "red" (class 0) and "green" (class 1) -----------


class _Pool(nn.Module):
    """Row of the synthetic detector: average-pool by ``k``; the first row pools the red and green
    excess over blue (so the grey letterbox padding, like black, has no colour)."""

    def __init__(self, k: int, first: bool) -> None:
        super().__init__()
        self.k, self.first = k, first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d((x[:, :2] - x[:, 2:3]).relu() if self.first else x, self.k)


class TinyDetector(nn.Module):
    """P3/P4/P5 features = the mean red and green (excess over blue) of each 8/16/32 px cell; a
    Detect head with hand-set weights: objectness and class scores ``sigmoid(20 * colour - 10)``,
    box = the 32 px anchor centred on its cell. The model interface is the detector's (rows with ``i`` and
    ``f``, the head last)."""

    def __init__(self) -> None:
        super().__init__()
        rows = [_Pool(8, True), _Pool(2, False), _Pool(2, False)]
        head = Detect(nc=2, anchors=[[32, 32]] * 3, ch=[2, 2, 2])
        for i, r in enumerate(rows):
            r.i, r.f = i, -1
        head.i, head.f = 3, [0, 1, 2]
        s = torch.tensor([8.0, 16.0, 32.0])
        head.stride = s
        head.anchors /= s.view(-1, 1, 1)
        with torch.no_grad():
            for conv in head.m:
                conv.weight.zero_()
                conv.bias.zero_()
                conv.weight[4, :, 0, 0] = 20.0  # objectness: any colour
                conv.weight[5, 0, 0, 0] = 20.0  # class 0: red
                conv.weight[6, 1, 0, 0] = 20.0  # class 1: green
                conv.bias[4:] = -10.0
        self.model = nn.Sequential(*rows, head)
        self.register_buffer("stride", s.clone())
        self.names = ["red", "green"]

    def forward(self, x: torch.Tensor):
        y: list[torch.Tensor] = []
        for m in self.model:
            if m.f != -1:
                x = [y[j] for j in m.f]
            x = m(x)
            y.append(x)
        return x


RED = (slice(60, 92), slice(36, 68))  # rows, cols of a red square (32 x 32)
RED2 = (slice(94, 126), slice(88, 120))  # a second red one
GREEN = (slice(12, 44), slice(84, 116))
SQUARES = {"red": RED, "red2": RED2, "green": GREEN}


def _scene() -> torch.Tensor:
    x = torch.zeros(1, 3, 128, 128)
    x[0, 0, RED[0], RED[1]] = 1.0
    x[0, 0, RED2[0], RED2[1]] = 0.95
    x[0, 1, GREEN[0], GREEN[1]] = 0.9
    return x


def _grown(box: tuple[slice, slice], d: int) -> tuple[slice, slice]:
    return slice(box[0].start - d, box[0].stop + d), slice(box[1].start - d, box[1].stop + d)


def _inside(rc: tuple[int, int], box: tuple[slice, slice]) -> bool:
    return box[0].start <= rc[0] < box[0].stop and box[1].start <= rc[1] < box[1].stop


def _argmax(m: torch.Tensor) -> tuple[int, int]:
    r, c = divmod(int(m.argmax()), m.shape[1])
    return r, c


@pytest.fixture(scope="module")
def tiny() -> TinyDetector:
    return TinyDetector().eval()


def test_detect_sources_are_the_head_inputs(tiny) -> None:
    assert detect_sources(tiny) == [0, 1, 2]
    model = build_model("yolov5n", nc=1)
    assert detect_sources(model) == list(model.model[-1].f)


def test_layercam_per_detection_peaks_on_its_own_object(tiny) -> None:
    """Two red objects and a green one: each detection's map covers its own object only."""
    res = explain_detections(tiny, _scene(), method="layercam", target="detection")
    det = res.detections
    assert len(res.maps) == len(det) == len(res.labels)
    seen = set()
    for (x1, y1, x2, y2, _, c), m in zip(det.tolist(), res.maps):
        centre = (int((y1 + y2) / 2), int((x1 + x2) / 2))
        own = [k for k, sq in SQUARES.items() if _inside(centre, _grown(sq, 16))]
        assert len(own) == 1 and (int(c) == 1) == (own[0] == "green"), (c, centre)
        seen.add(own[0])
        assert m.shape == (128, 128) and float(m.max()) == pytest.approx(1.0)
        assert _inside(_argmax(m), SQUARES[own[0]]), (own, _argmax(m))
        for k, sq in SQUARES.items():
            if k != own[0]:
                assert float(m[sq].max()) < 0.02, (own, k)  # nothing on the other objects
        assert float(m[:8, :8].max()) == 0.0  # nor on the empty corner
    assert seen == set(SQUARES)  # all three objects are found
    assert torch.equal(res.heatmap, torch.stack(res.maps).amax(0))


def test_layercam_per_class_separates_the_classes(tiny) -> None:
    res = explain_detections(tiny, _scene(), target="class")
    assert res.labels == ["class red", "class green"]
    red, green = res.maps
    assert _inside(_argmax(red), RED) and float(red[GREEN].max()) < 0.02
    assert float(red[RED2].max()) > 0.2  # a class map covers every object of the class
    assert _inside(_argmax(green), GREEN) and float(green[RED].max()) < 0.02


def test_no_detection_explains_the_best_candidate(tiny) -> None:
    x = _scene() * 0.45  # colour 0.45: scores sigmoid(-1) ^ 2 < conf
    res = explain_detections(tiny, x, conf=0.25)
    assert len(res.detections) == 0 and len(res.maps) == 1
    assert res.labels[0].startswith("best candidate: red")
    assert _inside(_argmax(res.heatmap), RED)


def test_eigencam_is_gradient_free_and_on_the_objects(tiny) -> None:
    with torch.no_grad():
        res = explain_detections(tiny, _scene(), method="eigencam")
    heat = res.heatmap
    assert res.labels == ["eigencam"] and heat.shape == (128, 128)
    assert float(heat.min()) >= 0.0 and float(heat.max()) == pytest.approx(1.0)
    assert any(_inside(_argmax(heat), sq) for sq in SQUARES.values())
    assert float(heat[:8, :8].max()) < 0.05


def test_bad_arguments_are_rejected(tiny) -> None:
    with pytest.raises(ValueError, match="method"):
        explain_detections(tiny, _scene(), method="gradcam")
    with pytest.raises(ValueError, match="one image"):
        explain_detections(tiny, torch.zeros(2, 3, 128, 128))


def test_heatmap_lands_on_the_object_in_the_original_image(tiny) -> None:
    """A 2x larger, non-square image: letterboxed to 128 (resized, padded), the map comes back.

    The square lands on input rows 32..64 (after 8 rows of padding) and columns 64..96, aligned
    with the cells of every level, so the heatmap is symmetric about the square's centre."""
    img0 = np.zeros((160, 256, 3), np.uint8)
    img0[48:112, 128:192, 0] = 255  # a red 64 x 64 square -> 32 x 32 after the 0.5 resize
    exp = explain_image(tiny, img0, imgsz=128, rows=[])
    assert exp.input_hw == (96, 128)  # 80 rows + 16 of stride-aligned padding
    assert exp.heatmap.shape == (160, 256)
    r, c = np.unravel_index(int(exp.heatmap.argmax()), exp.heatmap.shape)
    assert 48 <= r < 112 and 128 <= c < 192
    assert exp.heatmap[:, :32].max() == 0.0 and exp.heatmap[:, 240:].max() == 0.0
    rows, cols = np.mgrid[:160, :256]
    mass = exp.heatmap.sum()
    centre = ((exp.heatmap * rows).sum() / mass, (exp.heatmap * cols).sum() / mass)
    assert centre == pytest.approx((79.5, 159.5), abs=3.0)  # a missed 8 px padding would be 16 off
    (x1, y1, x2, y2, _, cls) = exp.detections[0].tolist()
    assert cls == 0 and 48 <= (y1 + y2) / 2 < 112 and 128 <= (x1 + x2) / 2 < 192


def test_to_image_undoes_the_letterbox() -> None:
    m = torch.zeros(96, 128)  # a 96 x 128 input: 256 x 160 resized by 0.5, 8 px padding above and below
    m[:8], m[88:] = 5.0, 5.0  # the padding: must be cut off
    m[8:88, 32:64] = 1.0  # a band over the whole original height
    out = to_image(m, (96, 128), (0.5, 0.5), (0.0, 8.0), (160, 256))
    assert out.shape == (160, 256) and out.max() <= 1.0 + 1e-6
    assert np.allclose(out[:, 80:112], 1.0) and np.allclose(out[:, :56], 0.0)
    coarse = to_image(m[::8, ::8], (96, 128), (0.5, 0.5), (0.0, 8.0), (160, 256))  # a stride-8 map
    assert coarse.shape == (160, 256) and coarse[80, 96] == pytest.approx(1.0)


# ---- attention rows of a real model --------------------------------------------------------


@pytest.fixture(scope="module")
def gated():
    torch.manual_seed(0)
    model = build_model("yolov5n", nc=2, attention="se@backbone,cbam@neck", insert="identity").eval()
    with torch.no_grad():
        for layer in model.model:
            if isinstance(layer, ResidualGate):
                layer.gate.fill_(0.5)
    return model


def test_attention_rows_unwrap_gates(gated) -> None:
    rows = attention_rows(gated)
    assert sorted(rows) == [9, 19, 23, 27]
    assert {r.key for r in rows.values()} == {"se", "cbam"}
    assert all(r.gate == (0.5,) for r in rows.values())
    assert rows[19].module is gated.model[19].attn
    with pytest.raises(ValueError, match="attention rows: 9, 19, 23, 27"):
        attention_rows(gated, [5])


def test_capture_rows_leaves_outputs_bit_identical(gated) -> None:
    x = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = gated(x)
        with capture_rows(gated) as maps:
            hooked = gated(x)
        again = gated(x)
    assert torch.equal(plain[0], hooked[0]) and torch.equal(plain[0], again[0])
    assert all(torch.equal(a, b) for a, b in zip(plain[1], hooked[1]))
    assert sorted(maps) == [9, 19, 23, 27]
    assert maps[9].kind == "channel" and maps[9].values.shape == (1, gated.model[9].attn.fc2.out_channels)
    assert maps[19].kind == "spatial" and maps[19].values.shape[1:] == (12, 16)  # P4 of 96 x 128


def test_explain_image_with_layercam_keeps_the_model_untouched(gated) -> None:
    img0 = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    before = {k: v.clone() for k, v in gated.state_dict().items()}
    exp = explain_image(gated, img0, imgsz=128, conf=0.0, max_det=3)
    assert [v.row.index for v in exp.rows] == [9, 19, 23, 27]
    assert all(v.image.shape == (90, 120) for v in exp.rows)
    assert exp.heatmap.shape == (90, 120) and 0.0 <= exp.heatmap.min() <= exp.heatmap.max() <= 1.0
    assert all(p.grad is None for p in gated.parameters())
    assert all(torch.equal(before[k], v) for k, v in gated.state_dict().items())


def test_bare_panels_have_the_image_size_and_captions_apart(gated) -> None:
    from yoloattn.engine.explain import panel_captions, render_explanation

    img0 = np.random.default_rng(1).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    exp = explain_image(gated, img0, imgsz=128, conf=0.0, max_det=3)
    bare = render_explanation(exp, img0, ["a", "b"], captions=False)
    captioned = render_explanation(exp, img0, ["a", "b"])
    text = panel_captions(exp)
    assert list(bare) == list(text) == [k for k in captioned if k != "summary"]
    assert list(bare)[:2] == ["cam", "row9_se"] and text["cam"].startswith("LayerCAM per detection")
    assert bare["cam"].size == (120, 90)  # no title strip
    assert bare["row19_cbam"].size == (120, 90)  # a spatial map: no strip either
    assert bare["row9_se"].width == 120 and bare["row9_se"].height > 90  # the channel strip below
    assert all(captioned[k].height > bare[k].height for k in bare)  # the captioned ones have a title
    assert "channel weights" in text["row9_se"]


# ---- command line --------------------------------------------------------------------------


def test_cli_explain_and_predict_visualize_on_the_demo(tmp_path) -> None:
    from yoloattn.cli import main

    image = sorted(DEMO_IMAGES.glob("*.jpg"))[0]
    assert (
        main(["explain", "--weights", str(DEMO_WEIGHTS), "--source", str(image), "--project", str(tmp_path)])
        == 0
    )
    out = tmp_path / "exp"
    files = sorted(p.name for p in out.iterdir())
    assert f"{image.stem}_cam.png" in files and f"{image.stem}_summary.png" in files
    record = json.loads((out / "explain.json").read_text())
    assert record[0]["input"] == [320, 256]  # imgsz 320 read from the weights' sidecar
    with Image.open(out / f"{image.stem}_cam.png") as im:
        assert im.width == Image.open(image).width

    args = ["predict", "--weights", str(DEMO_WEIGHTS), "--source", str(image), "--imgsz", "320"]
    assert main([*args, "--project", str(tmp_path / "p"), "--visualize"]) == 0
    assert main([*args, "--project", str(tmp_path / "q")]) == 0
    vis = np.asarray(Image.open(tmp_path / "p" / "exp" / image.name), dtype=np.int16)
    plain = np.asarray(Image.open(tmp_path / "q" / "exp" / image.name), dtype=np.int16)
    assert vis.shape == plain.shape and np.abs(vis - plain).mean() > 5  # the heatmap is drawn


def test_cli_explain_help_and_errors(tmp_path, capsys) -> None:
    from yoloattn.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    assert "explain" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    out = capsys.readouterr().out
    assert "--method {layercam,eigencam}" in out and "--rows" in out and "Examples" in out
    image = str(sorted(DEMO_IMAGES.glob("*.jpg"))[0])
    args = ["explain", "--weights", str(DEMO_WEIGHTS), "--source", image, "--project", str(tmp_path)]
    assert main([*args, "--rows", "5"]) == 1
    assert "not attention rows of this model (attention rows: none)" in capsys.readouterr().err
    assert main(["explain", "--weights", str(tmp_path / "nope"), "--source", image]) == 1
    assert not (tmp_path / "exp").exists()


# ---- docs/explain.md -----------------------------------------------------------------------


def _python_blocks(text: str) -> list[str]:
    return [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]


def test_docs_table_lists_every_key_as_the_code_reads_it() -> None:
    from yoloattn.attention import list_attention
    from yoloattn.attention.maps import map_description

    text = (ROOT / "docs" / "explain.md").read_text()
    for info in list_attention():
        kind, source, note = map_description(info.key)
        assert f"| `{info.key}` | {info.category} | {kind} | {source} | {note} |" in text, info.key


def test_docs_figure_exists_and_is_small() -> None:
    text = (ROOT / "docs" / "explain.md").read_text()
    figures = [line.split("](", 1)[1].split(")", 1)[0] for line in text.splitlines() if line.startswith("![")]
    assert figures
    for rel in figures:
        path = ROOT / "docs" / rel
        assert path.is_file() and path.stat().st_size < 150_000, rel


def test_docs_python_examples_run(tmp_path, capsys) -> None:
    text = (ROOT / "docs" / "explain.md").read_text()
    blocks = _python_blocks(text)
    assert len(blocks) == 2
    for block in blocks:
        code = block.replace('"src/yoloattn/demo', f'"{ROOT}/src/yoloattn/demo')
        code = code.replace('"runs/explain/python"', f'"{tmp_path}/python"')
        exec(compile(code, "docs/explain.md", "exec"), {})
    out = capsys.readouterr().out
    assert "spatial (2, 40, 48) internal" in out and "channel (2, 64)" in out and "True []" in out
    assert (tmp_path / "python" / "raccoon-110_cam.png").is_file()
