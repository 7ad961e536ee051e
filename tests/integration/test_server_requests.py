"""Malformed requests are INVALID_ARGUMENT naming the field and index, and never queued."""

from __future__ import annotations

import grpc
import pytest

from rmserve.v1 import reward_pb2
from tests.support.harness import Harness

pytestmark = pytest.mark.asyncio(loop_scope="session")


def pair(prompt: str | None = "p", response: str | None = "r") -> reward_pb2.Pair:
    p = reward_pb2.Pair()
    if prompt is not None:
        p.prompt = prompt
    if response is not None:
        p.response = response
    return p


async def expect_invalid(harness: Harness, call: object, *needles: str) -> None:
    pairs_before = harness.metric("rmserve_pairs_total")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details() or ""
    for needle in needles:
        assert needle in details, details
    assert harness.metric("rmserve_pairs_total") == pairs_before
    assert harness.metric("rmserve_queue_pairs") == 0


async def test_unset_fields_are_named(shared: Harness) -> None:
    await expect_invalid(shared, shared.stub.Score(reward_pb2.ScoreRequest(prompt="x")), "response")
    await expect_invalid(
        shared, shared.stub.Score(reward_pb2.ScoreRequest(response="x")), "prompt is required"
    )
    batch = reward_pb2.ScoreBatchRequest(pairs=[pair(), pair(), pair(), pair(response=None)])
    await expect_invalid(shared, shared.stub.ScoreBatch(batch), "pairs[3].response")
    items = [
        reward_pb2.PreferItem(prompt="p", response_a="a", response_b="b"),
        reward_pb2.PreferItem(prompt="p", response_a="a"),
    ]
    await expect_invalid(
        shared,
        shared.stub.PreferBatch(reward_pb2.PreferBatchRequest(items=items)),
        "items[1].response_b",
    )
    prefer = reward_pb2.PreferRequest(response_a="a", response_b="b")
    await expect_invalid(shared, shared.stub.Prefer(prefer), "prompt")
    assert (
        shared.metric("rmserve_requests_total", method="ScoreBatch", code="INVALID_ARGUMENT") >= 1
    )


async def test_request_over_max_request_pairs(shared: Harness) -> None:
    batch = reward_pb2.ScoreBatchRequest(pairs=[pair()] * 2001)
    await expect_invalid(shared, shared.stub.ScoreBatch(batch), "pairs", "max_request_pairs=2000")
    items = [reward_pb2.PreferItem(prompt="", response_a="", response_b="")] * 2001
    request = reward_pb2.PreferBatchRequest(items=items)
    await expect_invalid(shared, shared.stub.PreferBatch(request), "items", "max_request_pairs")


async def test_message_over_max_message_bytes(shared: Harness) -> None:
    request = reward_pb2.ScoreRequest(prompt="x" * (1024 * 1024 + 10), response="")
    await expect_invalid(shared, shared.stub.Score(request), "max_message_bytes=1048576")


async def test_empty_batch_is_valid(shared: Harness) -> None:
    reply = await shared.stub.ScoreBatch(reward_pb2.ScoreBatchRequest())
    assert list(reply.results) == [] and reply.model_version
