"""Cancel and deadline storms: 1,000 calls each, then the gauges, counters and log are clean."""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path

import grpc
import pytest
from harness import eventually, make_settings, scripted_factory, serving

from rmserve.engine import OrtEngine
from rmserve.v1 import reward_pb2, reward_pb2_grpc

pytestmark = pytest.mark.asyncio(loop_scope="session")

STORM = 1000
WAVE = 100  # concurrent calls per channel: well under the server's stream limit


async def test_cancel_storm_leaks_nothing(
    tiny_artifact: Path, offline_engine: OrtEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    rng = random.Random(0)
    async with serving(make_settings(tiny_artifact, max_batch_size=16)) as h:

        async def cancel_later(k: int) -> str:
            n = rng.choice([1, 1, 2, 8, 32])
            pairs = [reward_pb2.Pair(prompt=f"storm {k}.{i}", response="r " * i) for i in range(n)]
            call = h.stub.ScoreBatch(reward_pb2.ScoreBatchRequest(pairs=pairs), timeout=60)
            # queued, in a batch, or just finished: a random moment in the call's life
            await asyncio.sleep(rng.uniform(0.0, 0.03))
            call.cancel()
            try:
                await call
            except asyncio.CancelledError:
                return "CANCELLED"
            except grpc.aio.AioRpcError as e:
                return e.code().name
            return "OK"

        outcomes: list[str] = []
        for wave in range(STORM // WAVE):
            calls = [cancel_later(wave * WAVE + i) for i in range(WAVE)]
            outcomes += await asyncio.wait_for(asyncio.gather(*calls), timeout=120)
        assert set(outcomes) <= {"OK", "CANCELLED"}, set(outcomes)
        assert outcomes.count("CANCELLED") > STORM // 2

        await eventually(lambda: h.metric("rmserve_inflight_requests") == 0, "inflight 0")
        await eventually(lambda: h.metric("rmserve_queue_pairs") == 0, "queue empty")
        assert h.server.core is not None and h.server.core.inflight == 0
        assert h.metric("rmserve_cancelled_total") > 0
        assert h.metric("rmserve_engine_errors_total") == 0

        prompts = [f"after the storm {i}" for i in range(40)]
        responses = ["fine " * i for i in range(40)]
        request = reward_pb2.ScoreBatchRequest(
            pairs=[
                reward_pb2.Pair(prompt=p, response=r)
                for p, r in zip(prompts, responses, strict=True)
            ]
        )
        reply = await h.stub.ScoreBatch(request, timeout=60)
        offline = offline_engine.score_texts(prompts, responses)
        assert [r.reward for r in reply.results] == pytest.approx(offline.tolist(), abs=1e-5)
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not problems, [r.getMessage() for r in problems]


async def test_deadline_storm_is_answered_and_never_computed(tiny_artifact: Path) -> None:
    built, factory = scripted_factory(gate_open=False)  # the queue waits until the gate opens
    settings = make_settings(tiny_artifact, max_queue_pairs=4096, max_batch_size=32)
    async with serving(settings, factory) as h:
        engine = built[0]
        try:
            first = asyncio.ensure_future(
                h.stub.Score(reward_pb2.ScoreRequest(prompt="first", response="held"))
            )
            await eventually(lambda: engine.calls == 1, "the first batch to reach the engine")
            channels = [
                grpc.aio.insecure_channel(f"127.0.0.1:{h.server.port}")
                for _ in range(STORM // WAVE)
            ]
            stubs = [reward_pb2_grpc.RewardServiceStub(c) for c in channels]

            async def late(k: int) -> str:
                stub = stubs[k // WAVE]
                request = reward_pb2.ScoreRequest(prompt=f"late {k}", response="never computed")
                try:
                    await stub.Score(request, timeout=2.0)  # shorter than the (gated) queue wait
                except grpc.aio.AioRpcError as e:
                    return e.code().name
                return "OK"

            codes = await asyncio.wait_for(
                asyncio.gather(*(late(k) for k in range(STORM))), timeout=120
            )
            assert codes == ["DEADLINE_EXCEEDED"] * STORM
            await eventually(lambda: h.metric("rmserve_expired_total") == STORM, "expired_total")
            await eventually(lambda: h.metric("rmserve_queue_pairs") == 0, "the queue to empty")
            for channel in channels:
                await channel.close()
        finally:
            engine.gate.set()
        assert (await first).num_tokens > 0
        await eventually(lambda: h.metric("rmserve_inflight_requests") == 0, "inflight 0")
        # skipped, not computed: only the first call ever reached the engine's forward pass
        assert engine.scored_pairs == 1 == h.metric("rmserve_pairs_total")
        assert engine.batch_sizes == [1]
