"""``rmserve serve``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from rmserve.artifact.manifest import ArtifactError
from rmserve.cli_args import add_settings_arguments, settings_from_args
from rmserve.server.app import RewardServer
from rmserve.server.listeners import ListenError, PortFileError
from rmserve.server.security import TlsConfigError
from rmserve.server.settings import ServerSettings
from rmserve.serving.memory_budget import MemoryTooSmall

log = logging.getLogger(__name__)

EXIT_START_FAILED = 1  # a start-up error, said in one line on stderr
EXIT_PORT_IN_USE = 3  # a port given explicitly is already in use (one line names it)


def run_server(server: RewardServer) -> int:
    """Run ``server`` to the end; its exit code. Start-up errors are one line on stderr."""
    try:
        asyncio.run(server.run())
    except ListenError as e:
        print(f"rmserve serve: {e}", file=sys.stderr)
        return EXIT_PORT_IN_USE if e.in_use else EXIT_START_FAILED
    except (ArtifactError, TlsConfigError, MemoryTooSmall, PortFileError) as e:
        print(f"rmserve serve: {e}", file=sys.stderr)
        return EXIT_START_FAILED
    return 0


def serve(args: argparse.Namespace) -> int:
    return run_server(RewardServer(settings_from_args(ServerSettings, args)))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve an artifact over gRPC with dynamic batching",
        description="Serve a reward model artifact over gRPC (rmserve.v1.RewardService, "
        "grpc.health.v1, reflection) with Prometheus metrics on their own port. Every flag "
        "also reads its RMSERVE_* environment variable. Exit codes: 0 after a stop, "
        f"{EXIT_PORT_IN_USE} when a port is already in use, {EXIT_START_FAILED} on other "
        "start-up errors.",
    )
    add_settings_arguments(p, ServerSettings)
    p.set_defaults(handler=serve)
