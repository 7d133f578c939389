"""``yoloattn export`` and the onnxruntime backend: parity with eager PyTorch, NMS in the graph,
val/predict on an export, and the errors a user can hit."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
import torch
from torch import nn

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from yoloattn.attention import registry  # noqa: E402
from yoloattn.cli import main  # noqa: E402
from yoloattn.demo import demo_data, demo_weights  # noqa: E402
from yoloattn.engine.backend import OnnxModel, load_weights, read_metadata  # noqa: E402
from yoloattn.engine.export import (  # noqa: E402
    ExportConfig,
    ExportError,
    NMSModel,
    check_exportable,
    export,
    export_onnx,
)
from yoloattn.engine.nms import non_max_suppression  # noqa: E402
from yoloattn.engine.predictor import load_image, preprocess  # noqa: E402
from yoloattn.models.detector import build_model  # noqa: E402
from yoloattn.nn.gate import ResidualGate  # noqa: E402

VAL_IMAGES = demo_data().parent / "images" / "val"

# (model, placement): yolov5n cases with light modules stay in the quick suite; the heavy
# self-attention modules and yolov7-tiny (a larger trace) are `slow`.
LIGHT = [("yolov5n", "cbam@neck"), ("yolov5n", "se@backbone")]
HEAVY = [
    ("yolov5n", "mhsa(resize=interpolate)@backbone"),
    ("yolov5n", "cc@neck"),
    ("yolov5n", "acmix@neck"),
    ("yolov7-tiny", "cbam@neck"),
    ("yolov7-tiny", "se@backbone"),
    ("yolov7-tiny", "mhsa(resize=interpolate)@backbone"),
    ("yolov7-tiny", "cc@neck"),
    ("yolov7-tiny", "acmix@neck"),
]


def _model(name: str, spec: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    m = build_model(name, nc=3, attention=spec, **kw).eval()
    with torch.no_grad():  # random BN statistics, so fusing them is not a no-op
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m


def _assert_parity(model: nn.Module, tmp_path, label: str) -> None:
    """Dynamic export traced at 160x128; ORT vs eager at two other sizes, batch 2 (P5 maps of at
    least 4x4: acmix's reflection padding needs more than 3 pixels)."""
    path = export_onnx(model, tmp_path / "m.onnx", imgsz=(160, 128), dynamic=True)
    om = OnnxModel(path)
    for h, w in ((128, 192), (192, 160)):
        x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h))
        with torch.no_grad():
            ref = model(x)[0]
        out, levels = om(x)
        assert out.shape == ref.shape and levels == [], f"{label}: {tuple(out.shape)} vs {tuple(ref.shape)}"
        err = float((out - ref).abs().max())
        bound = 1e-4 * max(1.0, float(ref.abs().max()))
        assert err <= bound, f"{label} at {h}x{w}: max |ORT - eager| {err:.3g} > {bound:.3g}"


@pytest.mark.parametrize("name,spec", LIGHT)
def test_ort_matches_eager_dynamic_sizes(name, spec, tmp_path):
    _assert_parity(_model(name, spec), tmp_path, f"{name} {spec}")


@pytest.mark.slow
@pytest.mark.parametrize("name,spec", HEAVY)
def test_ort_matches_eager_dynamic_sizes_heavy(name, spec, tmp_path):
    _assert_parity(_model(name, spec), tmp_path, f"{name} {spec}")


def test_gated_identity_insertion_exports(tmp_path):
    """Identity insertion wraps the rows in residual gates; opened gates export and match."""
    m = _model("yolov5n", "cbam@neck", insert="identity")
    gates = [g for g in m.modules() if isinstance(g, ResidualGate)]
    assert len(gates) == 3
    with torch.no_grad():
        for g in gates:
            g.gate.fill_(0.5)
    _assert_parity(m, tmp_path, "yolov5n cbam@neck gated")
    meta = read_metadata(tmp_path / "m.onnx")
    assert [r["key"] for r in meta["attention"]] == ["cbam"] * 3
    assert {r["insert"] for r in meta["attention"]} == {"identity"}


