"""Binding the server's listeners: one clear error when a port cannot be bound, and the port
file that tells a launcher which ports were bound (port 0 picks any free one, without a race).

Every bind site turns its own failure into :class:`ListenError`: gRPC (``add_*_port`` raises
``RuntimeError`` or returns 0 and logs from C), aiohttp and the metrics server (``OSError``).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import grpc

# grpc sets SO_REUSEPORT by default, so a second server on a busy port would bind it and share
# its connections instead of failing; rmserve's gRPC listeners turn it off.
NO_REUSEPORT = ("grpc.so_reuseport", 0)


class ListenError(OSError):
    """``listener`` (gRPC, health, HTTP or metrics) cannot listen on ``host:port``.

    ``errno`` is the bind's error when known (``EADDRINUSE``: the port is taken)."""

    def __init__(self, listener: str, host: str, port: int, code: int | None, reason: str):
        super().__init__(code, reason)
        self.listener, self.host, self.port, self.reason = listener, host, port, reason

    @classmethod
    def from_os_error(cls, listener: str, host: str, port: int, error: OSError) -> ListenError:
        reason = os.strerror(error.errno) if error.errno else str(error)
        return cls(listener, host, port, error.errno, reason[:1].lower() + reason[1:])

    @property
    def in_use(self) -> bool:
        """True when another socket holds the port."""
        return self.errno == errno.EADDRINUSE

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"cannot listen on {host}:{self.port} for {self.listener}: {self.reason}"


class PortFileError(Exception):
    """The port file could not be written."""


@contextmanager
def binding(listener: str, host: str, port: int) -> Iterator[None]:
    """Turn an ``OSError`` raised while ``listener`` binds ``host:port`` into ListenError."""
    try:
        yield
    except ListenError:
        raise
    except OSError as e:
        raise ListenError.from_os_error(listener, host, port, e) from e


def probe(listener: str, host: str, port: int) -> None:
    """Raise ListenError when gRPC could bind none of the addresses ``host:port`` resolves to
    (as gRPC binds: SO_REUSEADDR, no SO_REUSEPORT), saying why; gRPC only logs it from C."""
    name = host.strip("[]")
    try:
        infos = socket.getaddrinfo(name or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)  # fmt: skip
    except socket.gaierror:
        return  # gRPC resolves it its own way and says so if it cannot
    errors: list[ListenError] = []
    for family, kind, proto, _, address in infos:
        try:
            with socket.socket(family, kind, proto) as s, binding(listener, host, port):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(address)
            return
        except ListenError as e:
            errors.append(e)
        except OSError:  # e.g. no IPv6 here: gRPC skips that address too
            continue
    if errors:
        raise min(errors, key=lambda e: not e.in_use)  # "in use" first, else the first reason


def bind_grpc(
    server: grpc.aio.Server,
    listener: str,
    host: str,
    port: int,
    credentials: grpc.ServerCredentials | None = None,
) -> int:
    """Add ``host:port`` to ``server`` (TLS with ``credentials``); the bound port."""
    probe(listener, host, port)
    address = f"{host}:{port}"
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError:  # "Failed to bind to address ..."
        bound = 0
    if bound == 0:
        probe(listener, host, port)  # taken since the first probe: say why
        raise ListenError(listener, host, port, None, "gRPC could not bind it (logged above)")
    return int(bound)


def write_port_file(path: Path, ports: Mapping[str, int | None]) -> None:
    """Write ``ports`` and this process's pid to ``path`` as one JSON object, atomically (a
    temporary file in the same folder, then renamed over ``path``)."""
    text = json.dumps({**ports, "pid": os.getpid()}, sort_keys=True) + "\n"
    folder = path.parent
    try:
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as out:
                out.write(text)
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError as e:
        raise PortFileError(f"cannot write the port file {path}: {e.strerror or e}") from e
