"""Malformed and oversized input against a real server: refused as a 4xx, quietly, unparsed.

Raw bytes go to the RewardService methods through a generic channel call (no serializer), as a
hostile or broken client would send them: a truncated protobuf and invalid UTF-8 in a string
field are INVALID_ARGUMENT with at most one log line (no traceback, no request text); a message
just over ``max_message_bytes`` is INVALID_ARGUMENT naming the limit and is never parsed; past
the transport limit gRPC refuses it (RESOURCE_EXHAUSTED, no pushback).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError

from rmserve.grpc import service as grpc_service
from rmserve.grpc.service import RETRY_PUSHBACK_KEY
from rmserve.server.grpc_server import TRANSPORT_ENVELOPE_BYTES, transport_limit
from rmserve.v1 import reward_pb2
from tests.support.harness import Harness, make_settings, serving

pytestmark = pytest.mark.asyncio(loop_scope="session")

MAX_MESSAGE_BYTES = 4096
MARKER = b"MARKER-7f3a-request-text"
SCORE = "/rmserve.v1.RewardService/Score"
SCORE_BATCH = "/rmserve.v1.RewardService/ScoreBatch"


@pytest.fixture(scope="module")
async def h(tiny_artifact: Path) -> AsyncIterator[Harness]:
    settings = make_settings(tiny_artifact, max_message_bytes=MAX_MESSAGE_BYTES)
    async with serving(settings) as harness:
        yield harness


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Sizes of the request bytes the servicer parsed during the test."""
    seen: list[int] = []
    real: Callable[..., Any] = grpc_service.parse_request

    def counting(message_type: Any, raw: bytes) -> Any:
        seen.append(len(raw))
        return real(message_type, raw)

    monkeypatch.setattr(grpc_service, "parse_request", counting)
    yield seen


async def call_raw(h: Harness, method: str, raw: bytes) -> tuple[grpc.StatusCode, str, Any]:
    """Send ``raw`` as the request message of ``method``; (code, details, trailing metadata)."""
    call = h.channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    try:
        await call(raw, timeout=60)
    except grpc.aio.AioRpcError as e:
        return e.code(), e.details() or "", e.trailing_metadata()
    return grpc.StatusCode.OK, "", ()


def metric(h: Harness, method: str, code: str) -> float:
    return h.metric("rmserve_requests_total", method=method, code=code)


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def score_request_of_size(size: int) -> bytes:
    """A valid ScoreRequest (prompt of 'a's, empty response) of exactly ``size`` bytes."""
    for n in range(size, 0, -1):
        raw = b"\x0a" + varint(n) + b"a" * n + b"\x12\x00"
        if len(raw) == size:
            assert reward_pb2.ScoreRequest.FromString(raw).prompt == "a" * n
            return raw
    raise AssertionError(size)


def quiet(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The records logged during the test; none carries a traceback or the request text."""
    for record in caplog.records:
        assert record.exc_info is None, record.getMessage()
        assert "Traceback" not in record.getMessage()
        assert MARKER.decode() not in record.getMessage()
    return caplog.records


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        # field 1 claims 64 bytes of prompt, the message ends after the marker
        ("truncated", b"\x0a\x40" + MARKER),
        # field 1 holds bytes that are not UTF-8 around the marker
        ("invalid UTF-8", b"\x0a" + varint(len(MARKER) + 2) + b"\xff" + MARKER + b"\xfe\x12\x00"),
        # a field number 0 tag: never valid
        ("bad tag", b"\x00\x01" + MARKER),
    ],
)
async def test_undecodable_score_is_invalid_argument_with_one_quiet_line(
    h: Harness, caplog: pytest.LogCaptureFixture, name: str, raw: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DecodeError):  # the bytes really are not a ScoreRequest
        reward_pb2.ScoreRequest.FromString(raw)
    before = metric(h, "Score", "INVALID_ARGUMENT")
    code, details, _ = await call_raw(h, SCORE, raw)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (name, code, details)
    assert details.startswith("request: not a valid rmserve.v1.ScoreRequest: "), details
    assert MARKER.decode() not in details
    assert metric(h, "Score", "INVALID_ARGUMENT") == before + 1
    records = [r for r in quiet(caplog) if r.levelno >= logging.INFO]
    assert [(r.name, r.levelno) for r in records] == [("rmserve.grpc.service", logging.INFO)]
    assert "not a valid rmserve.v1.ScoreRequest" in records[0].getMessage()
    assert await h.health_status() == 1  # SERVING


async def test_a_message_just_over_the_limit_is_refused_unparsed(
    h: Harness, parses: list[int]
) -> None:
    pairs_before = h.metric("rmserve_pairs_total")
    at_limit = score_request_of_size(MAX_MESSAGE_BYTES)
    assert (await call_raw(h, SCORE, at_limit))[0] == grpc.StatusCode.OK
    assert parses == [MAX_MESSAGE_BYTES]
    assert h.metric("rmserve_pairs_total") == pairs_before + 1

    over = score_request_of_size(MAX_MESSAGE_BYTES + 1)
    code, details, trailers = await call_raw(h, SCORE, over)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert f"{MAX_MESSAGE_BYTES + 1} bytes is over max_message_bytes={MAX_MESSAGE_BYTES}" in details
    assert RETRY_PUSHBACK_KEY not in dict(trailers or ())
    assert parses == [MAX_MESSAGE_BYTES]  # never parsed
    assert h.metric("rmserve_pairs_total") == pairs_before + 1


async def test_past_the_transport_limit_grpc_refuses_without_pushback(
    h: Harness, parses: list[int]
) -> None:
    limit = transport_limit(MAX_MESSAGE_BYTES)
    assert limit == MAX_MESSAGE_BYTES + TRANSPORT_ENVELOPE_BYTES
    before = metric(h, "ScoreBatch", "INVALID_ARGUMENT")
    code, details, trailers = await call_raw(h, SCORE_BATCH, score_request_of_size(limit + 1))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
    assert RETRY_PUSHBACK_KEY not in dict(trailers or ())
    assert parses == []  # the servicer never saw it
    assert metric(h, "ScoreBatch", "INVALID_ARGUMENT") == before
    # the largest message gRPC hands over is still refused by its length, unparsed
    code, details, _ = await call_raw(h, SCORE_BATCH, score_request_of_size(limit))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert f"max_message_bytes={MAX_MESSAGE_BYTES}" in details
    assert parses == []


async def test_the_generated_stub_still_works(h: Harness) -> None:
    reply = await h.stub.Score(reward_pb2.ScoreRequest(prompt="p", response="r"), timeout=60)
    assert reply.num_tokens > 0
    info = await h.stub.GetModelInfo(reward_pb2.GetModelInfoRequest(), timeout=60)
    assert info.max_request_pairs > 0
