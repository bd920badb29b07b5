"""The import graph of the package: ``layers`` <- ``sambay`` <- ``reasoning``, nothing importing
upward and no module importing itself through others. Every import counts, those inside
functions included (a lazy import that closes a cycle is still a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("layers", "sambay", "reasoning")
RANK = {name: i for i, name in enumerate(PACKAGES)}  # a package may import those of lower rank


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports, anywhere in the file, relative imports resolved.
    ``from a import b`` counts as importing ``a.b`` when that is a module, else ``a``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str) -> None:
        while target and target not in known:  # a name inside a module: the module
            target = target.rpartition(".")[0]
        if target:
            found.add(target)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    found.discard(name)  # ``from . import x`` in a package's __init__ names the package itself
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_graph_sees_every_kind_of_import():
    """The checker itself: relative, absolute, ``from . import x`` and imports inside functions."""
    edges = graph()
    assert "sambay.causal_lm" in edges["sambay.model"]  # from .causal_lm import CausalLM
    assert "layers.backends" in edges["sambay.causal_lm"]  # from layers import backends
    assert "sambay.generate" in edges["reasoning.engine"]  # absolute, from reasoning/
    assert "layers.attention_triton" in edges["layers.attention"]  # imported inside a function
    assert "reasoning.tokenizer.tokenizer" in edges["reasoning.tokenizer.loading"]  # in a subpackage
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_nothing_imports_upward():
    upward = sorted(f"{name} imports {target}" for name, targets in graph().items() for target in targets
                    if RANK[target.split(".")[0]] > RANK[name.split(".")[0]])
    assert not upward, "layers <- sambay <- reasoning:\n" + "\n".join(upward)


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
