"""Stopping under load: every computed reply reaches its caller, every other call is refused
in a way the client retries, and ``stop()`` returns once the handlers are done."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from rmserve.v1 import reward_pb2, reward_pb2_grpc
from tests.support.harness import eventually, make_settings, scripted_factory, serving

pytestmark = pytest.mark.asyncio(loop_scope="session")

PAIRS = 4
# The draining core answers UNAVAILABLE; a stream gRPC no longer dispatches once its own
# graceful stop began is reset (CANCELLED) or finds the port closed (UNAVAILABLE).
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}


async def caller(
    stub: reward_pb2_grpc.RewardServiceAsyncStub, answered: list[int]
) -> grpc.aio.AioRpcError:
    """Send ScoreBatch calls back to back until one is refused."""
    request = reward_pb2.ScoreBatchRequest(
        pairs=[reward_pb2.Pair(prompt=f"q{i}", response="a") for i in range(PAIRS)]
    )
    while True:
        try:
            reply = await stub.ScoreBatch(request, timeout=120)
        except grpc.aio.AioRpcError as e:
            return e
        answered.append(len(reply.results))


async def test_stop_under_load_delivers_every_computed_reply(tiny_artifact: Path) -> None:
    built, factory = scripted_factory(gate_open=False)
    async with serving(make_settings(tiny_artifact), factory) as harness:
        engine = built[0]
        answered: list[int] = []
        callers = [asyncio.create_task(caller(harness.stub, answered)) for _ in range(8)]
        await eventually(lambda: engine.calls >= 1, "a batch held in the engine")
        stopping = asyncio.create_task(harness.server.stop())  # what SIGTERM triggers
        await eventually(
            lambda: (
                harness.server.core is not None and harness.server.core.state.value != "serving"
            ),
            "the drain",
        )
        # While the held batch keeps the drain going, a new call is refused by the core.
        probe = reward_pb2.ScoreRequest(prompt="probe", response="during the drain")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await harness.stub.Score(probe, timeout=120)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "draining" in (refused.value.details() or "")
        engine.gate.set()  # the accepted work finishes; callers answered send once more
        refusals = await asyncio.wait_for(asyncio.gather(*callers), timeout=120)
        await asyncio.wait_for(stopping, timeout=120)

    assert answered and set(answered) == {PAIRS}
    # a reply computed and then lost would leave more pairs scored than answered
    assert engine.scored_pairs == PAIRS * len(answered)
    for error in refusals:
        assert error.code() in RETRYABLE, (error.code(), error.details())
        assert "before this request was computed" not in (error.details() or "")
