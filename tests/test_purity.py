"""The sans-I/O core imports no asyncio and no I/O library (DESIGN.md §2)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "ekm_async"
PURE = ["_enum", "crc", "errors", "model", "layouts", "blocks", "commands", "frames", "session"]
ALLOWED_STDLIB = {
    "__future__",
    "calendar",
    "collections",
    "dataclasses",
    "datetime",
    "enum",
    "itertools",
    "operator",
    "re",
    "struct",
    "types",
    "typing",
}
ALLOWED_THIRD_PARTY = {"fastcrc"}


def imports_of(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add("." * node.level + node.module)
        elif isinstance(node, ast.ImportFrom):  # from . import x
            names |= {"." * node.level + alias.name for alias in node.names}
    return names


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_only_pure_things(module: str) -> None:
    for name in imports_of(module):
        if name.startswith("."):
            assert name.lstrip(".") in PURE, f"{module} imports {name}"
        else:
            top = name.split(".")[0]
            assert top in ALLOWED_STDLIB | ALLOWED_THIRD_PARTY, f"{module} imports {name}"


def test_the_check_sees_imports() -> None:
    assert "struct" in imports_of("blocks")
    assert ".crc" in imports_of("blocks")
