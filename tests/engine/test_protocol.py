"""One evaluation protocol: per-image geometry, metrics independent of batch size and workers,
the same numbers from the trainer, ``evaluate_run`` and ``yoloattn val``; imgsz and single-cls
from the weights' sidecar."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from yoloattn.data import YoloDataset
from yoloattn.demo import demo_data, demo_weights
from yoloattn.engine.evaluator import build_val_loader, evaluate, evaluate_run
from yoloattn.engine.protocol import DEFAULT_PROTOCOL, PROTOCOLS, protocol_loader, resolve_eval_options
from yoloattn.models.weights import load_model

RACCOON = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "raccoon" / "raccoon.yaml"
needs_raccoon = pytest.mark.skipif(not RACCOON.is_file(), reason="shared raccoon dataset not available")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("scan-cache"))


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return load_model(demo_weights())


def _metrics(model: torch.nn.Module, cache_dir: str, batch: int, protocol: str = DEFAULT_PROTOCOL, **kw):
    dcfg, loader = build_val_loader(
        str(RACCOON), 320, batch, 32, cache_dir=cache_dir, protocol=protocol, **kw
    )
    return evaluate(model, loader, list(dcfg.names), verbose=False, coco=False).metrics, loader


def test_protocols_named_and_default() -> None:
    assert PROTOCOLS == ("per-image", "official-rect")
    assert DEFAULT_PROTOCOL == "per-image"
    with pytest.raises(ValueError, match="unknown validation protocol"):
        protocol_loader(str(demo_data().parent / "images" / "val"), 320, 4, 32, "rect")


def test_per_image_shapes_and_groups(tmp_path: Path) -> None:
    """Each image gets its own minimal stride-multiple shape; a batch never mixes shapes and
    the images' shapes do not depend on the batch size."""
    from PIL import Image

    img_dir = tmp_path / "images"
    img_dir.mkdir()
    sizes = [(100, 60), (100, 62), (60, 100), (80, 80), (100, 30), (100, 61), (100, 64)]  # (w, h)
    for i, (w, h) in enumerate(sizes):
        Image.new("RGB", (w, h), (i * 20, 0, 0)).save(img_dir / f"im{i}.png")
    served: dict[int, dict[str, tuple[int, ...]]] = {}
    for bs in (1, 2, 32):
        ds = YoloDataset(
            img_dir, imgsz=64, rect=True, batch_size=bs, stride=32, cache_dir=tmp_path / "c", per_image=True
        )
        groups = ds.batch_groups()
        assert groups is not None
        assert sorted(i for g in groups for i in g) == list(range(len(sizes)))
        assert all(len(g) <= bs for g in groups)
        shapes = {}
        for g in groups:
            got = {tuple(ds[i][0].shape) for i in g}
            assert len(got) == 1, "a batch mixes shapes"
            shapes.update({Path(ds.im_files[i]).name: tuple(ds[i][0].shape) for i in g})
        served[bs] = shapes
    assert served[1] == served[2] == served[32]
    # long side 64 = imgsz; short side padded up to the next multiple of 32 (no extra half stride)
    assert served[1]["im0.png"] == (3, 64, 64)  # 100x60 -> 64x39 -> 64x64
    assert served[1]["im4.png"] == (3, 32, 64)  # 100x30 -> 64x20 -> 64x32
    assert served[1]["im2.png"] == (3, 64, 64)
    assert served[1]["im3.png"] == (3, 64, 64)


@needs_raccoon
def test_batch_size_does_not_change_metrics(model: torch.nn.Module, cache_dir: str) -> None:
    """Batch 1, 7 and 32 give bit-identical metrics (per-image geometry and a fixed forward
    batch of 1: oneDNN picks a different conv kernel for a batch of 8 than for 1, which changed
    mAP50-95 in the 8th digit before the forward was run image by image)."""
    results = {bs: _metrics(model, cache_dir, bs) for bs in (1, 7, 32)}
    m1 = results[1][0]
    assert m1["images"] == 40 and m1["map50"] > 0.5
    for bs in (7, 32):
        m, loader = results[bs]
        assert m["map50"] == m1["map50"] and m["map"] == m1["map"], bs
        assert m == m1
        assert max(len(b[0]) for b in loader) <= bs


@needs_raccoon
def test_workers_do_not_change_metrics(model: torch.nn.Module, cache_dir: str) -> None:
    m0, _ = _metrics(model, cache_dir, 16, workers=0)
    m2, _ = _metrics(model, cache_dir, 16, workers=2)
    assert m0 == m2


@needs_raccoon
def test_official_rect_is_kept_and_batch_dependent(model: torch.nn.Module, cache_dir: str) -> None:
    """The named official option keeps the official rect batches (shared batch shapes, half a
    stride of padding), whose metrics change with the batch size."""
    a, la = _metrics(model, cache_dir, 16, "official-rect")
    b, _ = _metrics(model, cache_dir, 32, "official-rect")
    assert a["map"] != b["map"]
    assert max(b[0].shape[-1] for b in la) == 352  # 320 + half-stride padding rounded up
    per_image, _ = _metrics(model, cache_dir, 16)
    assert per_image["map"] not in (a["map"], b["map"])


