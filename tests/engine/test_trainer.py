"""End-to-end training on a tiny synthetic dataset: run folder, exact resume, divergence."""

from __future__ import annotations

import csv
from dataclasses import replace as dataclasses_replace

import pytest
import torch
import yaml
from safetensors.torch import load_file

from yoloattn.engine import trainer as tr
from yoloattn.engine.trainer import RESULT_COLUMNS, TrainConfig, TrainingDiverged, increment_path, train


def _cfg(data, tmp_path, **kw):
    base = dict(
        model="yolov5n",
        data=str(data),
        epochs=2,
        batch=4,
        imgsz=64,
        workers=0,
        seed=3,
        project=str(tmp_path / "runs"),
        name="exp",
        quiet=True,
        cache_dir=str(tmp_path / "cache"),
        plots=False,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_increment_path_never_overwrites(tmp_path):
    assert increment_path(tmp_path / "exp") == tmp_path / "exp"
    (tmp_path / "exp").mkdir()
    assert increment_path(tmp_path / "exp") == tmp_path / "exp2"
    (tmp_path / "exp2").mkdir()
    assert increment_path(tmp_path / "exp") == tmp_path / "exp3"
    assert increment_path(tmp_path / "exp", exist_ok=True) == tmp_path / "exp"


def test_training_writes_the_run_folder(tiny_data, tmp_path):
    res = train(_cfg(tiny_data, tmp_path, plots=True))
    run = res.run_dir
    assert run == tmp_path / "runs" / "exp" and res.epochs_done == 2
    for f in (
        "args.yaml",
        "model.yaml",
        "results.csv",
        "results.png",
        "weights/last.safetensors",
        "weights/last.json",
        "weights/best.safetensors",
        "weights/best.json",
        "weights/last.state.safetensors",
        "confusion_matrix.png",  # the final validation of best (plots=True)
    ):
        assert (run / f).is_file(), f
    rows = list(csv.reader((run / "results.csv").open()))
    assert rows[0] == RESULT_COLUMNS and [r[0] for r in rows[1:]] == ["0", "1"]
    args = yaml.safe_load((run / "args.yaml").read_text())
    assert args["model"] == "yolov5n" and args["imgsz"] == 64 and "lr0" in args["hyp_resolved"]
    assert yaml.safe_load((run / "model.yaml").read_text())["nc"] == 2
    # a second run gets a new folder
    res2 = train(_cfg(tiny_data, tmp_path, epochs=1))
    assert res2.run_dir == tmp_path / "runs" / "exp2"


def test_interrupted_and_resumed_run_equals_uninterrupted(tiny_data, tmp_path):
    full = train(_cfg(tiny_data, tmp_path, epochs=3, name="full", noval=True))
    part = train(_cfg(tiny_data, tmp_path, epochs=3, name="part", noval=True, stop_after_epochs=1))
    assert part.epochs_done == 1
    resumed = train(TrainConfig(resume=str(part.run_dir), quiet=True, workers=0))
    assert resumed.epochs_done == 3 and resumed.run_dir == part.run_dir
    a = load_file(str(full.run_dir / "weights" / "last.state.safetensors"))
    b = load_file(str(part.run_dir / "weights" / "last.state.safetensors"))
    model_keys = [k for k in a if k.startswith(("model.", "ema.", "optim."))]
    assert model_keys and set(a) == set(b)
    for k in model_keys:
        assert torch.equal(a[k], b[k]), k
    rows = list(csv.reader((part.run_dir / "results.csv").open()))
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"]
    with pytest.raises(ValueError, match="already finished"):
        train(TrainConfig(resume=str(part.run_dir), quiet=True, workers=0))


def test_resume_says_where_it_continues_and_a_finished_run_skips_the_data(
    tiny_data, tmp_path, monkeypatch, caplog
):
    part = train(_cfg(tiny_data, tmp_path, epochs=3, name="msg", noval=True, stop_after_epochs=1))
    caplog.set_level("INFO", logger="yoloattn.train")
    train(TrainConfig(resume=str(part.run_dir), quiet=False, workers=0))
    msgs = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith(f"resuming {part.run_dir} from epoch 2 of 3") for m in msgs) == 1, msgs
    assert any(m.startswith("2 epochs trained in this session (3 of 3 done) in ") for m in msgs), msgs

    def no_scan(*a, **k):
        raise AssertionError("a finished run must not scan its dataset")

    monkeypatch.setattr(tr.parts, "build_train_set", no_scan)
    monkeypatch.setattr(tr.parts, "load_data", no_scan)
    with pytest.raises(ValueError, match="already finished all 3 epochs"):
        train(TrainConfig(resume=str(part.run_dir), quiet=True, workers=0))


