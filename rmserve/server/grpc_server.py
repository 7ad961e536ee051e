"""The gRPC servers a ``RewardServer`` listens with: the main one (reward, model-admin, health
and reflection services, token auth when a token is set, message and connection-age limits) and
the plaintext health-only one for Kubernetes probes. Neither is bound or started here."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from rmserve.grpc.admin import ModelAdminServicer, Swap, add_admin_service
from rmserve.grpc.service import RewardServicer, add_reward_service
from rmserve.observability.metrics import Metrics
from rmserve.server.listeners import NO_REUSEPORT
from rmserve.server.security import TokenAuthInterceptor
from rmserve.server.settings import ServerSettings
from rmserve.serving.models import ModelRegistry
from rmserve.v1 import reward_pb2

SERVICE_NAME = reward_pb2.DESCRIPTOR.services_by_name["RewardService"].full_name
ADMIN_SERVICE_NAME = reward_pb2.DESCRIPTOR.services_by_name["ModelAdmin"].full_name
# gRPC's transport limit is max_message_bytes plus this envelope. A request up to it reaches the
# servicer as raw bytes and, when over max_message_bytes, is refused by its length with
# INVALID_ARGUMENT naming the limit, before it is parsed; past it gRPC itself refuses the message
# (RESOURCE_EXHAUSTED, no retry pushback) and never hands it to Python. The envelope only keeps
# "just over the limit" answered with our clear message; it bounds what one call can make gRPC
# hold to max_message_bytes + 64 KiB.
TRANSPORT_ENVELOPE_BYTES = 64 * 1024


def transport_limit(max_message_bytes: int) -> int:
    """The largest message gRPC accepts: ``max_message_bytes`` + ``TRANSPORT_ENVELOPE_BYTES``."""
    return max_message_bytes + TRANSPORT_ENVELOPE_BYTES


def grpc_options(settings: ServerSettings) -> list[tuple[str, int]]:
    limit = transport_limit(settings.max_message_bytes)
    options = [
        NO_REUSEPORT,
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
    ]
    if settings.max_connection_age_seconds > 0:
        options += [
            ("grpc.max_connection_age_ms", int(settings.max_connection_age_seconds * 1000)),
            (
                "grpc.max_connection_age_grace_ms",
                int(settings.max_connection_age_grace_seconds * 1000),
            ),
        ]
    return options


def reward_grpc_server(
    settings: ServerSettings,
    models: Callable[[], ModelRegistry | None],
    metrics: Metrics,
    swap: Swap | None,
    health_servicer: health.aio.HealthServicer,
) -> grpc.aio.Server:
    """The main gRPC server with every service added; ``swap``: None turns model swaps off."""
    s = settings
    interceptors = []
    if s.auth_token is not None:
        interceptors.append(TokenAuthInterceptor(s.auth_token.get_secret_value(), metrics))
    server = grpc.aio.server(options=grpc_options(s), interceptors=interceptors)
    servicer = RewardServicer(models, metrics, s.max_message_bytes, s.log_request_content)
    add_reward_service(servicer, server)
    add_admin_service(ModelAdminServicer(models, swap, metrics), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, ADMIN_SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME),
        server,
    )
    return server


def health_grpc_server(health_servicer: health.aio.HealthServicer) -> grpc.aio.Server:
    """grpc.health.v1 alone, in plaintext: what Kubernetes gRPC probes can reach."""
    server = grpc.aio.server(options=[NO_REUSEPORT])
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    return server