def test_metadata_written_and_read_back(tmp_path):
    out = export(ExportConfig(weights=str(demo_weights()), output=str(tmp_path / "d.onnx")))
    meta = read_metadata(out)
    assert meta["format"] == "yoloattn-onnx" and meta["names"] == ["raccoon"] and meta["nc"] == 1
    assert meta["stride"] == [8.0, 16.0, 32.0] and meta["imgsz"] == [320, 320]  # sidecar's imgsz
    assert meta["train_imgsz"] == 320 and meta["dynamic"] is False and meta["batch"] == 1
    assert meta["nms"] is None and meta["opset"] == 17 and meta["attention"] == []
    om = OnnxModel(out)
    assert om.fixed_shape == (320, 320) and om.names == ["raccoon"]
    with pytest.raises(ValueError, match="exported for 320x320 inputs only.*--dynamic"):
        om(torch.zeros(1, 3, 256, 320))


# ---------------------------------------------------------------------------- NMS in the graph


def _box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    from torchvision.ops import box_iou

    return box_iou(a, b)


def test_nms_in_graph_matches_our_nms_on_real_images(tmp_path):
    import onnxruntime as ort

    conf, iou = 0.1, 0.45
    out = export(
        ExportConfig(
            weights=str(demo_weights()),
            nms=True,
            dynamic=True,
            conf=conf,
            iou=iou,
            output=str(tmp_path / "n.onnx"),
        )
    )
    assert read_metadata(out)["nms"] == {"conf": conf, "iou": iou, "max_det": 1000}
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    model = load_weights(demo_weights())
    # two real images letterboxed to one 320x320 batch
    xs = [preprocess(load_image(p), (320, 320), 32, auto=False)[0] for p in sorted(VAL_IMAGES.iterdir())[:2]]
    x = torch.cat(xs, 0)
    det = torch.from_numpy(sess.run(None, {"images": x.numpy()})[0])
    assert det.shape[1] == 7
    with torch.no_grad():
        ref = non_max_suppression(model(x)[0], conf, iou, max_det=1000)
        eager_graph = NMSModel(model, conf, iou, 1000)(x)  # the wrapper itself, run by PyTorch
    assert torch.allclose(eager_graph[:, 1:6], det[:, 1:6], atol=1e-2)
    assert sum(len(r) for r in ref) >= 2
    for b, r in enumerate(ref):
        d = det[det[:, 0] == b, 1:]
        assert len(d) == len(r), f"image {b}: {len(d)} boxes in the graph, {len(r)} by our NMS"
        assert torch.all(d[:-1, 4] >= d[1:, 4]), "detections sorted by score within an image"
        ious = _box_iou(d[:, :4], r[:, :4])
        best = ious.argmax(1)
        assert bool((ious.max(1).values >= 0.99).all())
        assert torch.equal(d[:, 5], r[best, 5])
        assert torch.allclose(d[:, 4], r[best, 4], atol=1e-4)


# ---------------------------------------------------------------------------- val and predict


