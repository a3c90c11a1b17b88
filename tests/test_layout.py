"""The layering of casa's packages, kept true: cli -> bench -> facility -> compute -> data.

Every import is counted, lazy ones inside functions included, and so are plug-in targets written
as ``"module:attr"`` strings (the path registry, entry points resolved at run time): a module
that loads another by name depends on it as much as one that imports it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: lower layers never import higher ones
LAYERS = ["casa_data", "casa_compute", "casa_facility", "casa_bench", "casa_cli"]
#: modules allowed to name a higher layer in a string (the deprecated-alias table)
STRING_ONLY_EXEMPT = {"casa_data._moved"}
_TARGET = re.compile(r"^(casa_[a-z_]+(?:\.[A-Za-z_][\w]*)*)(?::[\w.]+)?$")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in LAYERS:
        for f in (ROOT / pkg).rglob("*.py"):
            parts = f.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = f
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module ``name`` refers to (a module, or an attribute of one)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(mod: str, path: Path) -> dict[str, int]:
    """Project modules ``mod`` imports (or names as a plug-in target), with a line number each."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    found: dict[str, int] = {}

    def add(name: str, line: int) -> None:
        target = _resolve(name)
        if target and target != mod:
            found.setdefault(target, line)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                add(a.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            for a in node.names:
                add(f"{origin}.{a.name}", node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and mod not in STRING_ONLY_EXEMPT:
            m = _TARGET.match(node.value)
            if m and ":" in node.value:
                add(m.group(1), node.lineno)
    return found


GRAPH = {mod: _imports(mod, path) for mod, path in MODULES.items()}


def _layer(mod: str) -> int:
    return LAYERS.index(mod.split(".")[0])


def test_no_upward_import():
    upward = [f"{MODULES[m].relative_to(ROOT)}:{line} imports {t}"
              for m, deps in GRAPH.items() for t, line in deps.items() if _layer(t) > _layer(m)]
    assert not upward, "imports go cli -> bench -> facility -> compute -> data only:\n" + "\n".join(upward)


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    cycles = _cycles()
    assert not cycles, "import cycles (lazy imports and plug-in strings included):\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("mod", ["casa_data.errors", "casa_data.extras"])
def test_graph_sees_modules(mod):
    """The walk finds the project's modules (a guard against a test that checks nothing)."""
    assert mod in GRAPH and len(GRAPH) > 80