def test_nan_loss_stops_with_clear_message_and_keeps_checkpoint(tiny_data, tmp_path, monkeypatch):
    res = train(_cfg(tiny_data, tmp_path, epochs=2, name="nan", noval=True, stop_after_epochs=1))
    state = res.run_dir / "weights" / "last.state.safetensors"
    before = state.read_bytes()
    real_fit = tr.Trainer._train_epoch

    def poisoned(self, epoch, nb, nw):
        orig = self.loss_fn

        def nan_loss(*a, **k):
            loss, items = orig(*a, **k)
            return loss * float("nan"), items

        self.loss_fn = nan_loss
        return real_fit(self, epoch, nb, nw)

    monkeypatch.setattr(tr.Trainer, "_train_epoch", poisoned)
    with pytest.raises(TrainingDiverged, match="checkpoint of the last finished epoch"):
        train(TrainConfig(resume=str(res.run_dir), quiet=True, workers=0))
    assert state.read_bytes() == before


def test_training_with_attention_and_transferred_weights(tiny_data, tmp_path):
    base = train(_cfg(tiny_data, tmp_path, epochs=1, name="base", noval=True))
    res = train(
        _cfg(
            tiny_data,
            tmp_path,
            epochs=1,
            name="se",
            attention="se@neck",
            weights=str(base.run_dir / "weights" / "last.safetensors"),
            noval=True,
            freeze=[10],
        )
    )
    trainer_yaml = yaml.safe_load((res.run_dir / "model.yaml").read_text())
    keys = [str(r[2]).lower() for r in trainer_yaml["head"]]
    assert keys.count("se") == 3
    # --freeze 10 (official meaning: rows 0..9, the backbone) keeps those weights bit-identical
    a = load_file(str(base.run_dir / "weights" / "last.safetensors"))  # the start (EMA weights)
    b = load_file(str(res.run_dir / "weights" / "last.state.safetensors"))  # the trained model
    weights = [k for k in a if k.startswith("model.") and k.endswith(".weight")]
    frozen = [k for k in weights if int(k.split(".")[1]) < 10]
    assert frozen and all(torch.equal(a[k], b[f"model.{k}"]) for k in frozen)
    head_conv = "model.10.conv.weight"
    assert not torch.equal(a[head_conv], b[f"model.{head_conv}"])


def test_freeze_rows_follows_the_official_meaning():
    assert tr.freeze_rows([], 25) == [] and tr.freeze_rows([0], 25) == []
    assert tr.freeze_rows([3], 25) == [0, 1, 2]
    assert tr.freeze_rows([4, 2, 2], 25) == [2, 4]
    with pytest.raises(ValueError, match=r"row\(s\) \[30\] do not exist; the model has rows 0..24"):
        tr.freeze_rows([1, 30], 25)


def test_bad_inputs_are_clear(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="multiple of the max stride"):
        train(_cfg(tiny_data, tmp_path, imgsz=70))
    with pytest.raises(ValueError, match="--data"):
        train(_cfg("", tmp_path))
    with pytest.raises(FileNotFoundError, match="args.yaml"):
        train(TrainConfig(resume=str(tmp_path / "nope")))