def _metrics(path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.slow  # two full val runs over the 40 demo images (~40 s on a busy 2-core machine)
def test_val_and_predict_on_the_demo_export_match_pytorch(tmp_path, capsys):
    onnx_path = tmp_path / "demo.onnx"
    assert main(["export", "--weights", str(demo_weights()), "--dynamic", "-o", str(onnx_path)]) == 0
    assert "exported" in capsys.readouterr().out
    common = ["--data", str(demo_data()), "--project", str(tmp_path / "val"), "--samples", "0"]
    t0 = time.perf_counter()
    assert main(["val", "--weights", str(demo_weights()), "--name", "pt", *common]) == 0
    t1 = time.perf_counter()
    assert main(["val", "--weights", str(onnx_path), "--name", "ort", *common]) == 0
    print(f"val: PyTorch {t1 - t0:.1f} s, onnxruntime {time.perf_counter() - t1:.1f} s")
    pt = _metrics(tmp_path / "val" / "pt" / "metrics.json")
    ox = _metrics(tmp_path / "val" / "ort" / "metrics.json")
    assert ox["weights"].endswith("demo.onnx") and ox["imgsz"] == pt["imgsz"] == 320
    assert pt["metrics"]["images"] == ox["metrics"]["images"] == 40
    for k in ("map", "map50", "coco_ap"):
        assert abs(pt["metrics"][k] - ox["metrics"][k]) <= 1e-3, (k, pt["metrics"][k], ox["metrics"][k])
    assert (tmp_path / "val" / "ort" / "predictions.json").is_file()

    imgs = [str(p) for p in sorted(VAL_IMAGES.iterdir())[:3]]
    pred = ["--source", *imgs, "--project", str(tmp_path / "pred"), "--save-json"]
    assert main(["predict", "--weights", str(demo_weights()), "--name", "pt", *pred]) == 0
    assert main(["predict", "--weights", str(onnx_path), "--name", "ort", *pred]) == 0
    a = json.loads((tmp_path / "pred" / "pt" / "predictions.json").read_text())
    b = json.loads((tmp_path / "pred" / "ort" / "predictions.json").read_text())
    assert len(a) == len(b) >= 1
    for da, db in zip(a, b):
        assert da["class"] == db["class"] and abs(da["score"] - db["score"]) < 1e-3
        assert max(abs(u - v) for u, v in zip(da["box_xyxy"], db["box_xyxy"])) < 0.1
    assert len(list((tmp_path / "pred" / "ort").glob("*.jpg"))) == 3


def test_predict_cli_runs_an_export(tmp_path, capsys):
    onnx_path = tmp_path / "demo.onnx"
    assert main(["export", "--weights", str(demo_weights()), "--dynamic", "-o", str(onnx_path)]) == 0
    img = str(sorted(VAL_IMAGES.iterdir())[0])
    argv = ["predict", "--weights", str(onnx_path), "--source", img, "--project", str(tmp_path), "--save-txt"]
    assert main(argv) == 0
    assert "1 image(s) annotated" in capsys.readouterr().out
    assert len(list((tmp_path / "exp" / "labels").glob("*.txt"))) == 1
    assert main([*argv, "--visualize"]) == 1
    assert "--visualize needs the PyTorch weights" in capsys.readouterr().err


# ---------------------------------------------------------------------------- errors


def test_unknown_format_is_a_clear_error(capsys):
    with pytest.raises(ExportError, match="unknown export format 'tflite'; supported: onnx"):
        export(ExportConfig(weights=str(demo_weights()), format="tflite"))
    assert main(["export", "--weights", str(demo_weights()), "--format", "tflite"]) == 1
    assert "unknown export format 'tflite'" in capsys.readouterr().err


def test_module_that_needs_a_higher_opset_names_the_row_and_the_opset():
    m = build_model("yolov5n", nc=3, attention="mhsa@backbone,cbam@neck", device="meta")
    row = next(r.index for r in m.rows if r.name == "mhsa")
    with pytest.raises(
        ExportError, match=rf"row {row} \(mhsa\) needs opset >= 12, got --opset 11.*--opset 12"
    ):
        check_exportable(m, 11)
    check_exportable(m, 12)  # no error
    with pytest.raises(ExportError, match="--opset 9 is not supported"):
        check_exportable(m, 9)


def test_module_flagged_not_exportable_is_named(monkeypatch):
    info = registry.get_attention_info("cbam")
    monkeypatch.setitem(
        registry._REGISTRY, "cbam", dataclasses.replace(info, onnx=False, onnx_note="no ONNX for this op")
    )
    m = build_model("yolov5n", nc=3, attention="cbam@backbone", device="meta")
    row = next(r.index for r in m.rows if r.name == "cbam")
    with pytest.raises(
        ExportError, match=rf"row {row} \(cbam\) cannot be exported to ONNX: no ONNX for this op"
    ):
        check_exportable(m, 17)


def test_onnx_without_metadata_is_rejected(tmp_path, capsys):
    path = tmp_path / "plain.onnx"
    torch.onnx.export(
        nn.Conv2d(3, 6, 1), (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False, opset_version=17
    )
    with pytest.raises(ValueError, match="no yoloattn metadata.*yoloattn export"):
        OnnxModel(path)
    rc = main(["val", "--weights", str(path), "--data", str(demo_data()), "--project", str(tmp_path)])
    assert rc == 1 and "no yoloattn metadata" in capsys.readouterr().err


def test_nms_export_is_refused_by_val_and_predict(tmp_path):
    out = export(ExportConfig(weights=str(demo_weights()), nms=True, output=str(tmp_path / "n.onnx")))
    with pytest.raises(ValueError, match="exported with --nms"):
        OnnxModel(out)
