"""The ``rmserve`` command. Each subcommand lives in its own module and registers itself;
nothing here imports torch, so serving works without the training extra."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

# Modules exposing ``register(subparsers)``; each adds its subcommands with a ``handler``.
COMMAND_MODULES = (
    "rmserve.tools.evaluate",  # eval
    "rmserve.server.cli",  # serve
    "rmserve.client.cli",  # score, prefer
    "rmserve.tools.loadtest_cli",  # loadtest
)
# Other packages add subcommands through this entry-point group: each entry names a
# ``register(subparsers)`` function (the training commands are declared in pyproject.toml).
COMMAND_GROUP = "rmserve.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rmserve", description="Train, export and serve Bradley-Terry reward models."
    )
    parser.add_argument("--log-level", default="INFO", help="Python logging level (stderr).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for entry in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        entry.load()(sub)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    result = args.handler(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
