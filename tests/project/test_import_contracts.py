"""The layers' import rules ([tool.importlinter] in pyproject.toml) hold, and lint-imports, which
scripts/test.sh runs, fails when a commit adds an upward import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.scripts_loader import ROOT

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports over the packages under ``root`` with ``root``'s pyproject.toml."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for folder in ("rmserve", "rmserve_training"):
        shutil.copytree(
            ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def add_import(module: Path, line: str) -> None:
    text = module.read_text()
    head = "from __future__ import annotations\n"
    assert head in text, module
    module.write_text(text.replace(head, f"{head}\n{line}\n", 1))


def test_the_contracts_hold(tree: Path) -> None:
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        (
            "rmserve/text/preprocess.py",
            "import rmserve.serving.core",
            "layers import only downwards",
        ),
        (
            "rmserve/serving/core.py",
            "import rmserve.server.settings",
            "layers import only downwards",
        ),
        ("rmserve/serving/core.py", "import grpc", "knows no protocol"),
        ("rmserve/client/plan.py", "import rmserve.engine.session", "client needs no server code"),
        ("rmserve/engine/session.py", "import rmserve_training.commands", "never imports torch"),
        (
            "rmserve_training/model/backbones.py",
            "import rmserve_training.train.loop",
            "rmserve_training's packages",
        ),
    ],
)
def test_an_upward_import_breaks_a_contract(
    tree: Path, module: str, line: str, contract: str
) -> None:
    add_import(tree / module, line)
    result = lint_imports(tree)
    assert result.returncode != 0, result.stdout
    broken = [row for row in result.stdout.splitlines() if row.endswith("BROKEN")]
    assert len(broken) >= 1 and any(contract in row for row in broken), result.stdout
