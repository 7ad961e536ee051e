"""Issue 26, the metrics port: 500 idle connections to a real `rmserve serve` neither grow its
threads nor lock Prometheus out, and the server closes them after its idle timeout."""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rmserve.testing import ServerProcess, start_server

BOUND_S = 60.0  # "must not hang" bound on each wait; never a performance target
IDLE_S = 1.0
CAP = 100
IDLE_CONNECTIONS = 500


@pytest.fixture(scope="module")
def server(
    tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("hostile-metrics") / "serve.log"
    served = start_server(
        tiny_artifact, log, "--warmup-runs", "0",
        "--metrics-idle-timeout-seconds", str(IDLE_S),
        "--metrics-max-connections", str(CAP),
    )  # fmt: skip
    try:
        served.wait_serving()
        yield served
    finally:
        exit_code = served.terminate()
    assert exit_code == 0, served.log_tail()


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no Threads: line for {pid}")


def open_sockets(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += fd.readlink().name.startswith("socket:")
        except OSError:
            continue  # closed while listed
    return count


def wait_all_closed(socks: list[socket.socket], timeout: float) -> float:
    """Wait for EOF (or a reset) from the server on every socket; the seconds it took."""
    start = time.monotonic()
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    open_ones = len(socks)
    try:
        while open_ones:
            left = start + timeout - time.monotonic()
            assert left > 0, f"{open_ones} of {len(socks)} still open after {timeout}s"
            for key, _ in selector.select(left):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(4096)
                except ConnectionResetError:
                    data = b""
                assert data == b"", data[:80]  # an idle connection is never sent anything
                selector.unregister(sock)
                open_ones -= 1
    finally:
        selector.close()
    return time.monotonic() - start


def test_500_idle_connections_keep_threads_bounded_and_are_closed_after_the_idle_timeout(
    server: ServerProcess,
) -> None:
    pid = server.process.pid
    server.scrape()
    threads_before, sockets_before = threads(pid), open_sockets(pid)
    socks = [
        socket.create_connection(("127.0.0.1", server.metrics_port), timeout=BOUND_S)
        for _ in range(IDLE_CONNECTIONS)
    ]
    try:
        # Prometheus still gets its answer while they are held: the newest connection is
        # accepted after them all and answered (the cap closes the ones idle longest).
        page = server.scrape()
        assert "rmserve_queue_pairs" in page
        held_threads, held_sockets = threads(pid), open_sockets(pid)
        # One loop thread serves every connection (prometheus-client's server: one each).
        assert held_threads <= threads_before + 1, (threads_before, held_threads)
        # (+1: the scrape's connection, closed by the client, may not be reaped yet)
        assert held_sockets <= sockets_before + CAP + 1, (sockets_before, held_sockets)
        # Every one is closed by the server: past the cap at once, the rest when idle.
        took = wait_all_closed(socks, BOUND_S)
        assert took < BOUND_S
        assert threads(pid) <= threads_before + 1
    finally:
        for sock in socks:
            sock.close()
    assert "rmserve_queue_pairs" in server.scrape()


def test_connections_under_the_cap_are_held_until_the_idle_timeout_then_closed(
    server: ServerProcess,
) -> None:
    pid = server.process.pid
    sockets_before = open_sockets(pid)
    opened = time.monotonic()
    socks = [
        socket.create_connection(("127.0.0.1", server.metrics_port), timeout=BOUND_S)
        for _ in range(CAP // 2)
    ]
    try:
        assert "rmserve_queue_pairs" in server.scrape()  # accepted after them all
        # all held, none evicted (-1: an earlier scrape's connection may have been counted)
        assert open_sockets(pid) >= sockets_before - 1 + CAP // 2
        wait_all_closed(socks, BOUND_S)
        assert time.monotonic() - opened >= IDLE_S  # not before the idle timeout
    finally:
        for sock in socks:
            sock.close()
