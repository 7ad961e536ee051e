"""Every subcommand's --help renders: flags are built from settings docs, which argparse
%-formats, so a stray '%' in a field description would crash `rmserve CMD --help`."""

from __future__ import annotations

import argparse

import pytest

from rmserve.cli import build_parser


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices)


def test_all_commands_are_registered() -> None:
    expected = {"demo-data", "train", "ensemble", "export", "import-hf", "quantize", "eval"}
    expected |= {"serve", "score", "prefer"}
    assert expected | {"loadtest"} <= set(subcommands())


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_help_renders(name: str) -> None:
    text = subcommands()[name].format_help()
    assert text.startswith("usage: ")


def test_percent_in_a_setting_description_is_shown_literally() -> None:
    help_text = subcommands()["serve"].format_help()
    assert "served 8% more tokens/s" in " ".join(help_text.split())  # max_padding_ratio
