"""The /metrics HTTP endpoint: one thread and one ``selectors`` loop for every connection.

Hostile or idle clients cannot grow it: the thread count is one whatever the number of
connections; at most ``max_connections`` are held (a new one past the cap closes the one idle
longest, so a scraper always gets in); a connection that completes no request within
``idle_timeout`` seconds of opening or of its last answer is closed; a request line and headers
over ``MAX_HEAD_BYTES`` are refused. Only ``GET``/``HEAD /metrics`` answer the metrics (404
elsewhere, 405 for other methods), in the format the Accept header asks for and gzipped when
Accept-Encoding allows it, as prometheus-client's own server does.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import selectors
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
DEFAULT_IDLE_TIMEOUT_S = 10.0
DEFAULT_MAX_CONNECTIONS = 64
MAX_HEAD_BYTES = 8192  # request line and headers
LISTEN_BACKLOG = 512  # also the most connections accepted per turn of the loop
RECV_BYTES = 4096
ALLOW = "GET, HEAD, OPTIONS"
REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    505: "HTTP Version Not Supported",
}


@dataclass
class _Connection:
    sock: socket.socket
    deadline: float  # closed when it passes with no request completed
    inbox: bytearray = field(default_factory=bytearray)
    outbox: bytearray = field(default_factory=bytearray)
    close_after_send: bool = False
    draining: bool = False  # answered and shut for writing; reading until the client closes
    events: int = selectors.EVENT_READ  # what the selector waits for on it


@dataclass(frozen=True)
class _Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]


class _BadRequest(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _parse_head(head: bytes) -> _Request:
    """The request line and headers (without the blank line that ends them)."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise _BadRequest(400) from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise _BadRequest(400)
    method, target, version = parts
    if not version.startswith("HTTP/1."):
        raise _BadRequest(505 if version.startswith("HTTP/") else 400)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise _BadRequest(400)
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return _Request(method, target, version, headers)


def _keep_alive(request: _Request) -> bool:
    tokens = {t.strip().lower() for t in request.headers.get("connection", "").split(",")}
    if request.version == "HTTP/1.0":
        return "keep-alive" in tokens
    return "close" not in tokens


def _has_body(request: _Request) -> bool:
    length = request.headers.get("content-length", "0").strip()
    return "transfer-encoding" in request.headers or length not in ("", "0")


