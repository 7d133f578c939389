"""The dataset YAML: paths, names, and the errors that say what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from yoloattn.data.config import load_dataset_config


def test_load_dataset_config_resolves_paths_and_names(tmp_path):
    d = tmp_path / "cfg"
    d.mkdir()
    (d / "a.yaml").write_text(
        "path: ../data\ntrain: images/train\nval: [images/val, lists/extra.txt]\nnames: [cat, dog]\n"
    )
    cfg = load_dataset_config(d / "a.yaml")
    root = (tmp_path / "data").resolve()
    assert cfg.root == root and cfg.nc == 2 and cfg.names == ["cat", "dog"]
    assert cfg.train == [root / "images" / "train"]
    assert cfg.val == [root / "images" / "val", root / "lists" / "extra.txt"] and cfg.test == []
    (d / "b.yaml").write_text("train: t\nval: v\ntest: /abs/test\nnc: 2\nnames: {1: dog, 0: cat}\n")
    cfg = load_dataset_config(d / "b.yaml")
    assert cfg.root == d.resolve() and cfg.names == ["cat", "dog"] and cfg.test == [Path("/abs/test")]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("val: v\nnames: [a]\n", "missing required key 'train'"),
        ("train: t\nval: v\nnc: 3\nnames: [a, b]\n", "'nc' is 3 but 'names' has 2"),
        ("train: t\nval: v\nnames: {0: a, 2: b}\n", "without gaps"),
        ("train: t\nval: v\n", "needs 'names'"),
        ("- a\n- b\n", "expected a mapping"),
        ("train: [t\n", "not valid YAML"),
        # YAML aliases nest 9 ** 9 names in 200 bytes: refused without ever str()-ing them
        (
            "a: &a [x, x, x, x, x, x, x, x, x]\n"
            + "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
            + "train: t\nval: v\nnames: *i\n",
            "'names' entry 0 is a list, not a name",
        ),
        ("path: [a, [b]]\ntrain: t\nval: v\nnames: [a]\n", "'path' must be a folder, got a list"),
        ("train: [[t]]\nval: v\nnames: [a]\n", "got a list"),
        ("train: " + "[" * 3000 + "]" * 3000 + "\n", "not valid YAML: nested too deep"),
    ],
)
def test_load_dataset_config_errors(tmp_path, text, match):
    (tmp_path / "d.yaml").write_text(text)
    with pytest.raises(ValueError, match=match):
        load_dataset_config(tmp_path / "d.yaml")


def test_load_dataset_config_bom_and_size_limit(tmp_path, monkeypatch):
    import yoloattn.data.config as config

    (tmp_path / "d.yaml").write_bytes(b"\xef\xbb\xbftrain: t\nval: v\nnames: [a]\n")
    assert load_dataset_config(tmp_path / "d.yaml").names == ["a"]
    monkeypatch.setattr(config, "MAX_YAML_BYTES", 10)
    with pytest.raises(ValueError, match="too large for a dataset YAML"):
        load_dataset_config(tmp_path / "d.yaml")


def test_load_dataset_config_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset YAML not found"):
        load_dataset_config(tmp_path / "nope.yaml")
