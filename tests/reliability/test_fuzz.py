"""Fuzzing the request messages with hypothesis against a real server (small limits).

Texts mix empty strings, long strings, combining marks, right-to-left scripts, emoji, NUL and
lone control characters; batches run from 0 to just over max_request_pairs; some messages go
over max_message_bytes. Within the limits every request is OK with finite rewards that equal
the pair scored alone; only requests over a limit get INVALID_ARGUMENT; the server lives on.
A message past gRPC's transport limit (max_message_bytes + TRANSPORT_ENVELOPE_BYTES), refused
before it reaches Python, gets the transport's RESOURCE_EXHAUSTED, without retry pushback, so no
client mistakes it for overload.

Raw bytes are fuzzed too, at the method level (a generic call without serializer): random bytes
and valid messages truncated, overwritten or spliced. Every answer is OK or INVALID_ARGUMENT
(bytes that are not a message of the method's request type always INVALID_ARGUMENT), never
UNKNOWN or INTERNAL; nothing is logged at ERROR or with a traceback; the server stays SERVING.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rmserve.grpc.service import RETRY_PUSHBACK_KEY, REWARD_SERVICE
from rmserve.server.app import RewardServer
from rmserve.server.grpc_server import transport_limit
from rmserve.v1 import reward_pb2, reward_pb2_grpc
from tests.support.harness import make_settings

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
def channel(target: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(target) as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> reward_pb2_grpc.RewardServiceStub:
    return reward_pb2_grpc.RewardServiceStub(channel)


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
    if size > transport_limit(MAX_MESSAGE_BYTES):  # gRPC refused it before Python saw it
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


REQUEST_TYPES = {m.name: getattr(reward_pb2, m.input_type.name) for m in REWARD_SERVICE.methods}
small_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
valid_bytes = st.one_of(
    st.builds(
        lambda p, r: reward_pb2.ScoreRequest(prompt=p, response=r).SerializeToString(),
        small_text,
        small_text,
    ),
    st.builds(
        lambda pairs: reward_pb2.ScoreBatchRequest(
            pairs=[reward_pb2.Pair(prompt=p, response=r) for p, r in pairs]
        ).SerializeToString(),
        st.lists(st.tuples(small_text, small_text), max_size=3),
    ),
    st.builds(
        lambda p, a, b: reward_pb2.PreferRequest(
            prompt=p, response_a=a, response_b=b
        ).SerializeToString(),
        small_text,
        small_text,
        small_text,
    ),
)


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    """A valid message cut short, with a byte overwritten, or with random bytes spliced in."""
    raw = draw(valid_bytes)
    at = draw(st.integers(0, len(raw)))
    how = draw(st.sampled_from(["truncate", "overwrite", "splice"]))
    if how == "truncate":
        return raw[:at]
    if how == "overwrite" and at < len(raw):
        return raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1 :]
    return raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at:]


def decodes(message_type: type, raw: bytes) -> bool:
    try:
        message_type.FromString(raw)  # type: ignore[attr-defined]
    except DecodeError:
        return False
    return True


@FUZZ
@given(
    method=st.sampled_from(sorted(REQUEST_TYPES)),
    raw=st.one_of(st.binary(max_size=300), mangled()),
)
def test_raw_bytes_fuzz(
    channel: grpc.Channel, caplog: pytest.LogCaptureFixture, method: str, raw: bytes
) -> None:
    call = channel.unary_unary(
        f"/{REWARD_SERVICE.full_name}/{method}",
        request_serializer=None,
        response_deserializer=None,
    )
    try:
        call(raw, timeout=60)
        code, details = grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        code, details = e.code(), e.details()  # type: ignore[attr-defined]
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), (code, details)
    request_type = REQUEST_TYPES[method]
    if not decodes(request_type, raw):
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details.startswith(f"request: not a valid {request_type.DESCRIPTOR.full_name}: ")
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info is not None]
    assert not loud, [r.getMessage() for r in loud]
    health = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=REWARD_SERVICE.full_name), timeout=60
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
