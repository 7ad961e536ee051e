"""Queue behaviour through the real server, with the engine held by a gate (no wall-clock bets).

The engine gate holds batch 1 in the engine; what the test sends next stays queued until it
opens the gate, so queue states are asserted through the gauges and counters.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from rmserve.engine.session import OrtEngine
from rmserve.grpc.service import RETRY_PUSHBACK_KEY
from rmserve.testing import ScriptedEngine
from rmserve.v1 import reward_pb2
from tests.support.harness import (
    SERVICE,
    Harness,
    eventually,
    health_becomes,
    make_settings,
    scripted_factory,
    serving,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def score(prompt: str = "q", response: str = "a") -> reward_pb2.ScoreRequest:
    return reward_pb2.ScoreRequest(prompt=prompt, response=response)


def batch(n: int) -> reward_pb2.ScoreBatchRequest:
    return reward_pb2.ScoreBatchRequest(
        pairs=[reward_pb2.Pair(prompt=f"q{i}", response="a") for i in range(n)]
    )


async def rpc_code(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as e:
        return e.code()
    return grpc.StatusCode.OK


@pytest.fixture
async def gated(tiny_artifact: Path) -> AsyncIterator[tuple[Harness, ScriptedEngine]]:
    """A server whose engine holds every batch until the test opens ``engine.gate``."""
    built, factory = scripted_factory(gate_open=False)
    settings = make_settings(
        tiny_artifact, max_batch_size=64, max_queue_pairs=8, max_request_pairs=8
    )
    async with serving(settings, factory) as harness:
        try:
            yield harness, built[0]
        finally:
            built[0].gate.set()


async def hold_engine(harness: Harness, engine: ScriptedEngine) -> asyncio.Task[object]:
    """Send one Score and wait until its batch sits in the (closed) engine."""
    first = asyncio.ensure_future(harness.stub.Score(score("first")))
    await eventually(lambda: engine.calls == 1, "the first batch to reach the engine")
    return first


async def test_overload_is_refused_without_queueing(
    gated: tuple[Harness, ScriptedEngine],
) -> None:
    harness, engine = gated
    first = await hold_engine(harness, engine)
    queued = asyncio.ensure_future(harness.stub.ScoreBatch(batch(8)))
    await eventually(lambda: harness.metric("rmserve_queue_pairs") == 8, "8 queued pairs")

    call = harness.stub.Score(score("one too many"))
    assert await rpc_code(call) == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers = dict(await call.trailing_metadata())
    assert int(trailers[RETRY_PUSHBACK_KEY]) > 0
    assert "max_queue_pairs=8" in (await call.details())
    assert harness.metric("rmserve_queue_pairs") == 8  # the refused pair never joined
    assert harness.metric("rmserve_requests_total", method="Score", code="RESOURCE_EXHAUSTED") == 1
    # health and model info still answer while the queue is full
    assert await harness.health_status(SERVICE) == SERVING
    info = await harness.stub.GetModelInfo(reward_pb2.GetModelInfoRequest())
    assert info.max_queue_pairs == 8

    engine.gate.set()
    await first
    assert len((await queued).results) == 8
    assert harness.metric("rmserve_pairs_total") == 9 == engine.scored_pairs


async def test_expired_deadline_is_answered_and_never_computed(
    gated: tuple[Harness, ScriptedEngine],
) -> None:
    harness, engine = gated
    first = await hold_engine(harness, engine)
    late = harness.stub.ScoreBatch(batch(3), timeout=0.5)
    assert await rpc_code(late) == grpc.StatusCode.DEADLINE_EXCEEDED
    # The client's own deadline fires a moment before the server's: the server sees either its
    # deadline pass (expired) or the client's RST first (cancelled), never a computed request.
    await eventually(
        lambda: (
            harness.metric("rmserve_expired_total") + harness.metric("rmserve_cancelled_total") == 1
        ),
        "the late call to be counted as expired or cancelled",
    )
    await eventually(lambda: harness.metric("rmserve_queue_pairs") == 0, "the queue to empty")

    engine.gate.set()
    await first
    assert harness.metric("rmserve_pairs_total") == 1 == engine.scored_pairs
    assert engine.calls == 1  # no batch ever held the expired pairs


async def test_cancelled_call_frees_its_queue_slot(gated: tuple[Harness, ScriptedEngine]) -> None:
    harness, engine = gated
    first = await hold_engine(harness, engine)
    doomed = harness.stub.ScoreBatch(batch(5))
    await eventually(lambda: harness.metric("rmserve_queue_pairs") == 5, "5 queued pairs")
    doomed.cancel()
    await eventually(lambda: harness.metric("rmserve_queue_pairs") == 0, "the slot to free")
    await eventually(lambda: harness.metric("rmserve_cancelled_total") == 1, "cancelled_total")
    after = asyncio.ensure_future(harness.stub.ScoreBatch(batch(8)))  # fits only if freed
    await eventually(lambda: harness.metric("rmserve_queue_pairs") == 8, "8 queued pairs")

    engine.gate.set()
    await first
    assert len((await after).results) == 8
    assert engine.scored_pairs == 9


async def test_engine_failure_fails_only_its_batch(tiny_artifact: Path) -> None:
    built, factory = scripted_factory(gate_open=False)
    async with serving(make_settings(tiny_artifact), factory) as harness:
        engine = built[0]
        engine.fail_calls = {0}
        first = await hold_engine(harness, engine)
        others = [asyncio.ensure_future(harness.stub.Score(score(f"q{i}"))) for i in range(3)]
        await eventually(lambda: harness.metric("rmserve_queue_pairs") == 3, "3 queued pairs")
        engine.gate.set()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await first
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert "scripted failure" in (info.value.details() or "")
        assert all(reply.model_version for reply in await asyncio.gather(*others))
        assert harness.metric("rmserve_engine_errors_total") == 1
        assert (await harness.stub.Score(score())).model_version  # the server lives on
        assert await harness.health_status() == SERVING


async def test_not_serving_while_warming_up_then_serving(tiny_artifact: Path) -> None:
    built, factory = scripted_factory(gate_open=False)
    settings = make_settings(tiny_artifact, warmup_runs=3)
    async with serving(settings, factory, load=False) as harness:
        await eventually(lambda: bool(built) and built[0].calls >= 1, "warm-up to start")
        for service in ("", SERVICE):
            assert await harness.health_status(service) == NOT_SERVING
        assert await rpc_code(harness.stub.Score(score())) == grpc.StatusCode.UNAVAILABLE
        built[0].gate.set()
        for service in ("", SERVICE):
            await health_becomes(harness, SERVING, service)
        assert (await harness.stub.Score(score())).num_tokens > 0


async def test_drain_finishes_accepted_work_and_refuses_new(
    gated: tuple[Harness, ScriptedEngine],
) -> None:
    harness, engine = gated
    first = await hold_engine(harness, engine)
    accepted = asyncio.ensure_future(harness.stub.ScoreBatch(batch(4)))
    await eventually(lambda: harness.metric("rmserve_queue_pairs") == 4, "4 queued pairs")

    stopping = asyncio.create_task(harness.server.stop())  # what SIGTERM triggers
    await health_becomes(harness, NOT_SERVING)
    assert await harness.health_status(SERVICE) == NOT_SERVING
    assert await rpc_code(harness.stub.Score(score())) == grpc.StatusCode.UNAVAILABLE

    engine.gate.set()
    assert (await first).num_tokens > 0
    assert len((await accepted).results) == 4
    await asyncio.wait_for(stopping, timeout=60)
    assert engine.scored_pairs == 5


@pytest.mark.parametrize(
    ("intra_op_threads", "engine_workers", "at_once"),
    [(2, 0, 2), (2, 1, 1), (1, 0, 1)],  # auto on a 2-thread CPU budget: 2; one thread: 1
)
async def test_engine_workers_run_that_many_batches_at_once(
    tiny_artifact: Path,
    offline_engine: OrtEngine,
    intra_op_threads: int,
    engine_workers: int,
    at_once: int,
) -> None:
    built, factory = scripted_factory(gate_open=False)
    settings = make_settings(
        tiny_artifact,
        max_batch_size=4,
        intra_op_threads=intra_op_threads,
        engine_workers=engine_workers,
    )
    prompts = [f"worker prompt {i}" for i in range(16)]
    responses = ["answer " * (i % 4 + 1) for i in range(16)]
    async with serving(settings, factory) as h:
        engine = built[0]
        calls = [
            asyncio.ensure_future(h.stub.Score(score(p, r), timeout=60))
            for p, r in zip(prompts, responses, strict=True)
        ]
        # Every engine thread takes a batch as soon as it is free: the gate holds them there.
        await eventually(lambda: engine.running == at_once, f"{at_once} batches in the engine")
        info = await h.stub.GetModelInfo(reward_pb2.GetModelInfoRequest(), timeout=60)
        assert info.engine_workers == at_once
        engine.gate.set()
        replies = await asyncio.wait_for(asyncio.gather(*calls), timeout=120)
    assert engine.most_running == at_once
    offline = offline_engine.score_texts(prompts, responses)
    assert [r.reward for r in replies] == pytest.approx(offline.tolist(), abs=1e-5)
