"""The layout's one rule, checked: the parts import downwards only.

``cli/``, ``server/``, ``bench/`` and ``sim/`` (the stand-ins) use the rest; nothing else imports
them, so a core can be read, tested and reused without the server around it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parents[2] / "agent"
TOP = ("agent.cli", "agent.server", "agent.bench", "agent.sim")
LOWER = sorted(
    path
    for path in AGENT.rglob("*.py")
    if path.relative_to(AGENT).parts[0] not in ("cli", "server", "bench", "sim", "__main__.py")
)


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", LOWER, ids=lambda p: str(p.relative_to(AGENT)))
def test_no_part_imports_the_server_the_cli_the_bench_or_the_stand_ins(path: Path) -> None:
    upward = sorted(m for m in imported_modules(path) if m.startswith(TOP))
    assert upward == [], f"{path.relative_to(AGENT)} imports {upward}"
