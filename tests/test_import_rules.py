"""The import rules of DESIGN.md: imports only point down the layer table."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("store", "modeling", "proxy", "evolver", "trainer", "molt", "bench")
ALLOWED = {
    "store": set(),
    "modeling": {"store"},
    "proxy": {"store", "modeling"},
    "evolver": {"store"},
    "trainer": {"store", "modeling"},
    "molt": set(PACKAGES),
    "bench": set(PACKAGES),
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_packages_import_only_downwards() -> None:
    problems = []
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            for imported in _imports(path) & set(PACKAGES):
                if imported != pkg and imported not in ALLOWED[pkg]:
                    problems.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert not problems, "\n".join(problems)


def test_nothing_reads_settings_at_import() -> None:
    """No module builds settings, engines or clients at import time."""
    import importlib

    for pkg in ("store", "proxy", "molt"):
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            if name.endswith("__main__"):
                continue
            importlib.import_module(name)
    import store.settings as s

    assert not [v for v in vars(s).values() if isinstance(v, s.MoltSettings)]