def test_variant_from_scratch_shares_the_baselines_initialisation(tiny_data, tmp_path):
    base = tr.Trainer(_cfg(tiny_data, tmp_path, name="b"))
    base.setup()
    var = tr.Trainer(_cfg(tiny_data, tmp_path, name="v", attention="cbam@neck"))
    var.setup()
    sb, sv = base.model.state_dict(), var.model.state_dict()
    mapped = 0
    for k, v in sb.items():
        i, rest = k.split(".", 2)[1], k.split(".", 2)[2]
        k2 = f"model.{var.index_map[int(i)]}.{rest}"
        assert torch.equal(v, sv[k2]), k
        mapped += 1
    assert mapped == len(sb)


def test_noval_still_validates_the_final_epoch_and_recipe_keys_are_honoured(tiny_data, tmp_path):
    t = tr.Trainer(_cfg(tiny_data, tmp_path, name="h", hyp_overrides={"label_smoothing": 0.1, "loss_ota": 1}))
    t.setup()
    assert t.hyp["label_smoothing"] == 0.1
    assert type(t.loss_fn).__name__ == "ComputeLossOTA"
    res = train(_cfg(tiny_data, tmp_path, name="nv", epochs=2, noval=True))
    rows = list(csv.DictReader((res.run_dir / "results.csv").open()))
    # only the last epoch is validated: its val losses and metrics are filled, the first epoch's
    # cells are empty (not 0, which plots and reads as a measurement)
    assert rows[0]["val/box_loss"] == "" and float(rows[1]["val/box_loss"]) > 0.0
    assert rows[0]["metrics/mAP_0.5"] == rows[0]["metrics/precision"] == ""
    assert float(rows[1]["metrics/mAP_0.5"]) >= 0.0 and rows[0]["x/lr0"] != ""


def test_gradient_accumulation_spans_epochs_and_survives_resume(tiny_data, tmp_path):
    # 8 images, batch 2: 4 batches per epoch; nbs 6 -> accumulate 3; no warmup.
    # The step counter carries across epochs as in the official loop, so optimizer steps land on
    # global batches 2, 5, 8, 11 (4 steps in 3 epochs); restarting it every epoch would give 6.
    from yoloattn.engine.checkpoint import load_training_state

    kw = dict(epochs=3, batch=2, nbs=6, noval=True, hyp_overrides={"warmup_epochs": 0.0})
    full = train(_cfg(tiny_data, tmp_path, name="acc_full", **kw))
    _, state = load_training_state(full.run_dir / "weights" / "last.state.safetensors")
    assert state["ema_updates"] == 4 and state["extra"]["last_opt_step"] == 11

    part = train(_cfg(tiny_data, tmp_path, name="acc_part", stop_after_epochs=1, **kw))
    _, mid = load_training_state(part.run_dir / "weights" / "last.state.safetensors")
    assert mid["ema_updates"] == 1 and mid["extra"]["last_opt_step"] == 2
    train(TrainConfig(resume=str(part.run_dir), quiet=True, workers=0))
    a = load_file(str(full.run_dir / "weights" / "last.state.safetensors"))
    b = load_file(str(part.run_dir / "weights" / "last.state.safetensors"))
    for k in [k for k in a if k.startswith(("model.", "ema.", "optim."))]:
        assert torch.equal(a[k], b[k]), k


def _thin_box_dataset(root):
    """4 images with one 2x24 px box each: no default anchor is within anchor_t=4 of that shape."""
    from PIL import Image

    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(4):
            img = Image.new("RGB", (64, 64), (40, 40, 40))
            x0 = 10 + 8 * i
            img.paste((230, 230, 230), (x0, 20, x0 + 2, 44))
            img.save(root / "images" / split / f"t{i}.jpg", quality=95)
            (root / "labels" / split / f"t{i}.txt").write_text(
                f"0 {(x0 + 1) / 64:.6f} 0.5 {2 / 64:.6f} 0.375\n"
            )
    (root / "thin.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnc: 1\nnames: [thin]\n")
    return root / "thin.yaml"


