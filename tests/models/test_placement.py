"""Attention placement: spec grammar, renumbering on every shipped config, YAML round trip,
and built models whose parameter counts equal base + the zoo's paper formulas."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml

from yoloattn.attention import create_attention, get_attention_info, list_attention
from yoloattn.models.config import SHIPPED, load_config
from yoloattn.models.detector import build_model
from yoloattn.models.placement import describe, insertion_points, place_attention, row_map
from yoloattn.models.spec import Placement, parse_attention_spec

# expected end-of-backbone row and Detect inputs (shared/spec/yolo-architectures.md section 10)
BACKBONE_END = {"yolov5": 8, "yolov7-tiny": 28, "yolov7": 50, "yolov7x": 58, "yolov8": 8, "yolo11": 8}
NECK = {
    "yolov5": [17, 20, 23],
    "yolov8": [15, 18, 21],
    "yolo11": [16, 19, 22],
    "yolov7-tiny": [74, 75, 76],
    "yolov7": [102, 103, 104],
    "yolov7x": [118, 119, 120],
}


def _family(name: str) -> str:
    for fam in ("yolov5", "yolov8", "yolo11"):
        if name.startswith(fam):
            return fam
    return name


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add contention on shared CI cores
    yield
    torch.set_num_threads(n)


def _rows(cfg):
    return list(cfg["backbone"]) + list(cfg["head"])


def _abs_sources(row, i):
    f = row[0]
    fs = f if isinstance(f, list) else [f]
    return [(-1 if i == 0 and v == -1 else (i + v if v < 0 else v)) for v in fs]


# ----------------------------------------------------------------------------- grammar


def test_spec_grammar():
    p = parse_attention_spec("cbam")
    assert p == [Placement("cbam", "neck")]
    assert parse_attention_spec("CBAM@Backbone") == [Placement("cbam", "backbone")]
    assert parse_attention_spec("cbam@head") == [Placement("cbam", "neck")]
    a = parse_attention_spec("cbam@6,8")
    assert a == parse_attention_spec("cbam@6+8") == [Placement("cbam", "index", (6, 8))]
    b = parse_attention_spec(" se@backbone , cbam(reduction=8, kernel_size=3)@neck,eca@4+6,9,gc")
    assert [str(x) for x in b] == [
        "se@backbone",
        "cbam(reduction=8,kernel_size=3)@neck",
        "eca@4+6+9",
        "gc@neck",
    ]
    assert b[1].hyper == {"reduction": 8, "kernel_size": 3}
    assert parse_attention_spec(["se@backbone", Placement("cbam", "all")]) == [
        Placement("se", "backbone"),
        Placement("cbam", "all"),
    ]
    # canonical strings parse back to the same placements
    assert parse_attention_spec(",".join(str(x) for x in b)) == b


@pytest.mark.parametrize(
    ("spec", "exc", "words"),
    [
        ("cbma@neck", KeyError, ["cbma", "cbam"]),
        ("cbam(reductio=8)@neck", ValueError, ["reductio", "reduction"]),
        ("cbam(8)@neck", ValueError, ["name=value"]),
        ("se@backbone,8", ValueError, ["bare index", "8"]),
        ("cbam@middle", ValueError, ["middle", "backbone"]),
        ("cbam@", ValueError, ["nothing after"]),
        ("", ValueError, ["empty"]),
        ("cbam,,se", ValueError, ["empty item"]),
        ("cbam(reduction=8@neck", ValueError, ["unbalanced"]),
    ],
)
def test_spec_errors(spec, exc, words):
    with pytest.raises(exc) as ei:
        parse_attention_spec(spec)
    msg = str(ei.value)
    for w in words:
        assert w in msg, msg


def test_placement_errors():
    cfg = load_config("yolov5n")
    with pytest.raises(ValueError, match="row 25 is out of range.*0..24"):
        place_attention(cfg, "cbam@25")
    with pytest.raises(ValueError, match="row 24 is the Detect head"):
        place_attention(cfg, "cbam@24")
    with pytest.raises(ValueError, match="row 77 is the IDetect head"):
        place_attention("yolov7-tiny", "se@77")
    no_head = copy.deepcopy(cfg)
    no_head["head"] = no_head["head"][:-1]
    with pytest.raises(ValueError, match="no detection head"):
        place_attention(no_head, "cbam@neck")
    bad = copy.deepcopy(cfg)
    bad["head"][2][0] = [-1, 30]
    with pytest.raises(ValueError, match="row 12: 'from' index 30 refers to row 30"):
        place_attention(bad, "cbam@backbone")


# ----------------------------------------------------------------------------- renumbering


def _check_renumbering(base, new, index_map, expect_after):
    """Every original row keeps its content, and reads the image of its sources (the last
    attention row after a source when there is one); inserted rows read their predecessor."""
    old_rows, new_rows = _rows(base), _rows(new)
    n_att = sum(len(v) for v in expect_after.values())
    assert len(new_rows) == len(old_rows) + n_att
    assert sorted(index_map) == list(range(len(old_rows)))
    assert list(index_map.values()) == sorted(set(index_map.values()))  # increasing, injective
    # sections keep their rows
    assert len(new["backbone"]) == len(base["backbone"]) + sum(
        len(v) for k, v in expect_after.items() if k < len(base["backbone"])
    )
    for i, row in enumerate(old_rows):
        j = index_map[i]
        assert new_rows[j][1:] == row[1:], (i, j)
        # attention rows sit right after row i, in spec order
        nxt = index_map.get(i + 1, len(new_rows))
        att = new_rows[j + 1 : nxt]
        assert [r[2] for r in att] == expect_after.get(i, []), (i, att)
        for r in att:
            assert r[0] == -1 and r[1] == 1 and isinstance(r[3], dict)
        # sources
        for a_old, a_new in zip(_abs_sources(row, i), _abs_sources(new_rows[j], j)):
            if a_old == -1 and i == 0:
                assert a_new == -1
                continue
            expected = index_map[a_old] + len(expect_after.get(a_old, []))
            assert a_new == expected, (i, row[0], new_rows[j][0])
        # the written form is kept: -1 stays -1, other negatives stay relative, absolutes absolute
        f_old = row[0] if isinstance(row[0], list) else [row[0]]
        f_new = new_rows[j][0] if isinstance(new_rows[j][0], list) else [new_rows[j][0]]
        assert len(f_old) == len(f_new)
        for u, v in zip(f_old, f_new):
            assert (u < 0) == (v < 0)
            if u == -1:
                assert v == -1


SPECS = ["cbam@backbone", "cbam@neck", "cbam@all", "se@backbone,cbam@neck", "eca@neck,gc@neck", "sa@1,5,12"]


@pytest.mark.parametrize("name", SHIPPED)
def test_renumbering_all_shipped(name):
    base = load_config(name)
    fam = _family(name)
    bb, neck = BACKBONE_END[fam], NECK[fam]
    expected = {
        "cbam@backbone": {bb: ["cbam"]},
        "cbam@neck": {k: ["cbam"] for k in neck},
        "cbam@all": {bb: ["cbam"], **{k: ["cbam"] for k in neck}},
        "se@backbone,cbam@neck": {bb: ["se"], **{k: ["cbam"] for k in neck}},
        "eca@neck,gc@neck": {k: ["eca", "gc"] for k in neck},
        "sa@1,5,12": {1: ["sa"], 5: ["sa"], 12: ["sa"]},
    }
    snapshot = copy.deepcopy(base)
    for spec in SPECS:
        new, index_map = place_attention(base, spec)
        assert base == snapshot, "place_attention must not modify its input"
        _check_renumbering(base, new, index_map, expected[spec])
        # the Detect row reads the rows right after the neck outputs' attention chains
        det_old = len(_rows(base)) - 1
        det_new = index_map[det_old]
        assert _rows(new)[det_new][2] in ("Detect", "IDetect")
        want = [index_map[k] + len(expected[spec].get(k, [])) for k in neck]
        assert _rows(new)[det_new][0] == want
        # YAML round trip gives an equal plain dict
        text = yaml.safe_dump(new, sort_keys=False)
        assert yaml.safe_load(text) == new
    assert insertion_points(base, Placement("x", "backbone")) == [bb]
    assert insertion_points(base, Placement("x", "neck")) == neck


def test_yolov7_tiny_backbone_rewires_both_spp_branches():
    new, m = place_attention("yolov7-tiny", "cbam@backbone")
    rows = _rows(new)
    assert rows[29] == [-1, 1, "cbam", {}]
    assert rows[30][0] == -1 and rows[31][0] == -2  # both read the cbam row 29
    assert rows[37][0] == [-1, -7]  # 37 - 7 = 30: the first SPP branch, as in the original
    assert m[28] == 28 and m[29] == 30 and m[77] == 78
    assert rows[41][0] == m[21]  # absolute index of the P4 lateral input shifts with it


def test_hyperparameters_and_chains_in_rows():
    new, m = place_attention("yolov5n", "cbam(reduction=8)@backbone,se@backbone")
    rows = _rows(new)
    assert rows[9] == [-1, 1, "cbam", {"reduction": 8}]
    assert rows[10] == [-1, 1, "se", {}]
    assert rows[11][2] == "SPPF" and rows[11][0] == -1
    assert m[9] == 11
    # the lateral Concat rows read the shifted absolute indices (6 -> 6, 4 -> 4, 10 -> 12, 14 -> 16)
    assert rows[m[12]][0] == [-1, 6] and rows[m[22]][0] == [-1, 12] and rows[m[19]][0] == [-1, 16]
    text = describe("yolov5n", "cbam(reduction=8)@backbone,se@backbone")
    assert "row 9: cbam {'reduction': 8} after original row 8 (C3)" in text
    assert "row 10: se after original row 8 (C3)" in text


def test_row_map_between_configs():
    base = load_config("yolov5n")
    a, ma = place_attention(base, "cbam@neck")
    assert row_map(base, a) == ma
    b, _ = place_attention(base, "se@backbone,cbam@neck")
    rm = row_map(a, b)
    assert rm[18] == 19 and rm[26] == 27 and rm[27] == 28  # cbam rows follow their base rows
    assert all(_rows(a)[k][2] == _rows(b)[v][2] for k, v in rm.items())
    assert len(rm) == len(_rows(a)) and 9 not in rm.values()  # b's se row has no source
    with pytest.raises(ValueError, match="different base networks"):
        row_map("yolov5n", "yolov7-tiny")


# ----------------------------------------------------------------------------- built models


def _attention_channels(model, x):
    """Input channels of every attention layer, seen through forward hooks."""
    seen: dict[int, int] = {}
    hooks = [
        layer.register_forward_hook(lambda mod, inp, out, i=i: seen.__setitem__(i, inp[0].shape[1]))
        for i, layer in enumerate(model.model)
        if getattr(layer, "attention_key", None)
    ]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen, out


def _nparams(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", ["yolov5s", "yolov7-tiny"])
@pytest.mark.parametrize("spec", ["cbam@neck", "se@backbone"])
def test_built_model_params_and_forward(name, spec):
    base = _nparams(build_model(name, device="meta"))
    torch.manual_seed(0)
    model = build_model(name, attention=spec)
    assert model.index_map is not None and len(model.index_map) == len(_rows(load_config(name)))
    model.eval()
    chans, out = _attention_channels(model, torch.rand(1, 3, 64, 96))
    n_att = 1 if "backbone" in spec else 3
    assert len(chans) == n_att
    key = spec.split("@")[0]
    info = get_attention_info(key)
    assert _nparams(model) == base + sum(info.params(c) for c in chans.values())
    assert out[0].shape == (1, 3 * (8 * 12 + 4 * 6 + 2 * 3), 85)
    model.train()
    levels = model(torch.rand(2, 3, 64, 64))
    assert [tuple(t.shape) for t in levels] == [(2, 3, s, s, 85) for s in (8, 4, 2)]
    sum(t.sum() for t in levels).backward()
    att = [model.model[i] for i in chans]
    assert all(p.grad is not None for a in att for p in a.parameters())
    # the saved config rebuilds the same network
    again = build_model(yaml.safe_load(yaml.safe_dump(model.yaml)), device="meta")
    assert _nparams(again) == _nparams(model)


# Hyperparameters for the 2x2..32x32 maps of yolov5n at 64x64 (and the 256x256 stride probe)
# where a module's defaults cannot run: acmix's reflection padding needs H, W > kernel_att // 2,
# mhsa's position tables are built for one size unless they may be interpolated.
TINY_MAPS: dict[str, dict] = {"acmix": {"kernel_att": 3}, "mhsa": {"resize": "interpolate"}}


def _zoo_hyper(info) -> dict:
    """Hyperparameters that build at yolov5n widths: defaults, or the module's small_hyper."""
    hyper = dict(TINY_MAPS.get(info.key, {}))
    try:
        for c in (64, 128, 256):
            create_attention(info.key, c, **hyper)
    except ValueError:
        small = getattr(info.cls, "small_hyper", None)
        assert small, f"{info.key} does not build at yolov5n widths and has no small_hyper"
        hyper.update(small)
    return hyper


