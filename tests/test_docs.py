"""docs/attention.md is generated from the registry and must be up to date."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_attention_docs_are_generated_and_current():
    spec = importlib.util.spec_from_file_location("gen", ROOT / "tools" / "gen_attention_docs.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    text = gen.render()
    assert "| `cbam` |" in text and "8,564" in text
    assert (ROOT / "docs" / "attention.md").read_text() == text, "run: python tools/gen_attention_docs.py"


def test_readme_lists_every_module_and_both_quick_start_commands():
    from yoloattn.attention import list_attention

    readme = (ROOT / "README.md").read_text()
    for info in list_attention():
        assert f"| `{info.key}` |" in readme, f"README zoo table lacks {info.key}"
    assert "pip install -e . && yoloattn compare" in readme
    assert 'pip install -e ".[test]" && pytest' in readme
    assert 'pip install -e ".[test]" && pytest' in (ROOT / ".ci" / "run").read_text()
