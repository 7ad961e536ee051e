"""``rmserve serve`` and the one-shot client commands ``rmserve score`` / ``rmserve prefer``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import Any

import grpc

from rmserve.artifact import ArtifactError
from rmserve.cli_args import add_settings_arguments, settings_from_args
from rmserve.security import TlsConfigError
from rmserve.server import RewardServer
from rmserve.settings import ServerSettings
from rmserve.v1 import reward_pb2, reward_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_TARGET = "localhost:50051"


def serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(ServerSettings, args)
    try:
        asyncio.run(RewardServer(settings).run())
    except (ArtifactError, TlsConfigError) as e:
        print(f"rmserve serve: {e}", file=sys.stderr)
        return 1
    return 0


def _call(args: argparse.Namespace, method: str, request: Any) -> Any:
    with grpc.insecure_channel(args.target) as channel:
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        return getattr(stub, method)(request, timeout=args.timeout)


def _print_or_fail(args: argparse.Namespace, method: str, request: Any) -> int:
    try:
        reply = _call(args, method, request)
    except grpc.RpcError as e:
        print(f"rmserve {args.command}: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    if method == "Score":
        out = {
            "reward": reply.reward,
            "truncated": reply.truncated,
            "response_truncated": reply.response_truncated,
            "num_tokens": reply.num_tokens,
            "model_version": reply.model_version,
        }
    else:
        r = reply.result
        out = {
            "probability_a": r.probability_a,
            "reward_a": r.reward_a,
            "reward_b": r.reward_b,
            "truncated_a": r.truncated_a,
            "truncated_b": r.truncated_b,
            "model_version": reply.model_version,
        }
    print(json.dumps(out))
    return 0


def score(args: argparse.Namespace) -> int:
    request = reward_pb2.ScoreRequest(
        prompt=args.prompt, response=args.response, normalize=args.normalize
    )
    return _print_or_fail(args, "Score", request)


def prefer(args: argparse.Namespace) -> int:
    request = reward_pb2.PreferRequest(
        prompt=args.prompt, response_a=args.response_a, response_b=args.response_b
    )
    return _print_or_fail(args, "Prefer", request)


def _client_arguments(parser: argparse.ArgumentParser) -> None:
    target = os.environ.get("RMSERVE_CLIENT_TARGET", DEFAULT_TARGET)
    parser.add_argument(
        "--target",
        default=target,
        help=f"server HOST:PORT [env RMSERVE_CLIENT_TARGET; default {DEFAULT_TARGET}]",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline in seconds [30]")
    parser.add_argument("--prompt", required=True, help="the prompt (may be empty)")


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

    p = subparsers.add_parser("score", help="score one (prompt, response) pair; prints JSON")
    _client_arguments(p)
    p.add_argument("--response", required=True, help="the response (may be empty)")
    p.add_argument(
        "--normalize", action="store_true", help="return (r - mean) / std from the manifest"
    )
    p.set_defaults(handler=score)

    p = subparsers.add_parser("prefer", help="P(response A preferred to response B); prints JSON")
    _client_arguments(p)
    p.add_argument("--response-a", required=True, help="first response (may be empty)")
    p.add_argument("--response-b", required=True, help="second response (may be empty)")
    p.set_defaults(handler=prefer)
