"""The ``ServerSettings`` fields of where a server listens: the gRPC, metrics and HTTP ports,
what the metrics and HTTP listeners allow a connection, and the port file. Never built alone:
``ServerSettings`` takes these fields, flags and ``RMSERVE_*`` variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class ListenerSettings(BaseModel):
    host: str = Field(default="0.0.0.0", min_length=1, description="Address gRPC listens on.")
    port: int = Field(default=50051, ge=0, le=65535, description="gRPC port (0: any free port).")
    metrics_port: int = Field(
        default=9400, ge=0, le=65535, description="Prometheus /metrics port (0: any free port)."
    )
    metrics_idle_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="The metrics port closes a connection that completes no request for this "
        "long (since it opened or since its last answer, whichever is later).",
    )
    metrics_max_connections: int = Field(
        default=64,
        ge=1,
        le=65536,
        description="Connections the metrics port holds at once; a new one past this closes "
        "the connection idle longest, so a scraper always gets in. One thread serves them all.",
    )
    http_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Also serve OpenRLHF's remote reward-model protocol (POST /get_reward) over "
        "HTTP on this port, same core and batcher (0: any free port; unset: off).",
    )
    http_header_timeout_seconds: float = Field(
        default=60.0,
        gt=0.0,
        le=3600.0,
        description="HTTP front: a connection must send a whole request's headers within this "
        "many seconds of opening or of its last reply, else it is closed (aiohttp's keep-alive "
        "timeout: an idle keep-alive connection is closed after it too).",
    )
    http_body_timeout_seconds: float = Field(
        default=30.0,
        gt=0.0,
        le=3600.0,
        description="HTTP front: the longest wait for more of a request body, and the grace "
        "before http_min_body_bytes_per_second applies; a body that stalls is 408 and the "
        "bytes it was charged are released (docs/guides/security.md#slow-and-hostile-clients).",
    )
    http_min_body_bytes_per_second: float = Field(
        default=64 * 1024,
        ge=0.0,
        description="HTTP front: the slowest a body may arrive. A body of n bytes must be whole "
        "within http_body_timeout_seconds + n / this (0: no rate, only the wait for each chunk).",
    )
    http_max_inflight_bytes_per_client: int | None = Field(
        default=None,
        ge=1024,
        le=1 << 40,
        description="HTTP front: most request bytes one client address may hold of "
        "max_inflight_bytes (bodies are charged as they arrive; beyond it 429 with Retry-After). "
        "Unset: half of max_inflight_bytes, and never under max_message_bytes.",
    )
    port_file: Path | None = Field(
        default=None,
        description="Once every listener is bound, before the model loads, write the ports "
        'here as one JSON object, e.g. {"grpc": 43121, "health": null, "http": null, '
        '"metrics": 39223, "pid": 1234} (null: that listener is off). Written atomically '
        "(a temporary file in the same folder, then renamed); an earlier file is removed at "
        "start-up. With port 0 this is how a launcher learns the ports without racing for "
        "them. A port that is given and already in use stops the server with exit code 3.",
    )
