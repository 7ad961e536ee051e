"""Training commands without the ``train`` extra say what to install."""

from __future__ import annotations

import sys

import pytest

from rmserve_training import commands


def test_missing_torch_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(SystemExit) as exc:
        commands.require_training_extra("train")
    message = str(exc.value)
    assert "rmserve train needs the training extra: pip install 'rmserve[train]'" in message
    assert "torch" in message


def test_train_command_checks_the_extra_before_training(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    import argparse

    monkeypatch.setitem(sys.modules, "transformers", None)
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "--train-data", "t", "--eval-data", "e", "--out", "o"])
    with pytest.raises(SystemExit, match=r"pip install 'rmserve\[train\]'"):
        args.handler(args)


@pytest.mark.parametrize("module", commands.TRAIN_EXTRA_MODULES)
def test_each_required_module_is_checked(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    commands.require_training_extra("train")  # all present (the dev venv has the extra): passes
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(SystemExit, match=rf"could not import {module}\)"):
        commands.require_training_extra("export")


def test_checked_modules_are_the_extras_own() -> None:
    """Every checked module comes from a distribution the ``train`` extra installs."""
    import importlib.metadata
    import re

    extra = {
        re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        for requirement in importlib.metadata.requires("rmserve") or []
        if 'extra == "train"' in requirement
    }
    providers = importlib.metadata.packages_distributions()
    for module in commands.TRAIN_EXTRA_MODULES:
        owners = {name.lower().replace("_", "-") for name in providers.get(module, [])}
        assert owners & extra, (module, owners, sorted(extra))


def test_commands_module_imports_without_torch() -> None:
    import subprocess

    code = (
        "import sys; sys.modules['torch'] = None; "
        "import rmserve_training.commands, rmserve_training.settings; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
