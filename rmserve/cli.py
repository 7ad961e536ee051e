"""The ``rmserve`` command. Each subcommand lives in its own module and registers itself;
nothing here imports torch, so serving works without the training extra."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# Modules exposing ``register(subparsers)``; each adds its subcommands with a ``handler``.
COMMAND_MODULES = (
    "rmserve_training.commands",  # demo-data, train, export, import-hf (torch imported lazily)
    "rmserve.evaluate",  # eval
    "rmserve.server_cli",  # serve
    "rmserve.client_cli",  # score, prefer
    "rmserve.loadtest_cli",  # loadtest
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rmserve", description="Train, export and serve Bradley-Terry reward models."
    )
    parser.add_argument("--log-level", default="INFO", help="Python logging level (stderr).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
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
