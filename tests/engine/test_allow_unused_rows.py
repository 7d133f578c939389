"""``--allow-unused-rows`` on ``train`` (and ``compare``, which shares the training options): a
hand-edited config whose rows are miswired fails at model build with the parser's message, and the
flag lets a research config through, recorded in the config that is built."""

from __future__ import annotations

from pathlib import Path

import pytest

from yoloattn.cli import build_parser
from yoloattn.cli.train import config_from_args
from yoloattn.engine.setup import model_configs
from yoloattn.models import build_model, load_config
from yoloattn.models.config import dump_config
from yoloattn.models.wiring import WiringError


def _miswired(tmp_path: Path) -> Path:
    cfg = load_config("yolov5n")
    cfg["backbone"].insert(9, [-1, 1, "cbam", {"reduction": 8}])  # not renumbered
    path = tmp_path / "by-hand.yaml"
    path.write_text(dump_config(cfg))
    return path


def test_train_refuses_a_miswired_config_without_the_flag(tmp_path: Path) -> None:
    args = build_parser().parse_args(["train", "--model", str(_miswired(tmp_path)), "--data", "d.yaml"])
    cfg = config_from_args(args)
    assert cfg.allow_unused_rows is False
    with pytest.raises(WiringError, match="row 24 \\(C3\\) is read by no other row"):
        _, model_cfg, _ = model_configs(cfg)
        build_model(model_cfg, nc=1, device="meta")


@pytest.mark.parametrize("command", ["train", "compare"])
def test_allow_unused_rows_lets_a_research_config_through(tmp_path: Path, command: str) -> None:
    argv = [command, "--model", str(_miswired(tmp_path)), "--data", "d.yaml", "--allow-unused-rows"]
    args = build_parser().parse_args(argv)
    assert args.allow_unused_rows is True
    if command == "compare":
        return  # compare passes the training options through unchanged (test_compare covers that)
    _, model_cfg, _ = model_configs(config_from_args(args))
    assert model_cfg["allow_unused_rows"] is True
    model = build_model(model_cfg, nc=1, device="meta")
    assert len(model.model) == 26 and model.yaml["allow_unused_rows"] is True
