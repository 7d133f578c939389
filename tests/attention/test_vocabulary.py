"""One keyword vocabulary across the zoo; old spellings are deprecated aliases.

``reduction``, ``kernel_size`` (``kernel_sizes`` for one per branch) and ``groups`` mean the
same thing in every module. An old spelling still works, by ``create_attention``, by direct
construction and in the parameter formula, with a ``DeprecationWarning`` naming the new one,
and builds exactly the module the new spelling builds.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from yoloattn.attention import create_attention, get_attention_info, list_attention

# key, old keyword and value, new keyword and value (the same module)
ALIASED = [
    ("eca", ("k_size", 5), ("kernel_size", 5)),
    ("ceca", ("k_size", 5), ("kernel_size", 5)),
    ("ema", ("factor", 8), ("groups", 8)),
    ("cot", ("factor", 4), ("reduction", 4)),
    ("gc", ("ratio", 1 / 4), ("reduction", 4)),
    ("epsa", ("kernels", (3, 5, 7, 7)), ("kernel_sizes", (3, 5, 7, 7))),
]
OLD_SPELLINGS = {"k_size", "ratio", "factor", "kernels"}
C = 64


def _fresh(build, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build().eval()


def _same_module(a: torch.nn.Module, b: torch.nn.Module) -> None:
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    torch.manual_seed(1)
    x = torch.randn(2, C, 9, 7)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_no_registered_default_uses_an_old_spelling():
    for info in list_attention():
        assert not OLD_SPELLINGS & set(info.defaults), info.key
        for old, target in info.aliases.items():
            new = target if isinstance(target, str) else target[0]
            assert old not in info.defaults and new in info.defaults, info.key


def test_every_alias_is_tested():
    registered = {(i.key, old) for i in list_attention() for old in i.aliases}
    assert registered == {(key, old[0]) for key, old, _ in ALIASED}


@pytest.mark.parametrize(("key", "old", "new"), ALIASED, ids=[a[0] for a in ALIASED])
def test_old_spelling_warns_and_builds_the_same_module(key, old, new):
    info = get_attention_info(key)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new spelling never warns
        ref = _fresh(lambda: create_attention(key, C, **{new[0]: new[1]}))
        direct_new = _fresh(lambda: info.cls(C, **{new[0]: new[1]}))
        p_new = info.params(C, **{new[0]: new[1]})
    with pytest.warns(DeprecationWarning, match=rf"{key}: .*'{old[0]}'.*use '{new[0]}'"):
        via_factory = _fresh(lambda: create_attention(key, C, **{old[0]: old[1]}))
    with pytest.warns(DeprecationWarning, match=rf"use '{new[0]}'"):
        via_class = _fresh(lambda: info.cls(C, **{old[0]: old[1]}))
    with pytest.warns(DeprecationWarning, match=rf"use '{new[0]}'"):
        p_old = info.params(C, **{old[0]: old[1]})
    _same_module(ref, direct_new)
    _same_module(ref, via_factory)
    _same_module(ref, via_class)
    assert p_old == p_new == sum(p.numel() for p in ref.parameters())


def test_warning_points_at_the_caller():
    with pytest.warns(DeprecationWarning) as rec:
        create_attention("eca", C, k_size=3)
    assert rec[0].filename == __file__


def test_both_spellings_at_once_is_an_error():
    with pytest.raises(TypeError, match="kernel_size"):
        create_attention("eca", C, k_size=3, kernel_size=5)
    with pytest.raises(TypeError, match="groups"):
        get_attention_info("ema").cls(C, factor=8, groups=8)


def test_unknown_keyword_still_rejected_and_lists_new_names():
    with pytest.raises(TypeError, match="kernel_size") as err:
        create_attention("eca", C, k_sise=3)
    assert "k_size" not in str(err.value).split("accepted")[1]
