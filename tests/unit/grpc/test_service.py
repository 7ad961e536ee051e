"""The servicer's error path when gRPC has already ended the call (its own deadline timer)."""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

import grpc
import pytest

from rmserve.grpc.service import RequestBytes, RewardServicer
from rmserve.observability.metrics import Metrics
from rmserve.v1 import reward_pb2


class FakeContext:
    """What the servicer uses of ``grpc.aio.ServicerContext``."""

    def __init__(self, done: bool, abort_error: BaseException) -> None:
        self._done = done
        self._abort_error = abort_error
        self.aborted: list[tuple[grpc.StatusCode, str]] = []

    def time_remaining(self) -> float | None:
        return None

    def done(self) -> bool:
        return self._done

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        self.aborted.append((code, details))
        raise self._abort_error


def unavailable_servicer() -> RewardServicer:
    return RewardServicer(lambda: None, Metrics(), max_message_bytes=1 << 20)  # still loading


async def score(servicer: RewardServicer, context: FakeContext) -> None:
    request = reward_pb2.ScoreRequest(prompt="p", response="r")
    await servicer.Score(RequestBytes(request.SerializeToString()), context)  # type: ignore[arg-type]


async def test_an_open_call_is_aborted_with_the_mapped_status() -> None:
    context = FakeContext(done=False, abort_error=grpc.aio.AbortError())
    with pytest.raises(grpc.aio.AbortError):
        await score(unavailable_servicer(), context)
    assert [code for code, _ in context.aborted] == [grpc.StatusCode.UNAVAILABLE]


async def test_a_call_gRPC_already_ended_is_not_written_to() -> None:
    context = FakeContext(done=True, abort_error=AssertionError("abort must not be called"))
    with pytest.raises(asyncio.CancelledError):
        await score(unavailable_servicer(), context)
    assert context.aborted == []


async def test_a_call_ending_during_the_abort_counts_as_cancelled() -> None:
    context = FakeContext(done=False, abort_error=grpc.aio.InternalError("call already ended"))
    with pytest.raises(asyncio.CancelledError):
        await score(unavailable_servicer(), context)
    assert len(context.aborted) == 1
