"""The dependency rule of ARCHITECTURE.md, enforced by walking every import.

`messages` and `hsm` are pure: no event loop, no sockets, no database, and
nothing from the I/O packages. `ledger` never reaches up into `switch`.
`benchmarks` never reaches into ledger internals.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN: dict[str, set[str]] = {
    "messages": {"asyncio", "socket", "asyncpg", "switch", "ledger", "selectors", "ssl", "uvloop",
                 "sqlalchemy", "psycopg"},
    "hsm": {"asyncio", "socket", "asyncpg", "switch", "ledger", "selectors", "ssl", "uvloop",
            "sqlalchemy", "psycopg"},
    "ledger": {"switch"},
}


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_import_rule(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"package {package} has no modules"
    offences = []
    for path in files:
        bad = imported_top_levels(path) & FORBIDDEN[package]
        if bad:
            offences.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offences, "\n".join(offences)


def test_benchmarks_use_no_ledger_internals() -> None:
    offences = []
    for path in sorted((ROOT / "benchmarks").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                parts = node.module.split(".")
                if parts[0] == "ledger" and len(parts) > 1 and parts[1].startswith("_"):
                    offences.append(f"{path.relative_to(ROOT)} imports {node.module}")
    assert not offences, "\n".join(offences)


def test_rule_detects_a_violation(tmp_path: Path) -> None:
    # The walker itself must be able to fail.
    sample = tmp_path / "sample.py"
    sample.write_text("import asyncio\nfrom ledger.store import x\n", encoding="utf-8")
    assert imported_top_levels(sample) == {"asyncio", "ledger"}
