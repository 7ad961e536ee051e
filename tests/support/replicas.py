"""`rmserve serve` replicas as real processes on 127.0.0.1, each on ports it bound itself."""

from __future__ import annotations

from pathlib import Path

from rmserve.testing import SERVER_BOUND_S, ServerProcess, start_server

BOUND_S = SERVER_BOUND_S  # "must not hang" bound; never a performance assertion
Replica = ServerProcess


def start_replica(artifact: Path, log: Path, **env: str) -> Replica:
    return start_server(artifact, log, "--warmup-runs", "0", **env)
