"""Container health check: one ``grpc.health.v1.Health/Check`` call, exit 0 only when SERVING.

The Dockerfile's ``HEALTHCHECK`` runs ``python -m rmserve.server.healthcheck``, so the image
needs no extra probe binary. By default it asks ``127.0.0.1:$RMSERVE_HEALTH_PORT`` (the plaintext
health-only port), else ``127.0.0.1:$RMSERVE_PORT`` (50051 when unset), about the whole server
(service name ``""``). Any other answer, an unknown service, a timeout or a refused connection
exits 1, which Docker counts as unhealthy.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = 0
NOT_HEALTHY = 1


def default_target() -> str:
    """The plaintext health-only port when set (it stays plaintext under TLS), else the gRPC
    port."""
    port = os.environ.get("RMSERVE_HEALTH_PORT") or os.environ.get("RMSERVE_PORT", "50051")
    return f"127.0.0.1:{port}"


def check(target: str, service: str = "", timeout_s: float = 3.0) -> tuple[int, str]:
    """Return (exit code, one-line description) for one health check of ``service``."""
    try:
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
    except grpc.RpcError as e:
        code = e.code()
        name = code.name if code is not None else "UNKNOWN"
        return NOT_HEALTHY, f"{target} service={service!r}: {name} {e.details() or ''}".rstrip()
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    code = SERVING if reply.status == health_pb2.HealthCheckResponse.SERVING else NOT_HEALTHY
    return code, f"{target} service={service!r}: {status}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rmserve.server.healthcheck",
        description="Exit 0 when the gRPC health service reports SERVING, 1 otherwise.",
    )
    parser.add_argument(
        "--target",
        default=None,
        help="HOST:PORT of the server [default 127.0.0.1:$RMSERVE_PORT, else 127.0.0.1:50051]",
    )
    parser.add_argument(
        "--service",
        default="",
        help="service name to check: '' is the whole server, or rmserve.v1.RewardService",
    )
    parser.add_argument(
        "--timeout", type=float, default=3.0, help="deadline of the check in seconds [3.0]"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.timeout <= 0:
        raise SystemExit("--timeout must be positive")
    code, message = check(args.target or default_target(), args.service, args.timeout)
    print(message, file=sys.stdout if code == SERVING else sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
