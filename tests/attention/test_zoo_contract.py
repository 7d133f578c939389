"""Contract tests run on every registered attention module.

Parameter counts are held to the paper formulas and to the test vectors of the spec
(``shared/spec/attention-zoo.md`` section 4); behaviour tests check shapes, gradients,
learning, determinism, dtypes and batch-1 training for each key.
"""

from __future__ import annotations

import pytest
import torch
from onnx_check import assert_onnx_matches
from torch import nn

from yoloattn.attention import create_attention, get_attention_info, list_attention

INFOS = list_attention()
KEYS = [i.key for i in INFOS]

# P(128), P(256), P(512) from the spec's summary table (section 4) at default hyperparameters.
SPEC_VECTORS: dict[str, tuple[int | None, int, int | None]] = {
    "se": (2184, 8464, 33312),
    "ese": (16512, 65792, 262656),
    "eca": (5, 5, 5),
    "ceca": (5, 5, 5),
    "gct": (384, 768, 1536),
    "srm": (512, 1024, 2048),
    "fca": (2048, 8192, 32768),
    "nam": (256, 512, 1024),
    "sk": (22080, 62528, 198720),
    "splat": (172992, 690048, 2756352),
    "epsa": (108450, 433732, 1734792),
    "cbam": (2284, 8564, 33412),
    "bam": (4651, 17747, 69283),
    "bam_official": (4457, 17361, 68513),
    "ca": (3352, 6680, 25648),
    "simam": (0, 0, 0),
    "gam": (410240, 1639680, 6556160),
    "triplet": (300, 300, 300),
    "sa": (6, 12, 24),
    "sge": (128, 128, 128),
    "scse": (16705, 66177, 263425),
    "psa_p": (33152, 131840, 525824),
    "psa_s": (33152, 131840, 525824),
    "ema": (176, 672, 2624),
    "cpca": (38944, 127040, 450688),
    "parnet": (180992, 722432, 2886656),
    "gc": (2329, 8753, 33889),
    "nonlocal": (33344, 132224, 526592),
    "cc": (20641, 82241, 328321),
    "danet": (None, 82242, None),
    "a2": (16608, 65984, 263040),
    "cot": (105200, 417248, 1661888),
    "bra": (67328, 265728, 1055744),
    "acmix": (60238, 218670, 830446),
    "external": (49536, 164608, 591360),
    "outlook": (74692, 297864, 1189648),
    "s2mlp": (131584, 525312, 2099200),
    "msca": (30592, 93952, 318976),
    "lsk": (34758, 118470, 433350),
    "lska": (20096, 72960, 276992),
}

FOUNDATION_KEYS = (
    "se eca cbam bam bam_official ca simam gam sk triplet sa sge scse gc nonlocal nam ema".split()
)


def _size(info, default=(13, 17)):
    return info.fixed_size or default


def build_with_hyper(info, channels: int) -> tuple[nn.Module, dict]:
    """Build at defaults; fall back to the class's documented ``small_hyper`` for narrow widths."""
    try:
        return create_attention(info.key, channels), {}
    except ValueError as e:
        small = getattr(info.cls, "small_hyper", None)
        assert small, f"{info.key} fails at C={channels} with defaults and has no small_hyper: {e}"
        assert "=" in str(e), f"constraint error of {info.key} must name the hyperparameter: {e}"
        return create_attention(info.key, channels, **small), dict(small)


def build(info, channels: int) -> nn.Module:
    return build_with_hyper(info, channels)[0]


def count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_foundation_keys_registered():
    missing = [k for k in FOUNDATION_KEYS if k not in KEYS]
    assert not missing, f"not registered: {missing}"


def test_unknown_key_lists_close_matches():
    with pytest.raises(KeyError, match="cbam"):
        create_attention("cbma", 64)


def test_lookup_is_case_insensitive():
    assert get_attention_info("CBAM").key == "cbam"
    assert isinstance(create_attention("Se", 64), nn.Module)


def test_unknown_hyperparameter_is_rejected():
    with pytest.raises(TypeError, match="reduction"):
        create_attention("se", 64, reducton=4)