ZOO = [i.key for i in list_attention()]


def test_zoo_is_registered():
    assert len(ZOO) >= 30


@pytest.mark.parametrize("key", ZOO)
def test_every_zoo_module_in_yolov5n(key):
    """@backbone and @neck: exact parameter counts; @all: one eval forward at 64x64."""
    info = get_attention_info(key)
    hyper = _zoo_hyper(info)
    kw = ",".join(f"{k}={v}" for k, v in hyper.items())
    spec = key + (f"({kw})" if kw else "")
    base = _nparams(build_model("yolov5n", device="meta"))
    # yolov5n widths: backbone end (row 8) 256; neck outputs (rows 17, 20, 23) 64, 128, 256
    for where, chans in (("backbone", [256]), ("neck", [64, 128, 256])):
        m = build_model("yolov5n", attention=f"{spec}@{where}", device="meta")
        assert _nparams(m) == base + sum(info.params(c, **hyper) for c in chans), where
    torch.manual_seed(0)
    model = build_model("yolov5n", attention=f"{spec}@all").eval()
    seen, out = _attention_channels(model, torch.rand(1, 3, 64, 64))
    assert sorted(seen.values()) == [64, 128, 256, 256]
    assert out[0].shape == (1, 3 * (64 + 16 + 4), 85)
    assert torch.isfinite(out[0]).all()


SHIPPED_MODELS = ["yolov5n", "yolov5s", "yolov5m", "yolov5l", "yolov5x", "yolov7-tiny", "yolov7", "yolov7x"]


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_every_zoo_module_in_every_shipped_model_counts_exactly(name):
    """Every model x every module at @backbone and @neck (meta device): the parameter count is the
    base count plus exactly the module's formula at the channels the parser inferred."""
    from yoloattn.models.parse import resolve_rows

    base = _nparams(build_model(name, device="meta"))
    for key in ZOO:
        info = get_attention_info(key)
        hyper = {**TINY_MAPS.get(key, {}), **(getattr(info.cls, "small_hyper", None) or {})}
        kw = ",".join(f"{k}={v}" for k, v in hyper.items())
        spec = key + (f"({kw})" if kw else "")
        for where, n_rows in (("backbone", 1), ("neck", 3)):
            cfg, _ = place_attention(name, f"{spec}@{where}")
            att = [r for r in resolve_rows(cfg) if r.kind == "attention"]
            assert len(att) == n_rows, (name, key, where)
            model = build_model(cfg, device="meta")
            want = base + sum(info.params(r.c1, **hyper) for r in att)
            assert _nparams(model) == want, (name, key, where)
