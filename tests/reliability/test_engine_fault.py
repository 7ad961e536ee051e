"""Engine fault under load (Python API, no env switch): one batch raises; only its callers get
INTERNAL, the next batches are served, health stays SERVING, the error counter goes up by one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from rmserve.batching.batcher import PREPARED_BATCHES
from rmserve.engine.session import OrtEngine
from rmserve.v1 import reward_pb2
from tests.support.harness import SERVICE, eventually, make_settings, scripted_factory, serving

pytestmark = pytest.mark.asyncio(loop_scope="session")

CALLS = 200
FAILING_CALL = 3  # the 4th engine batch raises


async def test_one_failing_batch_fails_only_its_callers(
    tiny_artifact: Path, offline_engine: OrtEngine
) -> None:
    built, factory = scripted_factory(gate_open=False)
    async with serving(make_settings(tiny_artifact, max_batch_size=8), factory) as h:
        engine = built[0]
        engine.fail_calls = {FAILING_CALL}
        prompts = [f"fault {i}" for i in range(CALLS)]
        responses = ["resp " * (i % 5) for i in range(CALLS)]

        async def one(i: int) -> float | str:
            request = reward_pb2.ScoreRequest(prompt=prompts[i], response=responses[i])
            try:
                return float((await h.stub.Score(request, timeout=60)).reward)
            except grpc.aio.AioRpcError as e:
                return e.code().name

        calls = [asyncio.ensure_future(one(i)) for i in range(CALLS)]
        # Held by the closed gate: one running batch (one engine thread: one intra-op thread)
        # and the prepared ones, of <= 8 rows each, left the queue.
        held = (1 + PREPARED_BATCHES) * 8
        await eventually(lambda: h.metric("rmserve_queue_pairs") >= CALLS - held, "a full queue")
        engine.gate.set()
        results = await asyncio.wait_for(asyncio.gather(*calls), timeout=120)

        failed = [i for i, r in enumerate(results) if isinstance(r, str)]
        assert {results[i] for i in failed} == {"INTERNAL"}
        assert len(failed) == engine.batch_sizes[FAILING_CALL] > 0
        assert engine.calls > FAILING_CALL + 1  # later batches were served
        offline = offline_engine.score_texts(prompts, responses)
        for i, reward in enumerate(results):
            if i not in failed:
                assert reward == pytest.approx(float(offline[i]), abs=1e-5), i
        assert h.metric("rmserve_engine_errors_total") == 1
        assert h.metric("rmserve_requests_total", method="Score", code="INTERNAL") == len(failed)
        for service in ("", SERVICE):
            assert await h.health_status(service) == health_pb2.HealthCheckResponse.SERVING