@pytest.mark.parametrize("key", KEYS)
def test_metadata_complete(key):
    info = get_attention_info(key)
    assert info.paper and info.venue and info.year >= 2015 and info.reference
    assert info.cls.__doc__ and str(info.year) in info.cls.__doc__, "docstring must cite the paper"
    if info.size_dependent:
        assert info.fixed_size is not None


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("channels", [64, 128, 256, 512])
def test_param_count_matches_paper_formula(key, channels):
    info = get_attention_info(key)
    m, hyper = build_with_hyper(info, channels)
    expected = info.params(channels, **hyper)
    assert count(m) == expected, f"{key} C={channels} {hyper}: {count(m)} != formula {expected}"


@pytest.mark.parametrize("key", [k for k in SPEC_VECTORS if k in KEYS])
def test_spec_test_vectors(key):
    info = get_attention_info(key)
    for c, want in zip((128, 256, 512), SPEC_VECTORS[key]):
        if want is None:
            continue
        assert info.params(c) == want, f"formula {key} P({c})"
        assert count(create_attention(key, c)) == want, f"module {key} P({c})"


@pytest.mark.parametrize("key", KEYS)
def test_shape_preserved(key):
    info = get_attention_info(key)
    m = build(info, 64).eval()
    sizes = [info.fixed_size] if info.size_dependent else [(13, 17), (20, 20), (7, 5)]
    if not info.size_dependent and getattr(info.cls, "min_hw", 1) <= 1:
        sizes.append((1, 1))
    with torch.no_grad():
        for h, w in sizes:
            x = torch.randn(2, 64, h, w)
            y = m(x)
            assert y.shape == x.shape, f"{key} at {h}x{w}"
            assert torch.isfinite(y).all()


def _randomize(m: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if p.ndim == 1 else 0.0))


