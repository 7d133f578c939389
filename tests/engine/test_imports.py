"""The engine's import graph: no circles between its files, nothing from the layers above."""

from __future__ import annotations

import ast
from pathlib import Path

import yoloattn.engine

ENGINE = Path(yoloattn.engine.__file__).parent
PKG = "yoloattn.engine"


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (top level or inside functions), as dotted names."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def engine_graph() -> dict[str, set[str]]:
    """``{module: engine modules it imports}`` for the files of ``yoloattn/engine``."""
    mods = {p.stem for p in ENGINE.glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {}
    for m in sorted(mods):
        deps = {
            i[len(PKG) + 1 :].split(".")[0] for i in _imports(ENGINE / f"{m}.py") if i.startswith(PKG + ".")
        }
        graph[m] = (deps & mods) - {m}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (``[a, b, ..., a]``), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return path[path.index(w) :] + [w]
            if w not in state and (found := visit(w)):
                return found
        path.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_find_cycle_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_engine_has_no_import_circle():
    graph = engine_graph()
    assert {"trainer", "setup", "checkpoint", "runs", "metrics", "plots"} <= graph.keys()
    assert "metrics" in graph["plots"] and "plots" not in graph["metrics"]  # metrics return data
    assert find_cycle(graph) is None, f"import circle in yoloattn.engine: {find_cycle(graph)}"


def test_engine_imports_no_higher_layer():
    for path in sorted(ENGINE.glob("*.py")):
        up = sorted(i for i in _imports(path) if i.startswith(("yoloattn.cli", "yoloattn.experiments")))
        assert not up, f"{path.name} imports {up} (engine sits below experiments and cli)"
