"""Weights: safetensors + JSON sidecar round trips, atomic writes, transfer into models with
inserted attention rows (exact counts), class-count changes and identity-initialised modules."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from yoloattn.models import weights as W
from yoloattn.models.detector import build_model
from yoloattn.models.placement import place_attention, row_map
from yoloattn.models.weights import (
    TransferReport,
    load_model,
    load_state_for_transfer,
    read_sidecar,
    save_model,
    transfer_weights,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def v5n_cbam():
    torch.manual_seed(1)
    m = build_model("yolov5n", nc=3, attention="cbam@neck")
    m.names = ["cat", "dog", "raccoon"]
    # non-trivial BN statistics so a wrong buffer load would show
    with torch.no_grad():
        for name, b in m.named_buffers():
            if "running_" in name:
                b.add_(torch.rand_like(b))
    return m.eval()


def _same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k


# ----------------------------------------------------------------------------- save / load


def test_save_load_round_trip(tmp_path, v5n_cbam):
    meta = {"imgsz": 320, "epoch": 7, "metrics": {"mAP50": 0.5}, "path": tmp_path}
    out = save_model(v5n_cbam, tmp_path / "w" / "best", meta=meta)
    assert out == tmp_path / "w" / "best.safetensors" and out.is_file()
    side = json.loads((tmp_path / "w" / "best.json").read_text())
    assert side["format"] == "yoloattn-model" and side["dtype"] == "float32"
    assert side["cfg"] == v5n_cbam.yaml and side["nc"] == 3
    assert side["names"] == ["cat", "dog", "raccoon"] and side["imgsz"] == 320
    assert side["meta"] == {"epoch": 7, "metrics": {"mAP50": 0.5}, "path": str(tmp_path)}
    assert side["versions"]["torch"] == torch.__version__ and "yoloattn" in side["versions"]
    assert side["tensors"] == len(v5n_cbam.state_dict())
    assert side["params"] == sum(p.numel() for p in v5n_cbam.parameters())
    assert side["index_map"] == {str(k): v for k, v in v5n_cbam.index_map.items()}
    assert read_sidecar(out) == side == read_sidecar(out.with_suffix(".json"))

    m = load_model(out)
    assert not m.training and m.names == v5n_cbam.names and m.nc == 3
    assert m.yaml == v5n_cbam.yaml and m.index_map == v5n_cbam.index_map
    _same_state(m, v5n_cbam)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m(x)[0], v5n_cbam(x)[0])

    # the header keeps a copy of the sidecar
    (tmp_path / "w" / "best.json").unlink()
    assert read_sidecar(out) == side
    _same_state(load_model(out), v5n_cbam)


def test_half_round_trip(tmp_path, v5n_cbam):
    full = save_model(v5n_cbam, tmp_path / "f.safetensors")
    half = save_model(v5n_cbam, tmp_path / "h.safetensors", half=True)
    raw = load_file(str(half))
    assert {str(t.dtype) for k, t in raw.items() if not k.endswith("num_batches_tracked")} == {
        "torch.float16"
    }
    assert all(raw[k].dtype == torch.int64 for k in raw if k.endswith("num_batches_tracked"))
    assert half.stat().st_size < 0.6 * full.stat().st_size
    assert read_sidecar(half)["dtype"] == "float16"
    m = load_model(half)
    ref = v5n_cbam.state_dict()
    for k, v in m.state_dict().items():
        assert v.dtype == ref[k].dtype, k
        torch.testing.assert_close(v, ref[k], rtol=1e-3, atol=1e-4)


def test_shared_and_strided_tensors_are_saved_apart(tmp_path):
    base = torch.arange(12.0)
    state = {"a": base, "b": base, "c": base.view(3, 4).t(), "d": base[2:5]}
    tensors = W._tensors_for_saving(state, half=False)
    save_file(tensors, str(tmp_path / "s.safetensors"))  # refuses shared storages otherwise
    back = load_file(str(tmp_path / "s.safetensors"))
    for k, v in state.items():
        assert torch.equal(back[k], v)


def test_atomic_write_keeps_old_files(tmp_path, v5n_cbam, monkeypatch):
    out = save_model(v5n_cbam, tmp_path / "last.safetensors", meta={"epoch": 1})
    before = (out.read_bytes(), out.with_suffix(".json").read_bytes())

    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(W, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_model(v5n_cbam, out, meta={"epoch": 2})
    monkeypatch.undo()
    assert (out.read_bytes(), out.with_suffix(".json").read_bytes()) == before

    real_replace = os.replace
    calls = []

    def replace_fails_first(a, b):
        calls.append(b)
        if len(calls) == 1:
            raise OSError("interrupted")
        real_replace(a, b)

    monkeypatch.setattr(os, "replace", replace_fails_first)  # the one os.replace (yoloattn._io)
    with pytest.raises(OSError, match="interrupted"):
        save_model(v5n_cbam, out, meta={"epoch": 3})
    monkeypatch.undo()
    assert (out.read_bytes(), out.with_suffix(".json").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json", "last.safetensors"]
    assert read_sidecar(out)["meta"] == {"epoch": 1}


def test_load_errors(tmp_path, v5n_cbam):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "bare.safetensors"))
    with pytest.raises(FileNotFoundError, match="not a yoloattn model file"):
        load_model(tmp_path / "bare.safetensors")
    state, meta = load_state_for_transfer(tmp_path / "bare.safetensors")
    assert meta == {} and list(state) == ["x"]
    out = save_model(v5n_cbam, tmp_path / "m.safetensors")
    side = read_sidecar(out)
    side["cfg"], _ = place_attention(side["cfg"], "se@backbone")
    out.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(ValueError, match="do not match the config"):
        load_model(out)
    with pytest.raises(ValueError, match="unknown weights format"):
        (tmp_path / "w.bin").write_bytes(b"x")
        load_state_for_transfer(tmp_path / "w.bin")


# ----------------------------------------------------------------------------- transfer


@pytest.mark.parametrize("name", ["yolov5s", "yolov7-tiny"])
@pytest.mark.parametrize("spec", ["cbam@neck", "se@backbone", "bam@all"])
def test_transfer_counts(name, spec):
    torch.manual_seed(0)
    base = build_model(name)
    src = base.state_dict()
    dst = build_model(name, attention=spec)
    att_rows = [i for i, layer in enumerate(dst.model) if getattr(layer, "attention_key", None)]
    att_keys = [f"model.{i}.{k}" for i in att_rows for k in dst.model[i].state_dict()]
    fresh = {k: dst.state_dict()[k].clone() for k in att_keys}
    rep = transfer_weights(src, dst, dst.index_map)
    print(f"\n{name:12s} {spec:12s} {rep.summary()}")
    assert len(rep.matched) == len(src) and sorted(rep.new) == sorted(att_keys)
    assert rep.skipped == [] and rep.unused == [] and rep.partial == []
    assert len(att_rows) == (1 if spec.endswith("backbone") else 3 if spec.endswith("neck") else 4)
    d = dst.state_dict()
    inv = dst.index_map
    for k, v in src.items():
        _, row, rest = k.split(".", 2)
        assert torch.equal(d[f"model.{inv[int(row)]}.{rest}"], v), k
    for k, v in fresh.items():
        assert torch.equal(d[k], v), f"attention tensor {k} must keep its init"


@pytest.mark.parametrize(("name", "n_partial"), [("yolov5n", 6), ("yolov7-tiny", 9)])
def test_transfer_nc_change_keeps_box_and_objectness(name, n_partial):
    torch.manual_seed(0)
    src_model = build_model(name)  # nc = 80
    src = src_model.state_dict()
    dst = build_model(name, nc=1, attention="se@neck")
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    rep = transfer_weights(src, dst, dst.index_map)
    det = len(dst.model) - 1
    assert len(rep.partial) == n_partial and all(k.startswith(f"model.{det}.") for k in rep.partial)
    assert len(rep.matched) == len(src) - n_partial
    assert rep.skipped == [] and rep.unused == [] and len(rep.new) == 3 * 4  # se: 2 convs w+b
    assert "partial 6" in rep.summary() or "partial 9" in rep.summary()
    d = dst.state_dict()
    src_det = len(src_model.model) - 1
    for k in rep.partial:
        s = src[k.replace(f"model.{det}.", f"model.{src_det}.", 1)]
        dim = 1 if k.endswith("implicit") else 0
        s3 = s.movedim(dim, 0).reshape(3, 85, -1)
        d3 = d[k].movedim(dim, 0).reshape(3, 6, -1)
        b3 = before[k].movedim(dim, 0).reshape(3, 6, -1)
        assert torch.equal(d3[:, :5], s3[:, :5]), k  # x, y, w, h, objectness from the checkpoint
        assert torch.equal(d3[:, 5:], b3[:, 5:]), k  # the class row keeps its fresh init


def _run_with_head_inputs(model, x):
    """Outputs, the head's input features, and ||att(f) - f|| / ||f|| of every attention layer."""
    seen, gates = [], []
    hooks = [
        model.model[-1].register_forward_pre_hook(lambda mod, args: seen.extend(t.clone() for t in args[0]))
    ]
    for layer in model.model:
        if getattr(layer, "attention_key", None):
            hooks.append(
                layer.register_forward_hook(
                    lambda mod, a, o: gates.append(((o - a[0]).norm() / a[0].norm()).item())
                )
            )
    try:
        with torch.no_grad():
            dec, raw = model(x)
    finally:
        for h in hooks:
            h.remove()
    return dec, raw, seen, gates


