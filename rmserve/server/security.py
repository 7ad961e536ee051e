"""Transport security and token auth for the gRPC server.

- TLS / mutual TLS: ``server_credentials`` builds ``grpc.ServerCredentials`` from the settings'
  PEM files (a client CA makes a client certificate mandatory).
- Token auth: ``TokenAuthInterceptor`` requires ``authorization: Bearer <token>`` metadata on
  every call except ``grpc.health.v1``, which stays open because load balancers and Kubernetes
  probes cannot send a token and health reveals nothing but SERVING / NOT_SERVING. Server
  reflection is *not* open: it needs the token like the reward RPCs (``grpcurl -H``).
  A missing or wrong token gets ``UNAUTHENTICATED`` before any handler runs; the token is
  compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from rmserve.observability.metrics import Metrics
from rmserve.server.settings import ServerSettings

log = logging.getLogger(__name__)

OPEN_SERVICES = ("/grpc.health.v1.Health/",)
AUTHORIZATION = "authorization"
BEARER = "bearer "


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings, or None for plaintext."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    try:
        cert = settings.tls_cert_file.read_bytes()
        key = settings.tls_key_file.read_bytes()
        ca = settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
    except OSError as e:
        raise TlsConfigError(f"cannot read TLS file {e.filename}: {e.strerror}") from e
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )


class TlsConfigError(Exception):
    """A TLS file named in the settings cannot be read; the message says which, in one line."""


def bearer_token(metadata: Any) -> str | None:
    """The token of an ``authorization: Bearer <token>`` entry, if any."""
    for key, value in metadata or ():
        if key.lower() == AUTHORIZATION:
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            if text[: len(BEARER)].lower() == BEARER:
                return text[len(BEARER) :].strip()
    return None


def _denial(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that answers UNAUTHENTICATED."""

    async def deny(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def deny_stream(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # an async generator, as a streaming handler must be

    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    behaviour = deny_stream if handler.response_streaming else deny
    return make(  # type: ignore[operator]
        behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, token: str, metrics: Metrics) -> None:
        if not token:
            raise ValueError("empty token")
        self._token = token.encode()
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        given = bearer_token(handler_call_details.invocation_metadata)
        if given is not None and hmac.compare_digest(given.encode(), self._token):
            return handler
        self._metrics.unauthenticated.inc()
        reason = "missing bearer token" if given is None else "invalid bearer token"
        return _denial(handler, f"{reason}: send `authorization: Bearer <token>` metadata")
