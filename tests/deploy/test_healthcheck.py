"""``python -m rmserve.server.healthcheck``, the Dockerfile's HEALTHCHECK: exit 0 only when SERVING.

Every status is checked against a grpc.health.v1 server whose answers the test sets; the live
rmserve checks are in test_live_server.py."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from rmserve.server import healthcheck
from tests.support.live import run_entry_point

SERVICE = "rmserve.v1.RewardService"
Status = health_pb2.HealthCheckResponse


@pytest.fixture()
def health_server() -> Iterator[tuple[str, health.HealthServicer]]:
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(grace=None)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (Status.SERVING, 0),
        (Status.NOT_SERVING, 1),
        (Status.UNKNOWN, 1),
        (Status.SERVICE_UNKNOWN, 1),
    ],
)
def test_exit_code_follows_the_serving_status(
    health_server: tuple[str, health.HealthServicer], status: int, expected: int
) -> None:
    target, servicer = health_server
    servicer.set(SERVICE, status)
    assert healthcheck.main(["--target", target, "--service", SERVICE]) == expected


def test_unknown_service_is_unhealthy(health_server: tuple[str, health.HealthServicer]) -> None:
    target, servicer = health_server
    servicer.set(SERVICE, Status.SERVING)
    code, message = healthcheck.check(target, "no.such.Service")
    assert code == 1
    assert "NOT_FOUND" in message


def test_unreachable_server_is_unhealthy_within_the_timeout() -> None:
    with socket.socket() as s:  # bound and never listening: nothing else can take the port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        result = run_entry_point("--target", f"127.0.0.1:{port}", "--timeout", "2")
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr or "DEADLINE_EXCEEDED" in result.stderr


def test_entry_point_defaults_to_rmserve_port_on_loopback(
    health_server: tuple[str, health.HealthServicer],
) -> None:
    target, servicer = health_server
    port = target.rsplit(":", 1)[1]
    servicer.set("", Status.SERVING)
    serving = run_entry_point(env={"RMSERVE_PORT": port})
    assert serving.returncode == 0, serving.stderr
    assert f"127.0.0.1:{port}" in serving.stdout and "SERVING" in serving.stdout
    servicer.set("", Status.NOT_SERVING)
    not_serving = run_entry_point(env={"RMSERVE_PORT": port})
    assert not_serving.returncode == 1
    assert "NOT_SERVING" in not_serving.stderr


def test_rejects_a_non_positive_timeout() -> None:
    with pytest.raises(SystemExit):
        healthcheck.main(["--timeout", "0"])
