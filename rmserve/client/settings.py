"""Client defaults: one pydantic-settings class, env prefix ``RMSERVE_CLIENT_``.

Built when a client is made (never at import time); keyword arguments to the client override
the environment, which overrides these defaults.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ClientSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RMSERVE_CLIENT_", extra="forbid", frozen=True)

    target: str = Field(
        default="localhost:50051",
        min_length=1,
        description="Server to call: HOST:PORT, a comma list HOST:PORT,HOST:PORT (balanced per "
        "call with round_robin), or dns:///NAME:PORT (every address the name resolves to).",
    )
    timeout: float = Field(
        default=60.0,
        gt=0.0,
        le=86_400.0,
        description="Deadline of one client call in seconds, retries and all chunks included.",
    )
    max_attempts: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Most attempts per request (1: never retry). Only UNAVAILABLE, CANCELLED "
        "sent by the server (a stream it never dispatched) and RESOURCE_EXHAUSTED with retry "
        "pushback are retried.",
    )
    initial_backoff: float = Field(
        default=0.1, gt=0.0, le=60.0, description="First retry backoff in seconds (doubles)."
    )
    max_backoff: float = Field(
        default=5.0, gt=0.0, le=600.0, description="Largest retry backoff in seconds."
    )
    max_chunk_pairs: int = Field(
        default=1024,
        ge=1,
        le=1_000_000,
        description="Most pairs per request; the server's max_request_pairs lowers it further.",
    )
    max_chunk_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="Most text bytes per request (keep it under the server's max_message_bytes).",
    )
    max_concurrent_chunks: int = Field(
        default=8, ge=1, le=1024, description="Chunks of one call in flight at once."
    )
    max_inflight_requests: int = Field(
        default=256,
        ge=1,
        le=100_000,
        description="Most requests one client has in flight; more wait their turn (a "
        "gRPC server resets streams beyond its pending-call limit).",
    )
    max_message_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        le=2**31 - 1,
        description="Largest message the channel sends or receives.",
    )
    tls: bool = Field(default=False, description="Use TLS (system roots unless tls_ca_file).")
    tls_ca_file: Path | None = Field(default=None, description="PEM root certificates.")
    tls_cert_file: Path | None = Field(
        default=None, description="PEM client certificate chain (mutual TLS)."
    )
    tls_key_file: Path | None = Field(default=None, description="PEM client private key.")
    tls_server_name: str | None = Field(
        default=None, description="Name to verify the server certificate against."
    )
    token: SecretStr | None = Field(
        default=None, description="Bearer token sent as `authorization: Bearer …` metadata."
    )
