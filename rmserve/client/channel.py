"""Targets, channel options and credentials shared by the sync and asyncio clients.

Several endpoints are balanced per call by gRPC's ``round_robin`` policy, chosen through the
service config: ``dns:///name:port`` balances over every address the name resolves to (a
Kubernetes headless Service), and a comma list ``a:1,b:2`` is resolved once, here, into an
``ipv4:``/``ipv6:`` address list.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import grpc

from rmserve.client.settings import ClientSettings

SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")


def _split_host_port(endpoint: str) -> tuple[str, int]:
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"endpoint {endpoint!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _address(host: str, port: int) -> tuple[int, str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ValueError(f"cannot resolve {host!r}: {e}") from e
    infos.sort(key=lambda info: info[0] != socket.AF_INET)  # prefer IPv4 when both exist
    family, _, _, _, sockaddr = infos[0]
    return int(family), str(sockaddr[0])


def resolve_target(target: str) -> str:
    """The gRPC target URI for ``host:port``, ``a:1,b:2`` or any gRPC URI (passed through)."""
    target = target.strip()
    if not target:
        raise ValueError("empty target")
    if target.startswith(_SCHEMES) or "://" in target:
        return target
    endpoints = [e.strip() for e in target.split(",") if e.strip()]
    if len(endpoints) == 1:
        _split_host_port(endpoints[0])
        return endpoints[0]
    addresses = [(_address(*_split_host_port(e)), _split_host_port(e)[1]) for e in endpoints]
    families = {family for (family, _), _ in addresses}
    if families == {socket.AF_INET}:
        return "ipv4:" + ",".join(f"{ip}:{port}" for (_, ip), port in addresses)
    if families == {socket.AF_INET6}:
        return "ipv6:" + ",".join(f"[{ip}]:{port}" for (_, ip), port in addresses)
    raise ValueError(
        f"endpoints of {target!r} mix IPv4 and IPv6 addresses; use dns:///NAME:PORT instead"
    )


def channel_options(settings: ClientSettings) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        ("grpc.service_config", SERVICE_CONFIG),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
    ]
    if settings.tls_server_name:
        options.append(("grpc.ssl_target_name_override", settings.tls_server_name))
    return options


def tls_credentials(settings: ClientSettings) -> Any:
    """``grpc.ChannelCredentials`` from the TLS settings, or ``None`` for plaintext."""
    files = (settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file)
    if not settings.tls and not any(files):
        return None
    if (settings.tls_cert_file is None) != (settings.tls_key_file is None):
        raise ValueError("tls_cert_file and tls_key_file go together (mutual TLS)")
    ca, cert, key = (path.read_bytes() if path else None for path in files)
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def call_metadata(settings: ClientSettings) -> tuple[tuple[str, str], ...]:
    if settings.token is None:
        return ()
    return (("authorization", f"Bearer {settings.token.get_secret_value()}"),)
