"""`rmserve serve` as a real process: NOT_SERVING while warming up, SIGTERM under load drains."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rmserve.testing import ServerProcess, start_server
from rmserve.v1 import reward_pb2, reward_pb2_grpc

pytestmark = pytest.mark.asyncio(loop_scope="session")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
BOUND_S = 120.0  # "must not hang" bound; never a performance assertion
# Poll a starting server without gRPC's default 1 s+ reconnect backoff hiding the warm-up.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
FAST_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 20), ("grpc.max_reconnect_backoff_ms", 50)]


async def health_status(stub: health_pb2_grpc.HealthStub) -> int | None:
    """The server's status, or None while nothing answers on the port."""
    try:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
    except grpc.aio.AioRpcError:
        return None
    return int(reply.status)


async def poll_status(
    stub: health_pb2_grpc.HealthStub, until: int, server: ServerProcess
) -> list[int | None]:
    """Poll health until it reports ``until``; return every answer seen (None: no answer)."""
    seen: list[int | None] = []
    end = time.monotonic() + BOUND_S
    while time.monotonic() < end:
        if server.process.poll() is not None:
            code = server.process.returncode
            raise AssertionError(f"server exited with {code}:\n{server.log_tail()}")
        seen.append(await health_status(stub))
        if seen[-1] == until:
            return seen
        await asyncio.sleep(0.02)
    raise AssertionError(f"health never reported {until}; saw {sorted(set(map(str, seen)))}")


async def caller(
    stub: reward_pb2_grpc.RewardServiceAsyncStub, k: int, answered: list[int]
) -> grpc.aio.AioRpcError:
    """Send ScoreBatch calls until the server refuses one; every accepted call must succeed."""
    request = reward_pb2.ScoreBatchRequest(
        pairs=[reward_pb2.Pair(prompt=f"caller {k} q{i}", response="an answer") for i in range(800)]
    )
    while True:
        try:
            reply = await stub.ScoreBatch(request, timeout=BOUND_S)
        except grpc.aio.AioRpcError as e:
            return e
        assert len(reply.results) == 800
        answered.append(k)


async def test_warm_up_then_sigterm_under_load_drains_and_exits_zero(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    server = start_server(
        tiny_artifact, tmp_path / "serve.log", "--grace-seconds", "60", hold_engine=True
    )
    process = server.process
    channel = grpc.aio.insecure_channel(server.target, options=FAST_RECONNECT)
    health: health_pb2_grpc.HealthStub = health_pb2_grpc.HealthStub(channel)
    stub: reward_pb2_grpc.RewardServiceAsyncStub = reward_pb2_grpc.RewardServiceStub(channel)  # type: ignore[assignment]
    try:
        seen = await poll_status(health, NOT_SERVING, server)  # warm-up is held
        assert SERVING not in seen
        server.release_engine()
        await poll_status(health, SERVING, server)

        answered: list[int] = []
        callers = [asyncio.create_task(caller(stub, k, answered)) for k in range(6)]
        while len(answered) < 6:
            assert not any(c.done() for c in callers), [c.result() for c in callers if c.done()]
            await asyncio.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        await poll_status(health, NOT_SERVING, server)  # while the accepted work drains

        refusals = await asyncio.wait_for(asyncio.gather(*callers), timeout=BOUND_S)
        for error in refusals:  # refused, never an accepted call lost
            # UNAVAILABLE from the draining core or the closed port; CANCELLED: a stream sent
            # as gRPC's own graceful stop began, reset undispatched (clients retry both)
            assert error.code() in RETRYABLE, (error.code(), error.details())
            assert "before this request was computed" not in (error.details() or "")
        assert any("draining" in (e.details() or "") for e in refusals)
        code = await asyncio.to_thread(process.wait, BOUND_S)
        assert code == 0, server.log_tail()
    finally:
        await channel.close()
        server.kill()