def test_autoanchor_replaces_unfit_anchors_and_records_them(tmp_path):
    data = _thin_box_dataset(tmp_path / "thin")
    t = tr.Trainer(_cfg(data, tmp_path, epochs=1, noval=True, name="aa"))
    t.setup()
    rep = t.anchor_report
    assert rep.replaced and rep.bpr_before < 0.5 and rep.bpr_after > 0.98
    det = t.model.detect
    px = (det.anchors * det.stride.view(-1, 1, 1)).flatten(1)
    assert torch.allclose(
        px, torch.tensor(rep.anchors_px, dtype=px.dtype), atol=1e-3
    )  # yaml keeps 3 decimals
    assert t.model_cfg["anchors"] == rep.anchors_px
    assert yaml.safe_load((t.run_dir / "model.yaml").read_text())["anchors"] == rep.anchors_px

    off = tr.Trainer(_cfg(data, tmp_path, epochs=1, noval=True, name="noaa", autoanchor=False))
    off.setup()
    assert off.anchor_report is None
    default = torch.tensor(
        yaml.safe_load((off.run_dir / "model.yaml").read_text())["anchors"], dtype=px.dtype
    )
    got = (off.model.detect.anchors * off.model.detect.stride.view(-1, 1, 1)).flatten(1)
    assert torch.allclose(got, default)


def test_resumed_results_csv_equals_uninterrupted_with_val_interval(tiny_data, tmp_path, monkeypatch):
    # epoch 2 is not validated and repeats epoch 1's metrics, as in an uninterrupted run: the
    # last metrics travel in the resume state (with the patience counter)
    def fake_validate(self):  # nonzero metrics that depend only on the weights
        v = float(self.ema.ema.model[0].conv.weight.abs().sum())
        m = {"mp": v % 1, "mr": v * 10 % 1, "map50": v * 100 % 1, "map": v * 1000 % 1}
        return m, torch.zeros(3)

    monkeypatch.setattr(tr.Trainer, "_validate", fake_validate)
    kw = dict(epochs=4, val_interval=2, patience=5)
    full = train(_cfg(tiny_data, tmp_path, name="vi_full", **kw))
    part = train(_cfg(tiny_data, tmp_path, name="vi_part", stop_after_epochs=2, **kw))
    train(TrainConfig(resume=str(part.run_dir), quiet=True, workers=0))
    a = (full.run_dir / "results.csv").read_text().splitlines()
    b = (part.run_dir / "results.csv").read_text().splitlines()
    assert len(a) == 5 and a == b
    from yoloattn.engine.checkpoint import load_training_state

    _, state = load_training_state(part.run_dir / "weights" / "last.state.safetensors")
    assert "bad_epochs" in state["extra"] and state["extra"]["metrics"]["map50"] > 0
    assert a[3].split(",")[4:8] == a[2].split(",")[4:8] != ["0"] * 4  # epoch 2 carries epoch 1's


