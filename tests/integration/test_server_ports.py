"""Ports: the server binds port 0 itself and says which ports it got in the port file; a port
given explicitly and already in use stops `rmserve serve` with exit code 3 and one line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rmserve.server.app import RewardServer
from rmserve.server.cli import EXIT_PORT_IN_USE
from rmserve.server.listeners import ListenError
from rmserve.testing import SERVER_BOUND_S, ServerProcess, start_server
from tests.support.harness import make_settings

session_loop = pytest.mark.asyncio(loop_scope="session")  # like the other in-process servers

# (listener as the error names it, its flag, its key in the port file)
LISTENERS = [
    ("gRPC", "--port", "grpc"),
    ("health", "--health-port", "health"),
    ("HTTP", "--http-port", "http"),
    ("metrics", "--metrics-port", "metrics"),
]


def can_bind(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:port now."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
    return True


@session_loop
async def test_port_file_names_every_bound_port_before_the_model_loads(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    port_file = tmp_path / "ports.json"
    settings = make_settings(tiny_artifact, port_file=port_file, http_port=0, health_port=0)
    server = RewardServer(settings)
    try:
        await server.start()  # binds and writes; load() is never called
        written = json.loads(port_file.read_text())
        assert server.core is None
    finally:
        await server.stop()
    ports = [server.port, server.health_port, server.http_port, server.metrics_port]
    assert all(ports) and len(set(ports)) == 4, ports
    grpc, health, http, metrics = ports
    assert written == {"grpc": grpc, "health": health, "http": http, "metrics": metrics,
                       "pid": os.getpid()}  # fmt: skip
    assert [p.name for p in tmp_path.iterdir()] == ["ports.json"]  # no temporary file left


@session_loop
async def test_port_file_says_null_for_listeners_that_are_off(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    port_file = tmp_path / "ports.json"
    port_file.write_text("an earlier run's ports")
    server = RewardServer(make_settings(tiny_artifact, port_file=port_file))
    try:
        await server.start()
        written = json.loads(port_file.read_text())
    finally:
        await server.stop()
    assert written["health"] is None and written["http"] is None
    assert written["grpc"] == server.port and written["metrics"] == server.metrics_port


@session_loop
async def test_a_busy_port_stops_start_and_stop_frees_the_ports_already_bound(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    port_file = tmp_path / "ports.json"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        settings = make_settings(
            tiny_artifact, port=taken, port_file=port_file, health_port=0, http_port=0
        )
        server = RewardServer(settings)
        try:
            with pytest.raises(ListenError) as raised:
                await server.start()  # gRPC binds last
        finally:
            await server.stop()
    error = raised.value
    assert (error.listener, error.port, error.in_use) == ("gRPC", taken, True)
    assert str(error) == f"cannot listen on 127.0.0.1:{taken} for gRPC: address already in use"
    bound_before = [server.http_port, server.health_port, server.metrics_port]
    assert all(bound_before), bound_before
    assert all(can_bind(port) for port in bound_before), bound_before
    assert not port_file.exists()


@pytest.fixture(scope="module")
def first_server(
    tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server holding a port for each listener, every one of them bound on port 0."""
    log = tmp_path_factory.mktemp("first-server") / "serve.log"
    server = start_server(
        tiny_artifact, log, "--warmup-runs", "0", "--http-port", "0", "--health-port", "0"
    )
    try:
        server.ports()
        yield server
    finally:
        exit_code = server.terminate()
    assert exit_code == 0, server.log_tail()


@pytest.mark.parametrize(("listener", "flag", "key"), LISTENERS)
def test_a_second_server_on_a_busy_port_exits_3_with_one_line(
    first_server: ServerProcess,
    tiny_artifact: Path,
    tmp_path: Path,
    listener: str,
    flag: str,
    key: str,
) -> None:
    port = first_server.ports()[key]
    assert port
    port_file = tmp_path / "ports.json"
    port_file.write_text("an earlier run's ports")
    argv = [
        sys.executable, "-m", "rmserve.cli", "serve",
        "--artifact", str(tiny_artifact), "--host", "127.0.0.1", "--provider", "cpu",
        "--port", "0", "--metrics-port", "0", "--http-port", "0", "--health-port", "0",
        "--port-file", str(port_file), flag, str(port),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("RMSERVE_")}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=SERVER_BOUND_S)
    assert done.returncode == EXIT_PORT_IN_USE == 3, done.stderr
    assert "Traceback" not in done.stderr
    expected = (
        f"rmserve serve: cannot listen on 127.0.0.1:{port} for {listener}: address already in use"
    )
    assert done.stderr.splitlines() == [expected]
    assert not port_file.exists()  # the earlier file went at start-up; no new one was written
    assert first_server.process.poll() is None
    assert first_server.health() is not None  # the first server still answers on its port
