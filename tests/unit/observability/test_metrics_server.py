"""The /metrics endpoint on a real socket (127.0.0.1, port 0): GET/HEAD /metrics in the format
and encoding the client asks for, 404 elsewhere, 405 for other methods, bounded heads, keep-
alive and pipelining, the idle timeout, the connection cap, one thread whatever the
connections, and the binding behaviour the server relies on (busy port: OSError; close frees
the port)."""

from __future__ import annotations

import errno
import gzip
import http.client
import re
import socket
import threading
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS

from rmserve.observability.metrics import Metrics
from rmserve.observability.metrics_server import MAX_HEAD_BYTES, MetricsServer

BOUND_S = 30.0  # "must not hang" bound on any single wait; never a performance target
SHORT_IDLE_S = 0.3


@pytest.fixture
def registry() -> CollectorRegistry:
    metrics = Metrics()
    metrics.requests.labels(method="Score", code="OK").inc(3)
    return metrics.registry


@pytest.fixture
def server(registry: CollectorRegistry) -> Iterator[MetricsServer]:
    served = MetricsServer(registry, "127.0.0.1", 0)
    try:
        yield served
    finally:
        served.close()


def request(
    server: MetricsServer, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[http.client.HTTPResponse, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=BOUND_S)
    try:
        connection.request(method, path, headers=headers or {})
        reply = connection.getresponse()
        return reply, reply.read()
    finally:
        connection.close()


def connect(server: MetricsServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=BOUND_S)
    return sock


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (bounded by BOUND_S)."""
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    return bytes(data)


def can_bind(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
    return True


def test_get_metrics_is_prometheus_text_exactly_as_prometheus_client_writes_it(
    server: MetricsServer, registry: CollectorRegistry
) -> None:
    reply, body = request(server, "GET", "/metrics")
    assert reply.status == 200
    assert reply.getheader("Content-Type") == choose_encoder("")[1]
    assert reply.getheader("Content-Type").startswith("text/plain; version=0.0.4")
    assert body == generate_latest(registry)
    assert b'rmserve_requests_total{code="OK",method="Score"} 3.0' in body


def test_openmetrics_and_gzip_when_the_scraper_asks(server: MetricsServer) -> None:
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    reply, body = request(server, "GET", "/metrics", {"Accept": accept,
                                                       "Accept-Encoding": "gzip"})  # fmt: skip
    assert reply.status == 200
    assert reply.getheader("Content-Type").startswith(OPENMETRICS.split(";")[0])
    assert reply.getheader("Content-Encoding") == "gzip"
    text = gzip.decompress(body)
    assert text.endswith(b"# EOF\n") and b"rmserve_requests_total" in text


def test_head_has_the_headers_and_no_body(server: MetricsServer) -> None:
    reply, body = request(server, "HEAD", "/metrics")
    got, full = request(server, "GET", "/metrics")
    assert (reply.status, body) == (200, b"")
    assert reply.getheader("Content-Length") == str(len(full))
    assert reply.getheader("Content-Type") == got.getheader("Content-Type")


def test_name_parameters_restrict_the_families(server: MetricsServer) -> None:
    reply, body = request(server, "GET", "/metrics?name[]=rmserve_queue_pairs")
    assert reply.status == 200
    assert body.decode().splitlines() == [
        "# HELP rmserve_queue_pairs Pairs waiting in the queue.",
        "# TYPE rmserve_queue_pairs gauge",
        "rmserve_queue_pairs 0.0",
    ]


@pytest.mark.parametrize("path", ["/", "/metrics/", "/metricsx", "/favicon.ico", "/../metrics"])
def test_any_other_path_is_404(server: MetricsServer, path: str) -> None:
    reply, body = request(server, "GET", path)
    assert reply.status == 404
    assert b"rmserve" not in body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "TRACE", "BREW"])
def test_other_methods_are_405_with_allow(server: MetricsServer, method: str) -> None:
    reply, body = request(server, method, "/metrics")
    assert reply.status == 405
    assert reply.getheader("Allow") == "GET, HEAD, OPTIONS"
    assert b"rmserve" not in body


def test_options_names_the_methods(server: MetricsServer) -> None:
    reply, _ = request(server, "OPTIONS", "/metrics")
    assert (reply.status, reply.getheader("Allow")) == (200, "GET, HEAD, OPTIONS")


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /metrics\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET /metrics HTTP/2.0\r\n\r\n", 505),
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n", 431),
        (b"GET /" + b"a" * (2 * MAX_HEAD_BYTES), 431),  # never ends: refused once too long
    ],
)
def test_a_bad_or_oversized_head_is_refused_and_closed(
    server: MetricsServer, raw: bytes, status: int
) -> None:
    with connect(server) as sock:
        sock.sendall(raw)
        answer = read_to_eof(sock)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:80]
    assert b"Connection: close" in answer


def test_keep_alive_answers_several_requests_on_one_connection(server: MetricsServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=BOUND_S)
    try:
        statuses = []
        for path in ("/metrics", "/nope", "/metrics"):
            connection.request("GET", path)
            reply = connection.getresponse()
            reply.read()
            statuses.append(reply.status)
            assert reply.getheader("Connection") == "keep-alive"
        assert statuses == [200, 404, 200]
        assert server.connections == 1
    finally:
        connection.close()


def test_pipelined_requests_are_answered_in_order(server: MetricsServer) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"GET /metrics HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\n"
            b"HEAD /metrics HTTP/1.1\r\nConnection: close\r\n\r\n"
        )
        answer = read_to_eof(sock)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert statuses == [b"200", b"404", b"200"]


def test_a_request_with_a_body_is_answered_then_closed(server: MetricsServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
        answer = read_to_eof(sock)
    assert answer.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in answer


def test_http_1_0_closes_unless_asked_to_keep_alive(server: MetricsServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        answer = read_to_eof(sock)
    assert answer.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in answer


def test_idle_and_half_sent_connections_are_closed_after_the_idle_timeout(
    registry: CollectorRegistry,
) -> None:
    served = MetricsServer(registry, "127.0.0.1", 0, idle_timeout=SHORT_IDLE_S)
    try:
        idle, half, answered = connect(served), connect(served), connect(served)
        half.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
        answered.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")  # keep-alive, then idle
        for sock in (idle, half):
            assert read_to_eof(sock) == b""
        assert read_to_eof(answered).startswith(b"HTTP/1.1 200 OK")
        for sock in (idle, half, answered):
            sock.close()
        assert served.connections == 0
    finally:
        served.close()


def test_past_the_cap_the_connection_idle_longest_is_closed_and_the_new_one_served(
    registry: CollectorRegistry,
) -> None:
    served = MetricsServer(registry, "127.0.0.1", 0, max_connections=2)
    try:
        first, second = connect(served), connect(served)
        second.sendall(b"GET /nope HTTP/1.1\r\n\r\n")  # second is now fresher than first
        assert second.recv(65536).startswith(b"HTTP/1.1 404")
        reply, _ = request(served, "GET", "/metrics")  # the third connection
        assert reply.status == 200
        assert read_to_eof(first) == b""  # evicted
        second.sendall(b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert read_to_eof(second).startswith(b"HTTP/1.1 200 OK")  # kept
        first.close()
        second.close()
    finally:
        served.close()


def test_one_thread_serves_many_connections(registry: CollectorRegistry) -> None:
    before = threading.active_count()
    served = MetricsServer(registry, "127.0.0.1", 0, max_connections=1000)
    socks: list[socket.socket] = []
    try:
        assert threading.active_count() == before + 1
        socks = [connect(served) for _ in range(200)]
        reply, _ = request(served, "GET", "/metrics")  # accepted after the 200
        assert reply.status == 200
        assert served.connections >= 200
        assert threading.active_count() == before + 1
    finally:
        for sock in socks:
            sock.close()
        served.close()
    assert threading.active_count() == before


def test_port_0_binds_a_free_port_and_close_frees_it(registry: CollectorRegistry) -> None:
    served = MetricsServer(registry, "127.0.0.1", 0)
    port = served.port
    assert port > 0 and not can_bind(port)
    served.close()
    assert can_bind(port)


def test_a_busy_port_raises_os_error(registry: CollectorRegistry) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(OSError) as raised:
            MetricsServer(registry, "127.0.0.1", busy.getsockname()[1])
    assert raised.value.errno == errno.EADDRINUSE


def test_an_ipv6_host_in_brackets_binds(registry: CollectorRegistry) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        served = MetricsServer(registry, "[::1]", 0)
    except OSError as e:
        pytest.skip(f"::1 cannot be bound here: {e}")
    try:
        connection = http.client.HTTPConnection("::1", served.port, timeout=BOUND_S)
        connection.request("GET", "/metrics")
        assert connection.getresponse().status == 200
        connection.close()
    finally:
        served.close()


def test_bad_limits_are_refused(registry: CollectorRegistry) -> None:
    with pytest.raises(ValueError):
        MetricsServer(registry, "127.0.0.1", 0, idle_timeout=0)
    with pytest.raises(ValueError):
        MetricsServer(registry, "127.0.0.1", 0, max_connections=0)
