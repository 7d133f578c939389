"""The data layer's shape: no import circles, nothing imported from above, docstrings, file sizes."""

from __future__ import annotations

import ast
from pathlib import Path

import yoloattn.data

DATA = Path(yoloattn.data.__file__).parent


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m == "yoloattn" or m.startswith("yoloattn.")}


def test_data_files_import_downward_only_and_without_circles():
    files = {p.stem: p for p in DATA.glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        mods = imports_of(path)
        outside = {m for m in mods if not m.startswith("yoloattn.data.") and m != "yoloattn._io"}
        assert not outside, f"data/{name}.py imports {sorted(outside)}: data/ is a ground-floor layer"
        graph[name] = {m.split(".")[2] for m in mods if m.startswith("yoloattn.data.")}
        assert graph[name] <= set(files), f"data/{name}.py imports unknown {graph[name] - set(files)}"
    done: set[str] = set()

    def visit(node: str, stack: tuple[str, ...]) -> None:
        assert node not in stack, f"import circle: {' -> '.join((*stack, node))}"
        if node in done:
            return
        for dep in graph[node]:
            visit(dep, (*stack, node))
        done.add(node)

    for name in graph:
        visit(name, ())


def test_data_files_have_docstrings_and_stay_small():
    for path in DATA.glob("*.py"):
        text = path.read_text()
        assert ast.get_docstring(ast.parse(text)), f"{path.name} has no module docstring"
        assert len(text.splitlines()) <= 500, f"{path.name} has {len(text.splitlines())} lines (max 500)"
