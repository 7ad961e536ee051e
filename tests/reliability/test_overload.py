"""Overload at about 4x capacity: every call ends OK, RESOURCE_EXHAUSTED without being queued,
or DEADLINE_EXCEEDED; none outlives its deadline; afterwards the server is healthy and empty."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest
from harness import make_settings, serving

from rmserve.engine import OrtEngine
from rmserve.grpc_service import RETRY_PUSHBACK_KEY
from rmserve.v1 import reward_pb2

pytestmark = pytest.mark.asyncio(loop_scope="session")

PAIRS_PER_CALL = 32
DEADLINE_S = 1.0
LOAD_S = 3.0
SLACK_S = 2.0  # generous: "ends by its deadline", not a latency target
ENDINGS = {"OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"}


def request(k: int) -> reward_pb2.ScoreBatchRequest:
    return reward_pb2.ScoreBatchRequest(
        pairs=[
            reward_pb2.Pair(prompt=f"overload {k} question {i}", response="an answer " * (i % 7))
            for i in range(PAIRS_PER_CALL)
        ]
    )


async def test_overload_at_four_times_capacity(
    tiny_artifact: Path, offline_engine: OrtEngine
) -> None:
    settings = make_settings(
        tiny_artifact, max_queue_pairs=256, max_request_pairs=64, max_batch_size=32
    )
    async with serving(settings) as h:
        # capacity: pairs/s the server sustains for back-to-back calls
        start = time.perf_counter()
        for k in range(8):
            await h.stub.ScoreBatch(request(-k), timeout=60)
        capacity = 8 * PAIRS_PER_CALL / (time.perf_counter() - start)
        interval = PAIRS_PER_CALL / (4.0 * capacity)  # open loop at 4x capacity

        codes: Counter[str] = Counter()
        overruns: list[float] = []
        pairs_by_code: Counter[str] = Counter()
        pushback_missing = 0

        async def one(k: int) -> None:
            nonlocal pushback_missing
            sent = time.monotonic()
            call = h.stub.ScoreBatch(request(k), timeout=DEADLINE_S)
            try:
                reply = await call
                assert len(reply.results) == PAIRS_PER_CALL
                code = "OK"
            except grpc.aio.AioRpcError as e:
                code = e.code().name
                if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    trailers = dict(e.trailing_metadata() or ())
                    pushback_missing += RETRY_PUSHBACK_KEY not in trailers
            codes[code] += 1
            pairs_by_code[code] += PAIRS_PER_CALL
            overruns.append(time.monotonic() - sent - DEADLINE_S)

        calls = []
        end = time.monotonic() + LOAD_S
        k = 0
        while time.monotonic() < end:
            calls.append(asyncio.ensure_future(one(k)))
            k += 1
            await asyncio.sleep(interval)
        await asyncio.wait_for(asyncio.gather(*calls), timeout=DEADLINE_S + 60)

        assert set(codes) <= ENDINGS, codes
        assert codes["OK"] > 0 and codes["RESOURCE_EXHAUSTED"] > 0, codes
        assert max(overruns) < SLACK_S, f"a call outlived its deadline by {max(overruns):.2f}s"
        assert pushback_missing == 0
        refused = h.metric("rmserve_requests_total", method="ScoreBatch", code="RESOURCE_EXHAUSTED")
        assert refused == codes["RESOURCE_EXHAUSTED"]
        # refused pairs were never queued, so never computed: the engine saw only the capacity
        # probe, the OK pairs and at most the pairs of calls that expired
        computed = h.metric("rmserve_pairs_total") - 8 * PAIRS_PER_CALL
        assert (
            pairs_by_code["OK"]
            <= computed
            <= pairs_by_code["OK"] + pairs_by_code["DEADLINE_EXCEEDED"]
        ), (computed, codes)

        # afterwards: healthy, queue empty, nothing in flight, answers still right
        assert h.metric("rmserve_queue_pairs") == 0
        assert h.metric("rmserve_inflight_requests") == 0
        assert await h.health_status() == 1  # SERVING
        reply = await h.stub.ScoreBatch(request(10**6), timeout=60)
        texts = request(10**6).pairs
        offline = offline_engine.score_texts([p.prompt for p in texts], [p.response for p in texts])
        assert [r.reward for r in reply.results] == pytest.approx(offline.tolist(), abs=1e-5)