def test_resume_keeps_the_evolved_anchors_in_model_yaml_and_sidecars(tmp_path):
    import json

    data = _thin_box_dataset(tmp_path / "thin")
    part = train(_cfg(data, tmp_path, epochs=2, noval=True, name="aa_resume", stop_after_epochs=1))
    evolved = yaml.safe_load((part.run_dir / "model.yaml").read_text())["anchors"]
    assert evolved != [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
    train(TrainConfig(resume=str(part.run_dir), quiet=True, workers=0))
    assert yaml.safe_load((part.run_dir / "model.yaml").read_text())["anchors"] == evolved
    side = json.loads((part.run_dir / "weights" / "last.json").read_text())
    assert side["cfg"]["anchors"] == evolved


def test_single_cls_multi_scale_save_period_and_rect(tiny_data, tmp_path):
    import json

    res = train(
        _cfg(tiny_data, tmp_path, epochs=2, name="opts", single_cls=True, multi_scale=True, save_period=1)
    )
    w = res.run_dir / "weights"
    assert (w / "epoch0.safetensors").is_file() and (w / "epoch1.safetensors").is_file()
    side = json.loads((w / "last.json").read_text())
    assert side["cfg"]["nc"] == 1 and side["names"] == ["item"]  # tiny data has 2 classes
    from yoloattn.engine.evaluator import evaluate_run

    assert "map50" in evaluate_run(w / "last.safetensors", str(tiny_data), imgsz=64, single_cls=True)
    with pytest.raises(ValueError, match="predict 1 classes but .* has 2 .*single-cls"):
        evaluate_run(w / "last.safetensors", str(tiny_data), imgsz=64)
    t = tr.Trainer(_cfg(tiny_data, tmp_path, name="ms", multi_scale=True))
    t.setup()
    imgs = torch.zeros(2, 3, 64, 80)
    sizes = set()
    for ni in range(40):
        out = t._rescale_batch(imgs, ni)
        assert torch.equal(out, t._rescale_batch(imgs, ni))  # depends only on (seed, iteration)
        assert out.shape[2] % 32 == 0 and out.shape[3] % 32 == 0 and 32 <= max(out.shape[2:]) <= 96
        sizes.add(tuple(out.shape[2:]))
    assert len(sizes) >= 2
    rect = train(_cfg(tiny_data, tmp_path, epochs=1, name="rect", rect=True, noval=True))
    assert (rect.run_dir / "weights" / "last.safetensors").is_file()
    small = tr.Trainer(_cfg(tiny_data, tmp_path, name="ms32", imgsz=32, multi_scale=True))
    small.setup()
    assert all(small._rescale_batch(torch.zeros(1, 3, 32, 32), ni).shape[-1] >= 32 for ni in range(30))


def test_freeze_n_counts_base_rows_when_attention_is_placed(tiny_data, tmp_path):
    from yoloattn.engine.checkpoint import load_training_state

    cfg = _cfg(tiny_data, tmp_path, epochs=2, name="fz", attention="se@backbone", freeze=[10], noval=True)
    t = tr.Trainer(cfg)
    t.setup()
    assert t.frozen_rows == [0, 1, 2, 3, 4, 5, 6, 7, 8, 10]  # SE was inserted as row 9, SPPF is row 10
    se = [p for n, p in t.model.named_parameters() if n.startswith("model.9.")]
    assert se and all(p.requires_grad for p in se)
    assert not any(p.requires_grad for n, p in t.model.named_parameters() if n.startswith("model.10."))
    res = train(dataclasses_replace(cfg, name="fz_run", stop_after_epochs=1))
    _, state = load_training_state(res.run_dir / "weights" / "last.state.safetensors")
    assert state["extra"]["frozen_rows"] == t.frozen_rows
    r = tr.Trainer(TrainConfig(resume=str(res.run_dir), quiet=True, workers=0))
    r.setup()  # rebuilt from model.yaml (no placement map): the saved rows are used
    assert r.frozen_rows == t.frozen_rows
    assert all(p.requires_grad for n, p in r.model.named_parameters() if n.startswith("model.9."))


def test_val_loader_single_cls_scores_all_classes_as_one(tiny_data, tmp_path):
    from yoloattn.engine.evaluator import build_val_loader

    dcfg, loader = build_val_loader(str(tiny_data), 64, 4, 32, cache_dir=str(tmp_path), single_cls=True)
    assert dcfg.nc == 1 and dcfg.names == ["item"]
    classes = torch.cat([b[1][:, 1] for b in loader])
    assert classes.numel() > 0 and bool((classes == 0).all())
    _, plain = build_val_loader(str(tiny_data), 64, 4, 32, cache_dir=str(tmp_path))
    assert bool((torch.cat([b[1][:, 1] for b in plain]) == 1).any())