class MetricsServer:
    """Serve one registry's /metrics on ``host:port`` (port 0: any free port; ``.port`` is the
    one bound). A port that cannot be bound raises ``OSError`` from the constructor; ``close``
    stops the thread and frees the port."""

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        if idle_timeout <= 0 or max_connections < 1:
            raise ValueError("idle_timeout must be > 0 and max_connections >= 1")
        self._registry = registry
        self._idle_timeout = idle_timeout
        self._max_connections = max_connections
        name = host.strip("[]")
        infos = socket.getaddrinfo(
            name or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, address = infos[0]
        listener = socket.socket(family, kind, proto)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(address)
            listener.listen(LISTEN_BACKLOG)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self.port: int = int(listener.getsockname()[1])
        # Oldest deadline first: a connection moves to the end whenever its deadline moves.
        self._connections: OrderedDict[socket.socket, _Connection] = OrderedDict()
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._stopping = False
        self._selector.register(listener, selectors.EVENT_READ)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, name="rmserve-metrics", daemon=True)
        self._thread.start()

    @property
    def connections(self) -> int:
        """Client connections held now (an estimate from another thread)."""
        return len(self._connections)

    def close(self) -> None:
        """Stop the loop, close every connection and the listener (frees the port)."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_write.send(b"x")
        self._thread.join(timeout=5.0)
        if self._thread.is_alive():  # pragma: no cover - the loop answers the wake-up at once
            log.warning("the metrics thread did not stop within 5 s")
            return
        for sock in list(self._connections):
            sock.close()
        self._connections.clear()
        self._selector.close()
        self._listener.close()
        self._wake_read.close()
        self._wake_write.close()

    # The loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            timeout = None
            if self._connections:
                first = next(iter(self._connections.values()))
                timeout = max(0.0, first.deadline - time.monotonic())
            for key, _ in self._selector.select(timeout):
                if key.fileobj is self._listener:
                    self._accept()
                elif key.fileobj is self._wake_read:
                    with contextlib.suppress(OSError):
                        self._wake_read.recv(64)
                else:
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    conn = self._connections.get(sock)
                    if conn is None:
                        continue  # closed earlier in this round (evicted)
                    try:
                        if conn.events == selectors.EVENT_WRITE:
                            self._pump(conn)
                        else:
                            self._receive(conn)
                    except Exception:
                        log.exception("metrics connection failed")
                        self._drop(conn)
            self._expire()

    def _accept(self) -> None:
        for _ in range(LISTEN_BACKLOG):
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # e.g. EMFILE: the process is out of file descriptors
                log.warning("metrics port cannot accept: %s", e)
                return
            if len(self._connections) >= self._max_connections:
                # The one idle longest (the first) goes, so a new scraper always gets in.
                self._drop(next(iter(self._connections.values())))
            sock.setblocking(False)
            conn = _Connection(sock, time.monotonic() + self._idle_timeout)
            self._connections[sock] = conn
            self._selector.register(sock, selectors.EVENT_READ)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._connections:
            first = next(iter(self._connections.values()))
            if first.deadline > now:
                return
            self._drop(first)

    def _drop(self, conn: _Connection) -> None:
        if self._connections.pop(conn.sock, None) is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        conn.sock.close()

    def _refresh(self, conn: _Connection) -> None:
        conn.deadline = time.monotonic() + self._idle_timeout
        self._connections.move_to_end(conn.sock)

    def _receive(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        if not data:
            self._drop(conn)
            return
        if conn.draining:
            return
        conn.inbox += data
        self._pump(conn)

    def _pump(self, conn: _Connection) -> None:
        """Send what is owed, answering the requests already received one at a time; then
        wait to write (the client reads slowly) or to read the next request."""
        while conn.outbox or self._handle(conn):
            try:
                sent = conn.sock.send(conn.outbox)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._drop(conn)
                return
            if sent:
                del conn.outbox[:sent]
                self._refresh(conn)
            if conn.outbox:
                self._want(conn, selectors.EVENT_WRITE)
                return
            if conn.close_after_send:
                self._linger(conn)
                return
        self._want(conn, selectors.EVENT_READ)

    def _linger(self, conn: _Connection) -> None:
        """Close after the last answer: send FIN, then read and drop what the client still
        sends until it closes (or the deadline passes), so unread bytes do not turn the close
        into a reset that loses the answer."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._drop(conn)
            return
        conn.draining = True
        conn.inbox.clear()
        self._want(conn, selectors.EVENT_READ)

    def _want(self, conn: _Connection, events: int) -> None:
        if conn.events != events:
            self._selector.modify(conn.sock, events)
            conn.events = events

    def _handle(self, conn: _Connection) -> bool:
        """Queue the answer to the first request in ``inbox`` if its head is complete (or too
        long); False when there is none yet."""
        end = conn.inbox.find(b"\r\n\r\n")
        if end < 0 and len(conn.inbox) <= MAX_HEAD_BYTES:
            return False
        if end < 0 or end > MAX_HEAD_BYTES:
            self._reply(conn, 431, close=True)
            return True
        head = bytes(conn.inbox[:end])
        del conn.inbox[: end + 4]
        try:
            request = _parse_head(head)
        except _BadRequest as e:
            self._reply(conn, e.status, close=True)
            return True
        close = not _keep_alive(request) or _has_body(request)  # a body is never read
        self._answer(conn, request, close)
        return True

    def _answer(self, conn: _Connection, request: _Request, close: bool) -> None:
        url = urlsplit(request.target)
        head_only = request.method == "HEAD"
        if request.method == "OPTIONS":
            self._reply(conn, 200, close=close, headers=[("Allow", ALLOW)])
        elif request.method not in ("GET", "HEAD"):
            self._reply(conn, 405, close=close, headers=[("Allow", ALLOW)])
        elif url.path != METRICS_PATH:
            self._reply(conn, 404, close=close, head_only=head_only)
        else:
            try:
                body, headers = self._metrics(request, url.query)
            except Exception:
                log.exception("collecting the metrics failed")
                self._reply(conn, 500, close=True, head_only=head_only)
                return
            self._reply(conn, 200, body, headers, close=close, head_only=head_only)

    def _metrics(self, request: _Request, query: str) -> tuple[bytes, list[tuple[str, str]]]:
        """As prometheus-client's exposition does: format from Accept, gzip if accepted,
        ``name[]`` parameters restrict the families."""
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        names = parse_qs(query).get("name[]")
        registry: Collector = self._registry.restricted_registry(names) if names else self._registry
        body: bytes = encoder(registry)
        headers = [("Content-Type", content_type)]
        if gzip_accepted(request.headers.get("accept-encoding", "")):
            body = gzip.compress(body)
            headers.append(("Content-Encoding", "gzip"))
        return body, headers

    def _reply(
        self,
        conn: _Connection,
        status: int,
        body: bytes | None = None,
        headers: list[tuple[str, str]] | None = None,
        *,
        close: bool,
        head_only: bool = False,
    ) -> None:
        """Queue a whole response; a completed request counts as activity."""
        reason = REASONS[status]
        if body is None:
            body = b"" if status == 200 else f"{status} {reason}\n".encode()
            headers = [("Content-Type", "text/plain; charset=utf-8"), *(headers or [])]
        lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers or [])]
        lines.append(f"Content-Length: {len(body)}")
        lines.append(f"Connection: {'close' if close else 'keep-alive'}")
        conn.outbox += ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if not head_only:
            conn.outbox += body
        conn.close_after_send = close
        self._refresh(conn)
