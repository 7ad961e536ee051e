"""Helpers to start real servers on 127.0.0.1 (free ports) and drive them from tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rmserve.engine.session import LoadedArtifact
from rmserve.server.app import RewardServer
from rmserve.server.model_build import EngineFactory, ort_engine
from rmserve.server.model_loading import ModelCheck
from rmserve.server.settings import ServerSettings
from rmserve.testing import ScriptedEngine
from rmserve.v1 import reward_pb2_grpc

SERVICE = "rmserve.v1.RewardService"


def make_settings(artifact: Path, **overrides: Any) -> ServerSettings:
    values: dict[str, Any] = {
        "artifact": artifact,
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": 0,
        "provider": "cpu",
        "intra_op_threads": 1,
        "warmup_runs": 0,
        "grace_seconds": 60.0,
    }
    values.update(overrides)
    return ServerSettings(**values)


@dataclass
class Harness:
    server: RewardServer
    channel: grpc.aio.Channel
    stub: reward_pb2_grpc.RewardServiceAsyncStub
    health: health_pb2_grpc.HealthStub

    def metric(self, name: str, **labels: str) -> float:
        value = self.server.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else float(value)

    async def health_status(self, service: str = "") -> int:
        reply = await self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        return int(reply.status)


@asynccontextmanager
async def serving(
    settings: ServerSettings,
    engine_factory: EngineFactory = ort_engine,
    load: bool = True,
    model_checks: Sequence[ModelCheck] | None = None,
) -> AsyncIterator[Harness]:
    """A started server; with ``load`` it is SERVING on entry, else still loading."""
    server = RewardServer(settings, engine_factory, model_checks)
    await server.start()
    loader = asyncio.create_task(server.load()) if not load else None
    if load:
        await server.load()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    stub: Any = reward_pb2_grpc.RewardServiceStub(channel)
    try:
        yield Harness(server, channel, stub, health_pb2_grpc.HealthStub(channel))
    finally:
        await channel.close()
        await server.stop()
        if loader is not None:
            loader.cancel()
            await asyncio.gather(loader, return_exceptions=True)


def scripted_factory(
    gate_open: bool = True, gate_over_tokens: int = 0
) -> tuple[list[ScriptedEngine], EngineFactory]:
    """An engine factory wrapping the real engine; the list receives the engine it builds."""
    built: list[ScriptedEngine] = []

    def factory(artifact: LoadedArtifact, settings: ServerSettings) -> ScriptedEngine:
        inner = ort_engine(artifact, settings)
        engine = ScriptedEngine(inner, gate_open=gate_open, gate_over_tokens=gate_over_tokens)
        built.append(engine)
        return engine

    return built, factory


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll until ``predicate`` holds; a generous bound so a stuck server fails, never hangs."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


async def health_becomes(h: Harness, status: int, service: str = "", timeout: float = 60.0) -> None:
    """Poll the health service until it reports ``status``; a generous bound, never a hang."""
    end = time.monotonic() + timeout
    while (seen := await h.health_status(service)) != status:
        if time.monotonic() > end:
            raise AssertionError(f"health of {service!r} is {seen} after {timeout}s, not {status}")
        await asyncio.sleep(0.01)