def test_validation_loss_is_a_mean_over_images(cache_dir: str) -> None:
    """The validation loss is a mean over images, so batching does not change it."""
    from yoloattn.engine.hyp import load_hyp
    from yoloattn.engine.loss import ComputeLoss

    m = load_model(demo_weights())
    loss_fn = ComputeLoss(m, load_hyp("scratch-low"))
    data = str(demo_data())
    dcfg, batched = build_val_loader(data, 320, 8, 32, cache_dir=cache_dir)
    first = next(iter(batched))
    _, single = build_val_loader(data, 320, 1, 32, cache_dir=cache_dir)
    singles = [b for b, _ in zip(single, range(len(first[2])))]
    assert tuple(b[2][0] for b in singles) == first[2]  # the order does not depend on the batch size
    names = list(dcfg.names)
    a = evaluate(m, [first], names, loss_fn=loss_fn, verbose=False, coco=False).loss
    b = evaluate(m, singles, names, loss_fn=loss_fn, verbose=False, coco=False).loss
    assert a.sum() > 0
    torch.testing.assert_close(a, b, rtol=1e-6, atol=0)


def test_sidecar_options(tmp_path: Path) -> None:
    w = demo_weights()
    assert resolve_eval_options(w) == (320, False, "imgsz 320 (weights sidecar), single-cls False (default)")
    sz, sc, note = resolve_eval_options(w, 640, True)
    assert (sz, sc) == (640, True)
    assert "640 (command line; the weights were trained at 320)" in note
    side = json.loads(w.with_suffix(".json").read_text())
    side["imgsz"] = None
    side.setdefault("meta", {})["train_args"] = {"single_cls": True}
    (tmp_path / "w.json").write_text(json.dumps(side))
    sz, sc, note = resolve_eval_options(tmp_path / "w.json")
    assert (sz, sc) == (640, True)
    assert "single-cls True (weights sidecar)" in note and "imgsz 640 (default" in note


@needs_raccoon
def test_val_takes_imgsz_from_sidecar(tmp_path: Path, capsys: pytest.CaptureFixture[str], model, cache_dir):
    from yoloattn.cli import main

    argv = ["val", "--weights", str(demo_weights()), "--data", str(RACCOON), "--samples", "0"]
    argv += ["--cache-dir", cache_dir, "--project", str(tmp_path / "val"), "--batch", "8"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "imgsz 320 (weights sidecar)" in out and "protocol per-image" in out
    saved = json.loads((tmp_path / "val" / "exp" / "metrics.json").read_text())
    assert saved["imgsz"] == 320 and saved["protocol"] == "per-image"
    m, _ = _metrics(model, cache_dir, 32)
    assert saved["metrics"]["map50"] == m["map50"] and saved["metrics"]["map"] == m["map"]


def test_predict_takes_imgsz_from_sidecar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from yoloattn.cli import main

    img = sorted((demo_data().parent / "images" / "val").iterdir())[0]
    argv = ["predict", "--weights", str(demo_weights()), "--source", str(img)]
    assert main([*argv, "--project", str(tmp_path / "p")]) == 0
    assert "imgsz 320 (weights sidecar)" in capsys.readouterr().out
    assert main([*argv, "--project", str(tmp_path / "p"), "--imgsz", "64"]) == 0
    assert "imgsz 64 (command line; the weights were trained at 320)" in capsys.readouterr().out


def test_trainer_compare_and_val_agree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """For the same weights, the trainer's last validation (results.csv), ``evaluate_run``
    (compare) and ``yoloattn val`` give the same metrics, each at its own batch size."""
    from yoloattn.cli import main
    from yoloattn.engine.train_config import TrainConfig
    from yoloattn.engine.trainer import train

    root = demo_data().parent
    train_list = tmp_path / "train.txt"
    train_list.write_text("".join(f"{p}\n" for p in sorted((root / "images" / "train").iterdir())[:8]))
    data = tmp_path / "small.yaml"
    data.write_text(f"train: {train_list}\nval: {root / 'images' / 'val'}\nnc: 1\nnames: ['raccoon']\n")
    cfg = TrainConfig(
        model="yolov5n",
        data=str(data),
        weights=str(demo_weights()),
        epochs=1,
        batch=4,
        imgsz=320,
        workers=0,
        seed=0,
        project=str(tmp_path / "runs"),
        name="exp",
        quiet=True,
        cache_dir=str(tmp_path / "cache"),
        plots=False,
        # the same thread count as the evaluations below: conv kernels (and so the last float
        # digits) depend on it, not on the batch size (docs/evaluation.md)
        threads=torch.get_num_threads(),
    )
    res = train(cfg)
    with (res.run_dir / "results.csv").open() as f:
        row = {k.strip(): v for k, v in list(csv.DictReader(f))[-1].items()}
    trained = res.metrics
    assert row["metrics/mAP_0.5"] == f"{trained['map50']:.6g}"
    assert row["metrics/mAP_0.5:0.95"] == f"{trained['map']:.6g}"

    compared = evaluate_run(res.run_dir, str(data), imgsz=320, batch=16)
    argv = ["val", "--weights", str(res.run_dir), "--data", str(data), "--samples", "0", "--batch", "3"]
    assert main([*argv, "--cache-dir", str(tmp_path / "cache"), "--project", str(tmp_path / "val")]) == 0
    assert "imgsz 320 (weights sidecar)" in capsys.readouterr().out
    validated = json.loads((tmp_path / "val" / "exp" / "metrics.json").read_text())["metrics"]
    for k in ("mp", "mr", "map50", "map"):
        assert trained[k] == compared[k] == validated[k], k
    assert np.isfinite(trained["map"])
