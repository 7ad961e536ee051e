"""Client retries against real servers: only where a retry can succeed, within the deadline,
with backoff. Each test runs for both faces (``AsyncRewardClient`` and ``RewardClient``).

Failures are real server answers, injected through the Python API: an engine gate holds the
server in warm-up (UNAVAILABLE) or keeps its queue full (RESOURCE_EXHAUSTED with pushback).
Codes a real server sends only in races (a CANCELLED reset of a stream it never dispatched while
it drains) come from a scripted front (``flaky_front``) before a real server.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import grpc
import pytest

from rmserve.client import RewardClientError
from rmserve.engine.session import OrtEngine
from rmserve.testing import ScriptedEngine
from rmserve.v1 import reward_pb2
from tests.support.client_tools import FACES, Counting, open_client
from tests.support.flaky_front import Failure, FlakyFront
from tests.support.harness import Harness, eventually, make_settings, scripted_factory, serving

pytestmark = pytest.mark.asyncio(loop_scope="session")

PATIENT = {"max_attempts": 50, "initial_backoff": 0.05, "max_backoff": 0.5, "timeout": 60.0}


def target(harness: Harness) -> str:
    return f"127.0.0.1:{harness.server.port}"


@pytest.mark.parametrize("face", FACES)
async def test_unavailable_while_warming_up_is_retried_until_served(
    face: str, tiny_artifact: Path, offline_engine: OrtEngine
) -> None:
    built, factory = scripted_factory(gate_open=False)
    settings = make_settings(tiny_artifact, warmup_runs=1)
    async with serving(settings, factory, load=False) as harness:
        counter = Counting()
        async with open_client(face, target(harness), counter, **PATIENT) as client:
            call = asyncio.ensure_future(client.score_one("What is 2 plus 2?", "It is 4."))
            await eventually(
                lambda: harness.metric(
                    "rmserve_requests_total", method="Score", code="UNAVAILABLE"
                ) >= 2,
                "the client to be refused twice while the server warms up",
            )  # fmt: skip
            assert not call.done()
            await eventually(lambda: bool(built), "the engine to be built")
            built[0].gate.set()  # warm-up finishes; the server becomes SERVING
            reward = await asyncio.wait_for(call, timeout=60)
    assert counter.calls["Score"] >= 3
    (expected,) = offline_engine.score_texts(["What is 2 plus 2?"], ["It is 4."])
    assert reward == pytest.approx(float(expected), abs=1e-5)


@pytest.mark.parametrize("face", FACES)
async def test_unavailable_gives_up_at_max_attempts(face: str, tiny_artifact: Path) -> None:
    built, factory = scripted_factory(gate_open=False)
    async with serving(make_settings(tiny_artifact, warmup_runs=1), factory, load=False) as h:
        try:
            counter = Counting()
            async with open_client(
                face, target(h), counter, max_attempts=3, initial_backoff=0.01
            ) as client:
                with pytest.raises(RewardClientError) as caught:
                    await client.score_one("q", "a")
            assert caught.value.code.name == "UNAVAILABLE" and caught.value.attempts == 3
            assert counter.calls["Score"] == 3
        finally:
            await eventually(lambda: bool(built), "the engine to be built")
            built[0].gate.set()


async def fill_queue(harness: Harness, engine: ScriptedEngine) -> list[asyncio.Future[object]]:
    """Hold one batch in the engine and fill the queue (max_queue_pairs=8) behind it."""
    first = asyncio.ensure_future(
        harness.stub.Score(reward_pb2.ScoreRequest(prompt="first", response="a"))
    )
    await eventually(lambda: engine.calls == 1, "the first batch to reach the engine")
    queued = asyncio.ensure_future(
        harness.stub.ScoreBatch(
            reward_pb2.ScoreBatchRequest(
                pairs=[reward_pb2.Pair(prompt=f"q{i}", response="a") for i in range(8)]
            )
        )
    )
    await eventually(lambda: harness.metric("rmserve_queue_pairs") == 8, "a full queue")
    return [first, queued]


@pytest.mark.parametrize("face", FACES)
async def test_overload_with_pushback_is_retried(face: str, tiny_artifact: Path) -> None:
    built, factory = scripted_factory(gate_open=False)
    settings = make_settings(tiny_artifact, max_queue_pairs=8, max_request_pairs=8)
    async with serving(settings, factory) as harness:
        engine = built[0]
        try:
            held = await fill_queue(harness, engine)
            counter = Counting()
            async with open_client(face, target(harness), counter, **PATIENT) as client:
                call = asyncio.ensure_future(client.score(["overload"], ["retry me"]))
                await eventually(
                    lambda: harness.metric(
                        "rmserve_requests_total", method="ScoreBatch", code="RESOURCE_EXHAUSTED"
                    ) >= 1,
                    "the client to be refused for overload",
                )  # fmt: skip
                engine.gate.set()
                rewards = await asyncio.wait_for(call, timeout=60)
                await asyncio.gather(*held)
        finally:
            engine.gate.set()
    assert rewards.shape == (1,)
    assert counter.calls["ScoreBatch"] >= 2


@pytest.mark.parametrize("face", FACES)
async def test_resource_exhausted_without_pushback_is_not_retried(
    face: str, shared: Harness
) -> None:
    """A message over gRPC's transport limit is RESOURCE_EXHAUSTED with no pushback: retrying
    cannot help, so the client raises after one attempt."""
    counter = Counting()
    huge = "x" * (3 * 1024 * 1024)  # the shared server's transport limit is 2 MiB
    async with open_client(
        face, target(shared), counter, max_attempts=5, initial_backoff=0.01
    ) as client:
        with pytest.raises(RewardClientError) as caught:
            await client.score_one("q", huge)
    assert caught.value.code.name == "RESOURCE_EXHAUSTED"
    assert caught.value.attempts == 1 and counter.calls["Score"] == 1


@pytest.mark.parametrize("face", FACES)
async def test_server_sent_cancelled_is_retried_with_backoff(
    face: str, shared: Harness, offline_engine: OrtEngine
) -> None:
    """A draining server resets streams it never dispatched (CANCELLED): retried like
    UNAVAILABLE, each retry after an exponential backoff; overload waits out its pushback."""
    failures = [
        Failure(grpc.StatusCode.CANCELLED),
        Failure(grpc.StatusCode.UNAVAILABLE),
        Failure(grpc.StatusCode.CANCELLED),
        Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, pushback_ms=300),
    ]
    options = {"max_attempts": 5, "initial_backoff": 0.1, "max_backoff": 10.0}
    async with (
        FlakyFront(target(shared), failures) as front,
        open_client(face, front.target, **options) as client,
    ):
        reward = await client.score_one("What is 2 plus 2?", "It is 4.")
    (expected,) = offline_engine.score_texts(["What is 2 plus 2?"], ["It is 4."])
    assert reward == pytest.approx(float(expected), abs=1e-5)
    times = [t for name, t in front.arrivals if name == "Score"]
    assert len(times) == 5
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # backoff 0.1 * 2^(n-1) with jitter in [0.5, 1]; after overload, at least the pushback
    bounds = (0.05, 0.1, 0.2, 0.3)
    assert all(gap >= bound for gap, bound in zip(gaps, bounds, strict=True)), gaps


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize(
    "failure",
    [
        Failure(grpc.StatusCode.INTERNAL),
        Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, pushback_ms=-1),  # "do not retry"
    ],
    ids=["internal", "negative-pushback"],
)
async def test_other_failures_are_not_retried(face: str, failure: Failure, shared: Harness) -> None:
    async with (
        FlakyFront(target(shared), [failure]) as front,
        open_client(face, front.target, max_attempts=5, initial_backoff=0.01) as c,
    ):
        with pytest.raises(RewardClientError) as caught:
            await c.score_one("q", "a")
    assert caught.value.code == failure.code and caught.value.attempts == 1
    assert [name for name, _ in front.arrivals] == ["Score"]
