"""Fuzzing the request messages with hypothesis against a real server (small limits).

Texts mix empty strings, long strings, combining marks, right-to-left scripts, emoji, NUL and
lone control characters; batches run from 0 to just over max_request_pairs; some messages go
over max_message_bytes. Within the limits every request is OK with finite rewards that equal
the pair scored alone; only requests over a limit get INVALID_ARGUMENT; the server lives on.
A message so large that gRPC's transport limit (TRANSPORT_LIMIT_FACTOR x max_message_bytes)
refuses it before decoding gets the transport's RESOURCE_EXHAUSTED, without retry pushback, so
no client mistakes it for overload.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from harness import make_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rmserve.grpc_service import RETRY_PUSHBACK_KEY
from rmserve.server import TRANSPORT_LIMIT_FACTOR, RewardServer
from rmserve.v1 import reward_pb2, reward_pb2_grpc

MAX_REQUEST_PAIRS = 6
MAX_MESSAGE_BYTES = 16 * 1024
SPECIALS = [
    "",
    "\x00",
    "e\u0301\u0301\u0301",  # combining marks
    "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627",  # Hebrew, Arabic (RTL)
    "\u202eevil\u202c",  # RTL override
    "\U0001f600\U0001f44d\U0001f3fd\u200d",  # emoji, skin tone, ZWJ
    "\x07\x1b[31m\x7f\r",  # lone control characters
    "\ufeff\ufffd",
]
text = st.one_of(
    st.sampled_from(SPECIALS),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=60),
    st.text(st.sampled_from(["a", " ", "\u0301", "\x00", "\u05d0", "\U0001f600"]), max_size=400),
    st.integers(1000, 5000).map(lambda n: "long " * n),  # around / over the size limit
)
pair = st.tuples(text, text)


@pytest.fixture(scope="module")
def target(tiny_artifact: Path) -> Iterator[str]:
    """A real server on its own event loop thread, so hypothesis can drive it synchronously."""
    s = make_settings(
        tiny_artifact,
        max_request_pairs=MAX_REQUEST_PAIRS,
        max_queue_pairs=64,
        max_message_bytes=MAX_MESSAGE_BYTES,
        max_batch_size=4,
    )
    server = RewardServer(s)
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    async def main() -> None:
        await server.start()
        await server.load()
        ready.set()
        await server._stop.wait()
        await server.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(120), "server did not start"
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        loop.call_soon_threadsafe(server.request_stop)
        thread.join(60)
        assert not thread.is_alive()
        assert server.metrics.registry.get_sample_value("rmserve_inflight_requests") == 0


@pytest.fixture(scope="module")
def stub(target: str) -> Iterator[reward_pb2_grpc.RewardServiceStub]:
    with grpc.insecure_channel(target) as channel:
        yield reward_pb2_grpc.RewardServiceStub(channel)


ALONE: dict[tuple[str, str], float] = {}


def alone(stub: reward_pb2_grpc.RewardServiceStub, p: str, r: str) -> float:
    if (p, r) not in ALONE:
        reply = stub.Score(reward_pb2.ScoreRequest(prompt=p, response=r), timeout=60)
        ALONE[(p, r)] = reply.reward
    return ALONE[(p, r)]


def over_size(message: object) -> bool:
    return message.ByteSize() > MAX_MESSAGE_BYTES  # type: ignore[attr-defined]


def check_refusal(request: object, error: grpc.RpcError) -> None:
    """A refused request was over a limit and got the code that limit promises."""
    size = request.ByteSize()  # type: ignore[attr-defined]
    transport_limit = MAX_MESSAGE_BYTES * TRANSPORT_LIMIT_FACTOR
    if size > transport_limit - 16:  # framing bytes: the transport counts a little more
        assert error.code() in (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.INVALID_ARGUMENT,
        ), error.details()
        trailers = dict(error.trailing_metadata() or ())  # type: ignore[attr-defined]
        assert RETRY_PUSHBACK_KEY not in trailers  # never looks like overload
    else:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()


FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(pairs=st.lists(pair, max_size=MAX_REQUEST_PAIRS + 1))
def test_score_batch_fuzz(
    stub: reward_pb2_grpc.RewardServiceStub, pairs: list[tuple[str, str]]
) -> None:
    request = reward_pb2.ScoreBatchRequest(
        pairs=[reward_pb2.Pair(prompt=p, response=r) for p, r in pairs]
    )
    over = len(pairs) > MAX_REQUEST_PAIRS or over_size(request)
    try:
        reply = stub.ScoreBatch(request, timeout=60)
    except grpc.RpcError as e:
        assert over, (e.code(), e.details())
        check_refusal(request, e)
        return
    assert not over, "a request over a limit was accepted"
    rewards = [r.reward for r in reply.results]
    assert len(rewards) == len(pairs) and all(math.isfinite(x) for x in rewards)
    for (p, r), reward in zip(pairs, rewards, strict=True):
        single = reward_pb2.ScoreRequest(prompt=p, response=r)
        if not over_size(single):
            assert reward == pytest.approx(alone(stub, p, r), abs=1e-5)


@FUZZ
@given(prompt=text, a=text, b=text)
def test_prefer_fuzz(stub: reward_pb2_grpc.RewardServiceStub, prompt: str, a: str, b: str) -> None:
    request = reward_pb2.PreferRequest(prompt=prompt, response_a=a, response_b=b)
    try:
        reply = stub.Prefer(request, timeout=60)
    except grpc.RpcError as e:
        assert over_size(request), (e.code(), e.details())
        check_refusal(request, e)
        return
    assert not over_size(request)
    result = reply.result
    assert all(math.isfinite(x) for x in (result.probability_a, result.reward_a, result.reward_b))
    assert 0.0 <= result.probability_a <= 1.0
    assert result.reward_a == pytest.approx(alone(stub, prompt, a), abs=1e-5)
    assert result.reward_b == pytest.approx(alone(stub, prompt, b), abs=1e-5)
