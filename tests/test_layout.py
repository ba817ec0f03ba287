"""The import graph: no cycles, and imports point one way.

`nas` -> `predictors` -> `search_spaces` between the packages, and inside `nas` from a layer to the
layers below it (the order of `NAS_LAYERS`), never up. Read from the source (every import
statement, function bodies included), so a cycle hidden inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("search_spaces", "predictors", "nas")  # a package may import only those before it, and itself
# inside nas, lowest first: a module may import its own layer and the layers before it
NAS_LAYERS = ("errors", "runs", "data", "hardware", "evaluation", "training", "finish", "search", "cluster", "ablate", "cli")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports (an imported name that is a module counts as that module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import a.b.c` of a name inside a module: the module
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _layer(module: str) -> tuple[int, int]:
    top, _, rest = module.partition(".")
    inner = NAS_LAYERS.index(rest.split(".")[0]) if top == "nas" and rest else len(NAS_LAYERS)
    return PACKAGES.index(top), inner


def test_every_nas_module_belongs_to_a_layer():
    stray = [m for m in _modules() if m.startswith("nas.") and m.split(".")[1] not in NAS_LAYERS
             and m != "nas.__main__"]
    assert not stray, f"modules of nas outside the layers {NAS_LAYERS}: {stray}"


def test_imports_point_one_way():
    upward = [f"{m} -> {t}" for m, targets in _graph().items() for t in targets
              if m not in ("nas", "nas.__main__") and _layer(t) > _layer(m)]
    assert not upward, "imports pointing up the layers:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("package", ["search_spaces", "predictors"])
def test_lower_packages_do_not_import_nas(package):
    bad = [f"{m} -> {t}" for m, targets in _graph().items() if m.split(".")[0] == package
           for t in targets if t.split(".")[0] == "nas"]
    assert not bad, bad
