"""The docs stay true: docs/attention.md is generated from the registry and current, the README
lists every module, and the fast shell examples in docs/*.md run."""

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


#: the sub-second subcommands whose doc examples are run (train/compare/val/predict/explain are slow)
FAST = (("modules",), ("info",), ("data", "check"))


def _doc_examples() -> list[tuple[str, list[str], str | None]]:
    """``(where, argv, expected error or None)`` of every fast ``yoloattn`` command in a bash or
    console block of docs/*.md (console: ``$`` lines; an ``error:`` line right after one means
    the example shows a failure)."""
    import shlex

    found: list[tuple[str, list[str], str | None]] = []
    for doc in sorted((ROOT / "docs").glob("*.md")):
        lang: str | None = None
        lines = doc.read_text().splitlines()
        for i, line in enumerate(lines):
            s = line.strip()
            if s.startswith("```"):
                lang = s[3:].strip() if lang is None else None
                continue
            if lang not in ("bash", "console"):
                continue
            if lang == "console":
                if not s.startswith("$ "):
                    continue
                s = s[2:]
            j = i
            while s.endswith("\\") and j + 1 < len(lines):  # continuation lines
                j += 1
                s = s[:-1] + " " + lines[j].strip()
            argv = shlex.split(s.split(" | ")[0], comments=True)
            if argv[:1] != ["yoloattn"] or not any(tuple(argv[1 : 1 + len(f)]) == f for f in FAST):
                continue
            nxt = lines[j + 1].strip() if j + 1 < len(lines) else ""
            error = nxt.split(": error: ", 1)[1] if lang == "console" and ": error: " in nxt else None
            found.append((f"{doc.name}:{i + 1}", argv[1:], error))
    return found


def test_fast_shell_examples_in_the_docs_run(tmp_path, monkeypatch, capsys):
    from yoloattn.cli import main

    examples = _doc_examples()
    assert len(examples) >= 10 and any(a[0] == "modules" for _, a, _ in examples)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "src").symlink_to(ROOT / "src")  # the docs' repo-relative paths (the demo data)
    ran = 0
    for where, argv, error in examples:
        inputs = [
            a
            for k, a in enumerate(argv)
            if (a.endswith((".yaml", ".safetensors")) or "/" in a) and argv[k - 1] not in ("--save", "-o")
        ]
        if any(not Path(a).exists() for a in inputs):
            continue  # a file of the reader's own (data.yaml, runs/train/exp)
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = int(e.code or 0)
        out = capsys.readouterr()
        if error is None:
            assert rc == 0, f"{where}: yoloattn {' '.join(argv)} failed:\n{out.err[-2000:]}"
        else:
            assert rc != 0 and error[:60] in out.err, f"{where}: expected error {error!r}, got:\n{out.err}"
        ran += 1
    assert ran >= 10
