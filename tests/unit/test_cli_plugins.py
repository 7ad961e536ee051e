"""``rmserve`` finds subcommands of other packages through the ``rmserve.commands``
entry-point group; the serving package never names them."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pytest

from rmserve import cli


@dataclass
class FakeEntryPoint:
    name: str
    register: Any

    def load(self) -> Any:
        return self.register


def subcommand_names(parser: argparse.ArgumentParser) -> set[str]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(actions[0].choices)


def register_hello(subparsers: Any) -> None:
    subparsers.add_parser("hello").set_defaults(handler=lambda args: 7)


def use_entry_points(monkeypatch: pytest.MonkeyPatch, found: list[FakeEntryPoint]) -> None:
    def fake(group: str) -> list[FakeEntryPoint]:
        assert group == cli.COMMAND_GROUP
        return found

    monkeypatch.setattr(cli, "entry_points", fake)


def test_a_registered_entry_point_adds_its_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    use_entry_points(monkeypatch, [FakeEntryPoint("hello", register_hello)])
    assert "hello" in subcommand_names(cli.build_parser())
    assert cli.main(["hello"]) == 7


def test_without_training_entry_points_only_serving_commands_remain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_entry_points(monkeypatch, [])
    names = subcommand_names(cli.build_parser())
    assert {"eval", "serve", "score", "prefer", "loadtest"} <= names
    assert not names & {"demo-data", "train", "ensemble", "export", "import-hf", "quantize"}


def test_the_training_commands_are_declared_as_an_entry_point() -> None:
    declared = {e.value for e in entry_points(group=cli.COMMAND_GROUP)}
    assert "rmserve_training.commands:register" in declared
