"""Pure parts of the client: chunk spans, retry decisions, error translation, targets."""

from __future__ import annotations

import random

import grpc
import pytest

from rmserve.client.channel import resolve_target
from rmserve.client.errors import DeadlineExceededError, InvalidRequestError, from_rpc_error
from rmserve.client.plan import RetryPolicy, chunk_spans, score_chunks
from rmserve.client.trl import to_pairs

POLICY = RetryPolicy(max_attempts=4, initial_backoff=0.1, max_backoff=0.3)
PUSHBACK = (("grpc-retry-pushback-ms", "250"),)


@pytest.mark.parametrize(
    ("sizes", "max_items", "max_bytes", "expected"),
    [
        ([], 3, 100, []),
        ([1] * 7, 3, 100, [(0, 3), (3, 3), (6, 1)]),
        ([40, 40, 40, 40], 10, 100, [(0, 2), (2, 2)]),
        ([10, 500, 10], 10, 100, [(0, 1), (1, 1), (2, 1)]),  # too big: alone
        ([50, 50, 1], 10, 100, [(0, 2), (2, 1)]),
    ],
)
def test_chunk_spans(
    sizes: list[int], max_items: int, max_bytes: int, expected: list[tuple[int, int]]
) -> None:
    assert chunk_spans(sizes, max_items, max_bytes) == expected


def test_score_chunks_cover_the_input_in_order() -> None:
    prompts = [f"p{i}" for i in range(10)]
    chunks = score_chunks(prompts, [f"r{i}" for i in range(10)], True, 4, 10_000)
    assert [(c.offset, c.count) for c in chunks] == [(0, 4), (4, 4), (8, 2)]
    assert [p.prompt for c in chunks for p in c.request.pairs] == prompts
    assert all(c.request.normalize for c in chunks)


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED])
def test_unavailable_and_server_cancel_back_off_exponentially_with_jitter(
    code: grpc.StatusCode,
) -> None:
    rng = random.Random(0)
    delays = [POLICY.delay(code, (), n, rng) for n in (1, 2, 3)]
    for delay, cap in zip(delays, (0.1, 0.2, 0.3), strict=True):
        assert delay is not None and cap / 2 <= delay <= cap
    assert POLICY.delay(code, (), 4, rng) is None  # out of attempts


def test_resource_exhausted_is_retried_only_with_pushback() -> None:
    rng = random.Random(0)
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    delay = POLICY.delay(code, PUSHBACK, 1, rng)
    assert delay is not None and delay >= 0.25
    assert POLICY.delay(code, (), 1, rng) is None
    assert POLICY.delay(code, (("grpc-retry-pushback-ms", "-1"),), 1, rng) is None
    assert POLICY.delay(code, (("grpc-retry-pushback-ms", "soon"),), 1, rng) is None


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
    ],
)
def test_other_codes_are_never_retried(code: grpc.StatusCode) -> None:
    assert POLICY.delay(code, PUSHBACK, 1, random.Random(0)) is None


def test_invalid_argument_names_the_callers_index() -> None:
    error = from_rpc_error(
        grpc.StatusCode.INVALID_ARGUMENT, "pairs[3].prompt is required", 1, 2000, 1000
    )
    assert isinstance(error, InvalidRequestError) and isinstance(error, ValueError)
    assert (error.index, error.field) == (2003, "prompt")
    assert "pairs[2003].prompt is required" in str(error)
    single = from_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "response is required", 1, 0, 1)
    assert isinstance(single, InvalidRequestError) and single.index == 0
    whole = from_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "pairs: too many", 1, 0, 9)
    assert isinstance(whole, InvalidRequestError) and whole.index is None


def test_deadline_is_a_timeout_error() -> None:
    error = from_rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "late", 2, 0, 1)
    assert isinstance(error, DeadlineExceededError) and isinstance(error, TimeoutError)
    assert error.attempts == 2


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("localhost:50051", "localhost:50051"),
        ("dns:///rmserve-headless.ns.svc:50051", "dns:///rmserve-headless.ns.svc:50051"),
        ("127.0.0.1:1, 127.0.0.1:2,127.0.0.1:3", "ipv4:127.0.0.1:1,127.0.0.1:2,127.0.0.1:3"),
        ("[::1]:1,[::1]:2", "ipv6:[::1]:1,[::1]:2"),
    ],
)
def test_resolve_target(target: str, expected: str) -> None:
    assert resolve_target(target) == expected


@pytest.mark.parametrize("target", ["", "nohost", "127.0.0.1:1,[::1]:2", "a:1,b:x"])
def test_bad_targets_are_refused(target: str) -> None:
    with pytest.raises(ValueError):
        resolve_target(target)


def test_to_pairs_renders_conversations_and_checks_lengths() -> None:
    prompts, responses = to_pairs(
        ["plain", [{"role": "user", "content": "hi"}]],
        ["text", [{"role": "assistant", "content": "hello"}]],
    )
    assert prompts == ["plain", "\n\nHuman: hi\n\nAssistant:"]
    assert responses == ["text", "hello"]
    with pytest.raises(ValueError, match="2 prompts and 1 completions"):
        to_pairs(["a", "b"], ["c"])