def test_transfer_identity_and_near_identity_modules():
    """A base yolov5n (random init, eval) and `key@neck` models with the base weights transferred:
    gc (zero-initialised transform) reproduces the base exactly; cbam and se rescale the
    features the head reads, which is what the deviation figures show."""
    torch.manual_seed(0)
    base = build_model("yolov5n").eval()
    x = torch.rand(2, 3, 64, 96)
    ref_dec, ref_raw, ref_feats, _ = _run_with_head_inputs(base, x)
    devs = {}
    for key in ("gc", "cbam", "se"):
        torch.manual_seed(1)
        m = build_model("yolov5n", attention=f"{key}@neck").eval()
        transfer_weights(base.state_dict(), m, m.index_map)
        dec, raw, feats, gates = _run_with_head_inputs(m, x)
        feat_rel = max(((a - b).norm() / b.norm()).item() for a, b in zip(feats, ref_feats))
        raw_abs = max((a - b).abs().max().item() for a, b in zip(raw, ref_raw))
        devs[key] = (max(gates), feat_rel, raw_abs, (dec - ref_dec).abs().max().item())
        if key == "gc":
            assert torch.equal(dec, ref_dec) and all(torch.equal(a, b) for a, b in zip(raw, ref_raw))
    print(
        "\ndeviation vs base (max rel. L2 at one attention layer, max rel. L2 of head inputs, "
        "max |raw logit|, max |decoded|):",
        {k: tuple(f"{v:.3g}" for v in d) for k, d in devs.items()},
    )
    assert devs["gc"] == (0.0, 0.0, 0.0, 0.0)
    for key in ("cbam", "se"):
        assert 0.05 < devs[key][0] < 1.0, devs  # a sigmoid gate in (0, 1) rescales, never flips
        assert 0.05 < devs[key][1] <= 1.0, devs
        assert 0 < devs[key][2] < 1.0, devs


