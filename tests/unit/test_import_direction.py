"""Imports point one way: training depends on rmserve, never the reverse, and the server never
imports torch. Every import in rmserve/ counts, including ones inside functions, and so does a
string that is such a module's name (what ``importlib.import_module`` would be given)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "rmserve"
FORBIDDEN = ("rmserve_training", "torch")


def imported_names(source: str) -> list[str]:
    """Every module name ``source`` imports, at any depth, and every string constant."""
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.append(node.value)
    return names


def forbidden(name: str) -> bool:
    return any(name == root or name.startswith(root + ".") for root in FORBIDDEN)


@pytest.mark.parametrize(
    "source",
    [
        "import torch",
        "import numpy, torch.nn as nn",
        "from rmserve_training.data import load_preferences",
        "def f():\n    from rmserve_training import commands\n",
        "class C:\n    def m(self):\n        import torch\n",
        "import importlib\nimportlib.import_module('rmserve_training.commands')",
        "__import__('torch')",
        "COMMAND_MODULES = ('rmserve.tools.evaluate', 'rmserve_training.commands')",
    ],
)
def test_the_scan_finds_every_kind_of_import(source: str) -> None:
    assert any(forbidden(name) for name in imported_names(source)), source


def test_the_scan_lets_lookalike_names_through() -> None:
    names = imported_names("import torchvision_free\nfrom rmserve_trainingish import x")
    assert not any(forbidden(name) for name in names)


def test_rmserve_never_imports_training_or_torch() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 10, f"found only {files} under {PACKAGE}"
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}: {name}"
        for path in files
        for name in imported_names(path.read_text(encoding="utf-8"))
        if forbidden(name)
    ]
    assert offenders == []