@pytest.mark.parametrize("key", KEYS)
def test_gradients_reach_every_parameter(key):
    info = get_attention_info(key)
    torch.manual_seed(0)
    m = build(info, 64).train()
    _randomize(m)
    x = torch.randn(2, 64, *_size(info), requires_grad=True)
    (m(x) * torch.randn_like(x)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    inactive = set(getattr(info.cls, "inactive_parameters", ()))
    for name, p in m.named_parameters():
        assert p.grad is not None, f"{key}.{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{key}.{name} non-finite gradient"
        if name in inactive:  # documented as cancelling out: its gradient is round-off only
            assert p.grad.abs().max() < 1e-3 * max(q.grad.abs().max() for q in m.parameters()), name
            continue
        assert p.grad.abs().sum() > 0, f"{key}.{name} gradient is zero"


@pytest.mark.parametrize("key", KEYS)
def test_train_step_reduces_loss(key):
    info = get_attention_info(key)
    torch.manual_seed(0)
    m = build(info, 64).train()
    if count(m) == 0:
        assert info.params(64) == 0
        return
    x = torch.randn(4, 64, *_size(info, (8, 8)))
    target = torch.randn_like(x)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = nn.functional.mse_loss(m(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], f"{key}: {losses}"


@pytest.mark.parametrize("key", KEYS)
def test_eval_deterministic_and_batch1_train(key):
    info = get_attention_info(key)
    m = build(info, 64)
    x = torch.randn(1, 64, *_size(info))
    y = m.train()(x)  # batch 1 in train mode must not crash
    assert y.shape == x.shape
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(x), m(x))


@pytest.mark.parametrize("key", KEYS)
def test_float64_and_bfloat16_autocast(key):
    info = get_attention_info(key)
    m = build(info, 64).eval()
    x = torch.randn(2, 64, *_size(info))
    with torch.no_grad():
        y64 = m.double()(x.double())
        assert y64.dtype == torch.float64 and torch.isfinite(y64).all()
        m.float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yb = m(x)
        assert yb.shape == x.shape and torch.isfinite(yb.float()).all()
        ref = m(x)
        # bf16 keeps ~3 significant digits; statistics in float32 keep the result close
        err = (yb.float() - ref).abs().mean() / (ref.abs().mean() + 1e-6)
        assert err < 0.1, f"{key}: bf16 relative error {err:.3f}"


# Modules that cannot export to ONNX with dynamic H/W (opset 17). The spec flagged ceca (circular
# pad), fca (adaptive pooling) and outlook (col2im); ours avoid those ops, so the list is empty.
EXPECTED_NO_ONNX: set[str] = set()


def test_onnx_exportability_metadata_is_exactly_the_expected_list():
    assert {i.key for i in INFOS if not i.onnx} == EXPECTED_NO_ONNX
    for i in INFOS:
        if not i.onnx:
            assert i.onnx_note, f"{i.key}: onnx=False needs onnx_note"


def test_zoo_has_at_least_40_modules_with_issue9_keys():
    keys = set(KEYS)
    wanted = set(
        "ese ceca gct srm fca splat epsa psa_p psa_s cpca parnet soca cc danet a2 cot bra mhsa acmix "
        "external outlook s2mlp msca lsk lska".split()
    )
    assert len(keys) >= 40 and not wanted - keys, sorted(wanted - keys)


@pytest.mark.parametrize("key", [i.key for i in INFOS if i.onnx])
def test_onnx_export_dynamic_hw(key):
    info = get_attention_info(key)
    torch.manual_seed(0)
    m = build(info, 64).eval()
    if info.size_dependent:
        sizes = [info.fixed_size, info.fixed_size]
    else:
        sizes = [(14, 21), (20, 20)]
    assert_onnx_matches(m, 64, sizes[0], sizes, rtol_scale=1e-4, label=key)


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("key", KEYS)
def test_identity_at_init_flag_is_exact(key, mode):
    """``identity_at_init`` is True exactly for modules that return their input when fresh.

    Checked in both modes on a fresh module (C=64, random 2 x 64 x 16 x 16 input; a
    size-dependent module gets its valid test size): flag True -> output == input (1e-6),
    flag False -> the output differs from the input by more than 1e-4 somewhere.
    """
    info = get_attention_info(key)
    torch.manual_seed(0)
    m, _ = build_with_hyper(info, 64)
    m.train(mode == "train")
    h, w = info.fixed_size if info.size_dependent and info.fixed_size else (16, 16)
    x = torch.randn(2, 64, h, w)
    with torch.no_grad():
        y = m(x)
    assert y.shape == x.shape
    if info.identity_at_init:
        torch.testing.assert_close(y, x, atol=1e-6, rtol=0.0)
    else:
        assert (y - x).abs().max().item() > 1e-4, f"{key} is the identity at init in {mode} mode"


def test_identity_at_init_keys():
    """The flag another component relies on (zero-initialised gates for inserted modules)."""
    assert sorted(i.key for i in INFOS if i.identity_at_init) == ["cc", "gc", "gct", "nonlocal"]


def test_modules_listing_shows_identity_at_init():
    from yoloattn.cli.modules import zoo_rows

    rows = {r["key"]: r for r in zoo_rows(64)}
    assert all(rows[i.key]["identity_at_init"] is i.identity_at_init for i in INFOS)


@pytest.mark.parametrize("key", [i.key for i in INFOS if i.onnx and i.onnx_opset > 9])
def test_onnx_opset_is_the_lowest_that_works(key):
    """``onnx_opset`` (what ``yoloattn export`` checks) is exact: the module exports and matches
    onnxruntime at that opset, and fails to export one below it."""
    info = get_attention_info(key)
    torch.manual_seed(0)
    m = build(info, 64).eval()
    sizes = [info.fixed_size, info.fixed_size] if info.size_dependent else [(14, 21), (20, 20)]
    assert_onnx_matches(m, 64, sizes[0], sizes, rtol_scale=1e-4, label=key, opset=info.onnx_opset)
    with pytest.raises(Exception):  # noqa: B017 (the exporter raises several error types)
        assert_onnx_matches(m, 64, sizes[0], sizes, rtol_scale=1e-4, label=key, opset=info.onnx_opset - 1)
