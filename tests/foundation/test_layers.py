"""The apps import only downward: departments ← agents, inboxes ← conversations. No circles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYER = {"config": 0, "departments": 1, "agents": 2, "inboxes": 2, "conversations": 3}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _modules():
    for app in LAYER:
        for path in sorted((ROOT / app).rglob("*.py")):
            if "migrations" not in path.parts:
                yield app, path


@pytest.mark.parametrize(("app", "path"), list(_modules()), ids=lambda v: str(v).replace(str(ROOT) + "/", ""))
def test_no_module_imports_a_higher_or_sibling_layer(app, path):
    allowed_same_layer = {app}
    # config wires the apps together at the top (URLs, ASGI routing) and is exempt for those two files.
    if app == "config" and path.name in {"urls.py", "routing.py", "asgi.py"}:
        return
    for imported in _imports(path) & set(LAYER):
        if imported in allowed_same_layer:
            continue
        assert LAYER[imported] < LAYER[app], f"{path.relative_to(ROOT)} imports {imported} (layer {LAYER[imported]})"
