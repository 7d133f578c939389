"""Identity insertion: a gated attention row leaves a transferred network's function unchanged.

Every registered module, placed @backbone and @neck (``@all``) in yolov5n, yolov7-tiny, yolov8n and
yolo11n with weights transferred from the base model: eval and train outputs equal the base
model's and every gate receives a gradient at step 0. Plain insertion is pinned as today's (paper) module.
"""

from __future__ import annotations

import pytest
import torch

import yoloattn
from yoloattn.models.detector import Model, build_model
from yoloattn.models.placement import insert_mode, resolve_insert
from yoloattn.models.weights import transfer_weights
from yoloattn.nn.gate import ResidualGate

KEYS = [i.key for i in yoloattn.list_attention()]
IMG = 64  # 2x2 at stride 32: the smallest input every placement sees
#: hyperparameters for modules whose defaults do not fit 64-channel rows or 2x2 maps
HYPER = {"sa": "(groups=8)", "acmix": "(kernel_att=3)", "mhsa": "(resize=interpolate)"}

_BASES: dict[str, Model] = {}


def _base(name: str) -> Model:
    if name not in _BASES:
        torch.manual_seed(0)
        m = build_model(name, nc=2)
        # give every BN non-trivial statistics so that a wrong identity cannot hide behind zeros
        with torch.no_grad():
            for mod in m.modules():
                if isinstance(mod, torch.nn.BatchNorm2d):
                    mod.running_mean.uniform_(-0.1, 0.1)
                    mod.running_var.uniform_(0.5, 1.5)
        _BASES[name] = m
    return _BASES[name]


def _outputs(model: Model, x: torch.Tensor, train: bool) -> list[torch.Tensor]:
    model.train(train)
    out = model(x)
    return list(out) if train else [out[0]]


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["yolov5n", "yolov7-tiny", "yolov8n", "yolo11n"])
@pytest.mark.parametrize("key", KEYS)
def test_identity_insertion_keeps_the_base_function(model_name: str, key: str) -> None:
    base = _base(model_name)
    torch.manual_seed(1)
    model = build_model(model_name, nc=2, attention=f"{key}{HYPER.get(key, '')}@all", insert="identity")
    report = transfer_weights(base.state_dict(), model, model.index_map)
    assert not report.unused and not report.skipped
    gates = [m for m in model.modules() if isinstance(m, ResidualGate)]
    identity_at_init = getattr(yoloattn.get_attention_info(key), "identity_at_init", False)
    inserted = len(model.model) - len(base.model)
    assert inserted == len(set(model.index_map.values()) ^ set(range(len(model.model))))
    assert len(gates) == (0 if identity_at_init else inserted)
    x = torch.rand(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(2))
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    with torch.no_grad():
        for train in (False, True):
            ref = _outputs(base, x, train)
            got = _outputs(model, x, train)
            for a, b in zip(ref, got):
                assert torch.allclose(a, b, atol=1e-6, rtol=0), (key, train, (a - b).abs().max())
    base.load_state_dict(base_state)  # undo the train-mode BN updates for the next case
    model.train()
    loss = sum(o.float().square().mean() for o in model(x))
    loss.backward()
    for g in gates:
        assert g.gate.grad is not None and g.gate.grad.abs().sum() > 0, key


def test_plain_insertion_is_the_paper_module() -> None:
    torch.manual_seed(0)
    model = build_model("yolov5n", nc=2, attention="cbam@neck", insert="plain")
    assert not any(isinstance(m, ResidualGate) for m in model.modules())
    assert type(model.model[18]).__name__ == "CBAM"
    assert not any(".attn." in k for k in model.state_dict())
    assert insert_mode(model.yaml) == "plain"
    # plain is today's default: same state-dict keys and values for the same seed
    torch.manual_seed(0)
    default = build_model("yolov5n", nc=2, attention="cbam@neck")
    assert default.yaml.get("insert") is None
    sd, sd2 = model.state_dict(), default.state_dict()
    assert list(sd) == list(sd2) and all(torch.equal(sd[k], sd2[k]) for k in sd)


def test_gate_names_shapes_and_channel_gate() -> None:
    model = build_model("yolov5n", nc=2, attention="se@backbone", insert="identity", gate="channel")
    sd = model.state_dict()
    assert sd["model.9.gate"].shape == (256,)  # row 8 of yolov5n has 1024 * 0.25 channels
    assert any(k.startswith("model.9.attn.") for k in sd)
    scalar = build_model("yolov5n", nc=2, attention="se@backbone", insert="identity")
    assert scalar.state_dict()["model.9.gate"].shape == (1,)
    assert insert_mode(scalar.yaml) == "identity"


def test_row_level_insert_overrides_the_model_level() -> None:
    model = build_model("yolov5n", nc=2, attention="se@9,cbam(insert=plain)@neck", insert="identity")
    assert isinstance(model.model[10], ResidualGate)
    assert type(model.model[19]).__name__ == "CBAM"
    assert insert_mode(model.yaml) == "mixed"


def test_plain_weights_move_into_gated_rows_and_back() -> None:
    torch.manual_seed(0)
    plain = build_model("yolov5n", nc=2, attention="cbam@backbone", insert="plain")
    gated = build_model("yolov5n", nc=2, attention="cbam@backbone", insert="identity")
    report = transfer_weights(plain.state_dict(), gated)
    assert report.new == ["model.9.gate"] and not report.unused
    assert "1 of the new are zero-initialised insertion gates" in report.summary()
    back = build_model("yolov5n", nc=2, attention="cbam@backbone", insert="plain")
    report = transfer_weights(gated.state_dict(), back)
    assert report.unused == ["model.9.gate"] and not report.new
    for k, v in back.model[9].state_dict().items():
        assert torch.equal(v, gated.model[9].attn.state_dict()[k]), k


def test_resolve_insert() -> None:
    assert resolve_insert("auto", transferred=True) == "identity"
    assert resolve_insert("auto", transferred=False) == "plain"
    assert resolve_insert("plain", transferred=True) == "plain"
    with pytest.raises(ValueError, match="insertion mode must be one of"):
        resolve_insert("zero", transferred=True)


def test_bad_insert_values_are_config_errors() -> None:
    with pytest.raises(ValueError, match="'insert' must be one of"):
        build_model("yolov5n", attention="se", insert="zero")
    with pytest.raises(ValueError, match="'gate' must be one of"):
        build_model("yolov5n", attention="se", insert="identity", gate="vector")
    cfg = yoloattn.models.placement.place_attention("yolov5n", "se@9")[0]
    cfg["backbone"][10][3] = {"insert": "maybe"}
    with pytest.raises(ValueError, match="row 10.*'insert' must be identity or plain"):
        Model(cfg)


def test_deprecated_spelling_in_a_spec_builds_with_the_current_name() -> None:
    with pytest.warns(DeprecationWarning, match="kernel_size"):
        model = build_model("yolov5n", nc=2, attention="eca(k_size=5)@backbone")
    assert model.yaml["backbone"][9][3] == {"kernel_size": 5}
