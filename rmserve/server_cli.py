"""``rmserve serve``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from rmserve.artifact import ArtifactError
from rmserve.cli_args import add_settings_arguments, settings_from_args
from rmserve.memory_budget import MemoryTooSmall
from rmserve.security import TlsConfigError
from rmserve.server import RewardServer
from rmserve.settings import ServerSettings

log = logging.getLogger(__name__)


def serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(ServerSettings, args)
    try:
        asyncio.run(RewardServer(settings).run())
    except (ArtifactError, TlsConfigError, MemoryTooSmall) as e:
        print(f"rmserve serve: {e}", file=sys.stderr)
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve an artifact over gRPC with dynamic batching",
        description="Serve a reward model artifact over gRPC (rmserve.v1.RewardService, "
        "grpc.health.v1, reflection) with Prometheus metrics on their own port. Every flag "
        "also reads its RMSERVE_* environment variable.",
    )
    add_settings_arguments(p, ServerSettings)
    p.set_defaults(handler=serve)
