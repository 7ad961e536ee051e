"""Admission by memory on a real server: request bytes in flight are bounded by
max_inflight_bytes; beyond it new work is RESOURCE_EXHAUSTED (gRPC) or 429 (HTTP) with a retry
hint, exactly like a full queue, while small calls still get in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest

from rmserve.grpc.service import RETRY_PUSHBACK_KEY
from rmserve.serving.memory_budget import MIB, SMALL_REQUEST_RESERVE_BYTES
from rmserve.testing import ScriptedEngine
from rmserve.v1 import reward_pb2
from tests.support.harness import Harness, eventually, make_settings, scripted_factory, serving

pytestmark = pytest.mark.asyncio(loop_scope="session")

LIMIT = 2 * MIB
BUDGET = LIMIT + SMALL_REQUEST_RESERVE_BYTES
GAUGE = "rmserve_inflight_request_bytes"


def big_batch(size: int) -> reward_pb2.ScoreBatchRequest:
    """A ScoreBatch of about ``size`` bytes: 16 pairs of long responses."""
    text = "word " * (size // 16 // 5)
    return reward_pb2.ScoreBatchRequest(
        pairs=[reward_pb2.Pair(prompt=f"q{i}", response=text) for i in range(16)]
    )


@pytest.fixture
async def gated(tiny_artifact: Path) -> AsyncIterator[tuple[Harness, ScriptedEngine]]:
    built, factory = scripted_factory(gate_open=False)
    settings = make_settings(
        tiny_artifact, max_message_bytes=LIMIT, max_inflight_bytes=BUDGET, http_port=0
    )
    async with serving(settings, factory) as harness:
        try:
            yield harness, built[0]
        finally:
            built[0].gate.set()


async def test_bytes_in_flight_are_bounded_and_small_calls_still_get_in(
    gated: tuple[Harness, ScriptedEngine],
) -> None:
    harness, engine = gated
    first = big_batch(LIMIT * 3 // 4)
    size = first.ByteSize()
    held = asyncio.ensure_future(harness.stub.ScoreBatch(first))
    await eventually(lambda: engine.calls == 1, "the big request's batch to reach the engine")
    assert harness.metric(GAUGE) == size

    second = harness.stub.ScoreBatch(big_batch(LIMIT // 2))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await second
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"max_inflight_bytes={BUDGET}" in (refused.value.details() or "")
    assert int(dict(await second.trailing_metadata())[RETRY_PUSHBACK_KEY]) > 0

    url = f"http://127.0.0.1:{harness.server.http_port}/get_reward"
    body = {"query": ["q" + "word " * 200_000], "prompts": ["q"]}  # ~1 MB
    timeout = aiohttp.ClientTimeout(total=60)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(url, json=body) as reply,
    ):
        assert reply.status == 429
        assert int(reply.headers["Retry-After"]) >= 1
        assert "max_inflight_bytes" in (await reply.json())["error"]["message"]

    small = asyncio.ensure_future(
        harness.stub.Score(reward_pb2.ScoreRequest(prompt="q", response="a"))
    )
    await eventually(lambda: harness.metric(GAUGE) > size, "the small call admitted beside")
    assert not small.done()

    engine.gate.set()
    assert len((await held).results) == 16
    assert (await small).num_tokens > 0
    await eventually(lambda: harness.metric(GAUGE) == 0, "the budget to be released")
    assert (
        harness.metric("rmserve_requests_total", method="ScoreBatch", code="RESOURCE_EXHAUSTED")
        == 1
    )
