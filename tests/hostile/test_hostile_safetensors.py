"""Damaged or edited ``.safetensors`` weights: ``val``, ``predict`` and ``load_model`` answer in
one line naming the file (and the tensor), never load an edited dtype, and warn on NaN weights."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from hostile_harness import check_refused

from yoloattn.demo import demo_weights


def _copy(tmp_path: Path) -> Path:
    src = demo_weights()
    dst = tmp_path / "w.safetensors"
    shutil.copy(src, dst)
    shutil.copy(src.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def _float_as_int(path: Path) -> None:
    """Edit the first float tensor's dtype to the integer type of the same width (same length)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = raw[8 : 8 + n]
    for old, new in ((b'"dtype":"F16"', b'"dtype":"I16"'), (b'"dtype":"F32"', b'"dtype":"I32"')):
        if old in header:
            path.write_bytes(raw[:8] + header.replace(old, new, 1) + raw[8 + n :])
            return
    raise AssertionError("no float tensor")


CASES = {
    "zero-byte": (lambda p: p.write_bytes(b""), "0 bytes, too short for a safetensors file"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:-1000]), "(truncated?)"),
    "long-header": (
        lambda p: p.write_bytes(struct.pack("<Q", 2**40) + p.read_bytes()[8:]),
        "header length 1,099,511,627,776 bytes is longer than the file",
    ),
    "float-as-int": (_float_as_int, "in the file, but float32 in the model"),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("command", ["val", "predict"])
def test_damaged_weights_are_one_line(runner, tmp_path, case, command):
    w = _copy(tmp_path)
    damage, says = CASES[case]
    damage(w)
    data = demo_weights().parent / "raccoon" / "raccoon.yaml"
    if command == "val":
        argv = ["val", "--weights", str(w), "--data", str(data), "--project", str(tmp_path / "out")]
    else:
        img = next((demo_weights().parent / "raccoon").rglob("*.jpg"))
        argv = ["predict", "--weights", str(w), "--source", str(img), "--project", str(tmp_path / "out")]
    r = runner.run(argv, cwd=tmp_path)
    assert not check_refused(r, str(w)), r
    assert says in r.stderr, r


def test_shape_mismatch_names_the_tensor(tmp_path):
    from yoloattn.models.weights import load_model

    w = _copy(tmp_path)
    side = json.loads(w.with_suffix(".json").read_text())
    side["cfg"]["width_multiple"] = 0.5
    w.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(
        ValueError, match=r"tensor 'model\.0\.conv\.weight' has shape \[16, 3, 6, 6\] in the file"
    ):
        load_model(w)


def test_non_finite_weights_warn(tmp_path, caplog):
    from yoloattn.models.weights import load_model, save_model

    model = load_model(_copy(tmp_path))
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    out = save_model(model, tmp_path / "nan.safetensors")
    caplog.set_level("WARNING")
    load_model(out)
    assert "tensor(s) hold NaN or infinity" in caplog.text and "model.0.conv.weight" in caplog.text


@pytest.mark.parametrize(("names", "says"), [(["a", "b"], "'names' has 2 entries but the model has nc=1"),
                                             (None, None)])  # fmt: skip
def test_sidecar_names_are_checked(tmp_path, names, says):
    from yoloattn.models.weights import load_model

    w = _copy(tmp_path)
    side = json.loads(w.with_suffix(".json").read_text())
    assert side["nc"] == 1
    if names is None:
        load_model(w)
        return
    side["names"] = names
    w.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(ValueError, match=says):
        load_model(w)
