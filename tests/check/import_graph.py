"""The package's import graph, read from source with `ast` (nothing is imported).

Every `import` and `from ... import` counts, at module level or inside a function,
under `if TYPE_CHECKING` or not: an in-function import is still a dependency, it only
runs later. Edges go to the most specific module named: `from kmr_dsl.runtime import
meters` is an edge to `kmr_dsl.runtime.meters` unless the package's `__init__` binds
`meters` itself; `from kmr_dsl.verify import verify` is an edge to the package
`kmr_dsl.verify` (its `__init__` binds `verify`).

`stage_of(module)` places a module in the one-way order of docs/design.md;
`violations(graph)` lists every import cycle and every import from a higher stage.
"""

from __future__ import annotations

import ast
from pathlib import Path

# lower first; a module may import its own stage, a lower one, or a leaf
STAGES = ("parse", "core", "check", "verify", "runtime", "search", "app", "cli")

# shared leaf modules: importable from every stage, and import only other leaves
LEAVES = {"kmr_dsl", "kmr_dsl.diagnostics", "kmr_dsl.units", "kmr_dsl.resources", "kmr_dsl.outcome",
          "kmr_dsl.patterns", "kmr_dsl.trust"}

# module (or package) prefix -> stage; the longest matching prefix wins
PLACES = {
    "kmr_dsl.parse": "parse", "kmr_dsl.ast": "parse", "kmr_dsl.fmt": "parse",
    # model facts speak the core's state vocabulary; every stage above parse reads them
    "kmr_dsl.core": "core", "kmr_dsl.artifact_layout": "core", "kmr_dsl.artifact_recipe": "core",
    "kmr_dsl.facts": "core",
    "kmr_dsl.check": "check",
    "kmr_dsl.verify": "verify",
    "kmr_dsl.runtime": "runtime", "kmr_dsl.rules": "runtime",
    "kmr_dsl.search": "search", "kmr_dsl.proptest": "search",
    # the commands: the application layer's entry points, kept beside the stage they drive
    "kmr_dsl.app": "app", "kmr_dsl.settings": "app", "kmr_dsl.lsp": "app",
    # kmr import (recipes -> programs; reads the stdlib and grammar through check/parse) and
    # kmr export (artifacts -> ONNX / Hugging Face; drives the runtime)
    "kmr_dsl.importer": "app", "kmr_dsl.export": "app",
    "kmr_dsl.runtime.command": "app", "kmr_dsl.search.command": "app",
    "kmr_dsl.proptest.command": "app", "kmr_dsl.proptest.plugin": "app",
    "kmr_dsl.cli": "cli", "kmr_dsl.__main__": "cli",
}

# packages whose insides are private: other stages import the package itself only
PUBLIC_ONLY = ("kmr_dsl.verify",)


def module_files(root: Path, package: str = "kmr_dsl") -> dict[str, Path]:
    """module name -> file, for every .py file under `root` (the package folder)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = (package, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _bound_names(tree: ast.Module) -> set[str]:
    """Names a module binds at its top level (what `from pkg import name` finds there)."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def import_graph(root: Path, package: str = "kmr_dsl") -> dict[str, set[str]]:
    """module -> the package's modules it imports (anywhere in its body)."""
    files = module_files(root, package)
    trees = {name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, path in files.items()}
    bound = {name: _bound_names(tree) for name, tree in trees.items()}

    def known(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, tree in trees.items():
        is_package = files[name].name == "__init__.py"
        here = name if is_package else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    if sub in files and alias.name not in bound.get(source, set()):
                        targets.add(sub)
                    else:
                        targets.add(source)
        graph[name] = {m for m in (known(t) for t in targets if t.split(".")[0] == package)
                       if m is not None and m != name}
    return graph


def stage_of(module: str) -> str | None:
    """The module's stage, or None for a shared leaf."""
    if module in LEAVES:
        return None
    best = max((p for p in PLACES if module == p or module.startswith(p + ".")), key=len, default=None)
    if best is None:
        raise KeyError(f"{module} has no stage: add it to PLACES (and to docs/design.md)")
    return PLACES[best]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Every import that goes against the stage order, or into a private package."""
    order = {s: i for i, s in enumerate(STAGES)}
    out = []
    for module, targets in sorted(graph.items()):
        mine = stage_of(module)
        for target in sorted(targets):
            theirs = stage_of(target)
            if mine is None and theirs is not None:
                out.append(f"{module} (a shared leaf) imports {target} ({theirs})")
            elif mine is not None and theirs is not None and order[theirs] > order[mine]:
                out.append(f"{module} ({mine}) imports {target} ({theirs}), a higher stage")
            for private in PUBLIC_ONLY:
                inside = target.startswith(private + ".")
                if inside and not (module == private or module.startswith(private + ".")):
                    out.append(f"{module} imports {target}: use the public `{private}` API")
    return out