def test_transfer_between_attention_models_with_row_map():
    torch.manual_seed(0)
    a = build_model("yolov5n", attention="cbam@neck")
    b = build_model("yolov5n", attention="se@backbone,cbam@neck")
    rm = row_map(a.yaml, b.yaml)
    rep = transfer_weights(a.state_dict(), b, rm)
    assert len(rep.matched) == len(a.state_dict()) and rep.unused == [] and rep.skipped == []
    assert sorted(rep.new) == sorted(f"model.9.{k}" for k in b.model[9].state_dict())
    # without the map, cbam rows meet shifted rows: reported, not silently loaded
    c = build_model("yolov5n", attention="se@backbone,cbam@neck")
    bad = transfer_weights(a.state_dict(), c, None)
    assert bad.skipped or bad.unused


def test_transfer_exclude_and_report_types():
    torch.manual_seed(0)
    base = build_model("yolov5n")
    dst = build_model("yolov5n")
    rep = transfer_weights(base.state_dict(), dst, exclude=("anchor",))
    assert rep.excluded == ["model.24.anchors"] and rep.new == ["model.24.anchors"]
    assert isinstance(rep, TransferReport) and "excluded 1" in str(rep)
    extra = dict(base.state_dict())
    extra["model.99.weight"] = torch.zeros(1)
    extra["model.0.conv.weight"] = torch.zeros(2, 2)
    rep = transfer_weights(extra, dst)
    assert rep.unused == ["model.99.weight"]
    assert rep.skipped == [("model.0.conv.weight", (2, 2), (16, 3, 6, 6))]
