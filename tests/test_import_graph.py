"""No import cycles between the package's modules.

The graph is built from the source with `ast`, not by importing: every
`import` and `from ... import` of every `keras_actloss/**/*.py`, function-level
ones included (a lazy import hides a dependency, it does not remove it).
Relative imports are resolved against the importing module's package.

Edges:
- `import keras_actloss.a.b` and `from keras_actloss.a import b` (`b` a
  module) point at `keras_actloss.a.b`.
- `from keras_actloss.a import name` (`name` not a module) points at what
  `keras_actloss/a/__init__.py` re-exports `name` from (followed through
  re-exports), or at `keras_actloss.a` itself when the name is defined there.
- The parent packages Python initializes on the way (`keras_actloss`,
  `keras_actloss.a`) are not edges: a package's `__init__` importing its own
  submodules is how a package exports them, and would otherwise put every
  module on a cycle through `keras_actloss/__init__.py`.

A cycle is a strongly connected component of two or more modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "keras_actloss"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources(root: Path) -> dict[str, tuple[Path, ast.Module]]:
    return {
        _module_name(p, root): (p, ast.parse(p.read_text("utf-8"), str(p)))
        for p in sorted(root.rglob("*.py"))
    }


def _base(module: str, path: Path, node: ast.ImportFrom) -> str | None:
    """The absolute module named by a `from X import ...` statement."""
    if node.level == 0:
        return node.module
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _reexports(sources) -> dict[str, dict[str, str]]:
    """`{package: {name: module it is imported from}}` of each `__init__`."""
    out: dict[str, dict[str, str]] = {}
    for module, (path, tree) in sources.items():
        if path.name != "__init__.py":
            continue
        names = out.setdefault(module, {})
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                base = _base(module, path, node)
                for alias in node.names:
                    names[alias.asname or alias.name] = f"{base}.{alias.name}"
    return out


def _resolve(target: str, modules, reexports, seen=()) -> str | None:
    """The package module `target` (a module or `package.name`) stands for."""
    if target in modules:
        return target
    package, _, name = target.rpartition(".")
    if package not in modules:
        return None  # Not ours (keras, numpy, ...).
    source = reexports.get(package, {}).get(name)
    if source is None or source in seen:
        return package  # Defined in the package's `__init__`.
    return _resolve(source, modules, reexports, (*seen, source)) or package


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """`{module: modules it imports}` over the whole package at `root`."""
    sources = _sources(root)
    modules = set(sources)
    reexports = _reexports(sources)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, (path, tree) in sources.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _base(module, path, node)
                if not base or not (base == PACKAGE or base.startswith(PACKAGE + ".")):
                    continue
                targets = [f"{base}.{a.name}" for a in node.names]
                if any(a.name == "*" for a in node.names):
                    targets = [base]
            else:
                continue
            for target in targets:
                resolved = _resolve(target, modules, reexports)
                if resolved and resolved != module:
                    graph[module].add(resolved)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of two or more modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _path(graph, component: list[str]) -> list[str]:
    """One cycle through the component's first module, for the message."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & members):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    return component


def test_graph_sees_relative_function_level_and_reexported_imports():
    graph = import_graph()
    # Module-level absolute imports.
    assert "keras_actloss.logs.tags" in graph["keras_actloss.logs.reader"]
    # Re-exports are followed to the defining module: `from
    # keras_actloss.callbacks import GradientDiagnostics` is a dependency on
    # `callbacks.gradient_diagnostics`, not on everything `callbacks` exports.
    assert "keras_actloss.callbacks.gradient_diagnostics" in graph["keras_actloss.demo"]
    assert "keras_actloss.callbacks" not in graph["keras_actloss.demo"]
    # A package's `__init__` points at the submodules it exports.
    assert "keras_actloss.logs.downsample" in graph["keras_actloss.tensorboard_plugin"]


def test_the_toy_graph_finds_its_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert _path(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]


def test_finds_a_cycle_through_a_relative_function_level_import(tmp_path):
    # The shape of the old `cli` <-> `demo` cycle: `a` imports `b` inside a
    # function, relatively; `b` imports a name `a` defines, through the
    # package's re-export.
    package = tmp_path / PACKAGE
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from keras_actloss.sub.a import run\n")
    (package / "sub" / "__init__.py").write_text("from .a import run\n")
    (package / "sub" / "a.py").write_text("def run():\n    from . import b\n")
    (package / "sub" / "b.py").write_text("from keras_actloss.sub import run\n")
    (package / "c.py").write_text("import keras_actloss.sub.b\nimport numpy\n")
    graph = import_graph(package)
    assert graph == {
        "keras_actloss": {"keras_actloss.sub.a"},
        "keras_actloss.sub": {"keras_actloss.sub.a"},
        "keras_actloss.sub.a": {"keras_actloss.sub.b"},
        "keras_actloss.sub.b": {"keras_actloss.sub.a"},
        "keras_actloss.c": {"keras_actloss.sub.b"},
    }
    assert cycles(graph) == [["keras_actloss.sub.a", "keras_actloss.sub.b"]]


def test_no_import_cycles():
    graph = import_graph()
    found = [" -> ".join(_path(graph, c)) for c in cycles(graph)]
    if found:
        pytest.fail("Import cycles between modules:\n" + "\n".join(found))
