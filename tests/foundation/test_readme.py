"""The README's settings table names every environment variable the code reads."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Read by the test fixtures or the run command's plumbing, not settings a user sets.
INTERNAL = {"DJANGO_SETTINGS_MODULE", "PYTHON", "CI"}


def _variables_read_by_the_code() -> set[str]:
    names = set()
    pattern = re.compile(
        r"""(?:env_(?:str|bool|int|list)|os\.environ\.get|os\.environ\.setdefault|getenv)\(\s*["']([A-Z][A-Z0-9_]+)["']"""
    )
    for path in ROOT.glob("*/**/*.py"):
        if {".venv", "tests", "benchmarks", "var"} & set(path.relative_to(ROOT).parts):
            continue
        names.update(pattern.findall(path.read_text()))
    return names - INTERNAL


def test_every_setting_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    table = "\n".join(line for line in readme.splitlines() if line.startswith("| `"))
    missing = sorted(name for name in _variables_read_by_the_code() if name not in table)
    assert not missing, f"README's settings table lacks: {missing}"
