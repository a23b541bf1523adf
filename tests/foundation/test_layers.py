"""Imports go only downward, between apps and between modules: no circles anywhere.

Layers: config and core (0) ← departments (1) ← agents, inboxes (2) ← conversations (3). Inside
the layers, modules form no circle of imports, counting imports inside functions, and only
the tasks package imports the tasks package (domain code enqueues by name, conversations.enqueue).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYER = {"config": 0, "core": 0, "departments": 1, "agents": 2, "inboxes": 2, "conversations": 3}
# Both layer 0: core's machinery uses config's Redis client and settings; config never imports core.
SAME_LAYER_ALLOWED = {("core", "config")}
TASKS = "conversations.tasks"


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, name: str) -> set[str]:
    """Every module `path` imports, anywhere in it (inside functions too), as dotted names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def import_graph(root: Path, packages: list[str]) -> dict[str, set[str]]:
    """Module → the project modules it imports (a name that is not a module counts as its package)."""
    paths = {module_name(root, path): path for package in packages for path in sorted((root / package).rglob("*.py"))
             if "migrations" not in path.parts}
    graph = {}
    for name, path in paths.items():
        targets = set()
        for imported in imported_modules(path, name):
            while imported and imported not in paths:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected groups of more than one module (Tarjan), leaving out
    a package whose __init__ imports its own submodules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return [group for group in found if not all(m == group[0] or m.startswith(group[0] + ".") for m in group)]


def _modules():
    for app in LAYER:
        for path in sorted((ROOT / app).rglob("*.py")):
            if "migrations" not in path.parts:
                yield app, path


@pytest.mark.parametrize(("app", "path"), list(_modules()), ids=lambda v: str(v).replace(str(ROOT) + "/", ""))
def test_no_module_imports_a_higher_or_sibling_layer(app, path):
    # config wires the apps together at the top (URLs, ASGI routing) and is exempt for those files.
    if app == "config" and path.name in {"urls.py", "routing.py", "asgi.py"}:
        return
    for imported in {name.split(".")[0] for name in imported_modules(path, module_name(ROOT, path))} & set(LAYER):
        if imported == app or (app, imported) in SAME_LAYER_ALLOWED:
            continue
        assert LAYER[imported] < LAYER[app], f"{path.relative_to(ROOT)} imports {imported} (layer {LAYER[imported]})"


def test_no_two_modules_import_each_other_anywhere():
    assert circles(import_graph(ROOT, list(LAYER))) == []


def test_only_the_tasks_package_imports_tasks():
    graph = import_graph(ROOT, list(LAYER))
    importers = {module for module, targets in graph.items() if any(t == TASKS or t.startswith(TASKS + ".")
                                                                   for t in targets)}
    assert {module for module in importers if not module.startswith(TASKS)} == set()


def test_the_check_finds_a_circle_made_through_an_import_inside_a_function(tmp_path):
    package = tmp_path / "shop"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "orders.py").write_text("from shop.invoices import total\n")
    (package / "invoices.py").write_text("def total():\n    from shop import orders\n    return orders\n")
    (package / "catalogue.py").write_text("from . import invoices\n")

    assert circles(import_graph(tmp_path, ["shop"])) == [["shop.invoices", "shop.orders"]]


def test_the_check_passes_a_package_that_imports_only_downward(tmp_path):
    package = tmp_path / "shop"
    package.mkdir()
    (package / "__init__.py").write_text("from shop import orders\n")
    (package / "orders.py").write_text("from .invoices import total\n")
    (package / "invoices.py").write_text("import json\n")

    assert circles(import_graph(tmp_path, ["shop"])) == []
