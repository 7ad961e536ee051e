"""Overload: offered load far beyond what the server can hold. Every call ends OK,
RESOURCE_EXHAUSTED without being queued, or DEADLINE_EXCEEDED; none outlives its deadline;
afterwards the server is healthy and empty.

Capacity is made, not measured: a gate holds the engine, so while it is closed the server can
take only what its queue holds, whatever the machine's speed. Calls with a short deadline wait
in the queue until their deadline passes; an open-loop burst of four times what the queue holds
follows; then the gate opens and the admitted calls are computed.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest

from rmserve.engine.session import OrtEngine
from rmserve.grpc.service import RETRY_PUSHBACK_KEY
from rmserve.v1 import reward_pb2
from tests.support.harness import eventually, make_settings, scripted_factory, serving

pytestmark = pytest.mark.asyncio(loop_scope="session")

PAIRS_PER_CALL = 32
MAX_QUEUE_PAIRS = 256
BURST = 4 * MAX_QUEUE_PAIRS // PAIRS_PER_CALL  # four times what the queue can hold
SHORT_S = 5.0  # deadline of the calls that must expire in the queue
SHORT_CALLS = 2
BOUND_S = 120.0  # deadline of the other calls: "must not hang", never a latency target
SLACK_S = 10.0  # generous: "ends by its deadline", not a latency target
ENDINGS = {"OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"}


def request(k: int) -> reward_pb2.ScoreBatchRequest:
    return reward_pb2.ScoreBatchRequest(
        pairs=[
            reward_pb2.Pair(prompt=f"overload {k} question {i}", response="an answer " * (i % 7))
            for i in range(PAIRS_PER_CALL)
        ]
    )


async def test_overload_beyond_what_the_queue_holds(
    tiny_artifact: Path, offline_engine: OrtEngine
) -> None:
    settings = make_settings(
        tiny_artifact,
        max_queue_pairs=MAX_QUEUE_PAIRS,
        max_request_pairs=64,
        max_batch_size=PAIRS_PER_CALL,
    )
    built, factory = scripted_factory(gate_open=False)
    async with serving(settings, factory) as h:
        engine = built[0]
        codes: Counter[str] = Counter()
        overruns: list[float] = []
        pushback_missing = 0

        async def one(k: int, deadline_s: float) -> str:
            nonlocal pushback_missing
            sent = time.monotonic()
            try:
                reply = await h.stub.ScoreBatch(request(k), timeout=deadline_s)
                assert len(reply.results) == PAIRS_PER_CALL
                code = "OK"
            except grpc.aio.AioRpcError as e:
                code = e.code().name
                if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    trailers = dict(e.trailing_metadata() or ())
                    pushback_missing += RETRY_PUSHBACK_KEY not in trailers
            codes[code] += 1
            overruns.append(time.monotonic() - sent - deadline_s)
            return code

        try:
            holder = asyncio.ensure_future(one(-1, BOUND_S))
            await eventually(lambda: engine.calls == 1, "the first batch to hold the engine")
            short = [asyncio.ensure_future(one(-2 - k, SHORT_S)) for k in range(SHORT_CALLS)]
            await eventually(
                lambda: (
                    h.metric("rmserve_inflight_requests") == 1 + SHORT_CALLS
                    or any(t.done() for t in short)
                ),
                "the short-deadline calls to be admitted",
            )
            burst = [asyncio.ensure_future(one(k, BOUND_S)) for k in range(BURST)]
            # the short calls end by their deadline although the engine is still held
            short_codes = await asyncio.wait_for(asyncio.gather(*short), timeout=BOUND_S)
            assert short_codes == ["DEADLINE_EXCEEDED"] * SHORT_CALLS
            # refusals come back while the engine is held: they were never queued
            await eventually(
                lambda: (
                    sum(t.done() for t in burst)
                    == h.metric(
                        "rmserve_requests_total", method="ScoreBatch", code="RESOURCE_EXHAUSTED"
                    )
                    and h.metric("rmserve_inflight_requests") + sum(t.done() for t in burst)
                    == 1 + BURST
                ),
                "every burst call admitted or refused",
            )
            assert engine.calls == 1
        finally:
            engine.gate.set()
        await asyncio.wait_for(asyncio.gather(holder, *burst), timeout=BOUND_S)

        assert set(codes) <= ENDINGS, codes
        assert codes["OK"] > 1 and codes["RESOURCE_EXHAUSTED"] > 0, codes
        assert codes["DEADLINE_EXCEEDED"] == SHORT_CALLS, codes
        assert max(overruns) < SLACK_S, f"a call outlived its deadline by {max(overruns):.2f}s"
        assert pushback_missing == 0
        refused = h.metric("rmserve_requests_total", method="ScoreBatch", code="RESOURCE_EXHAUSTED")
        assert refused == codes["RESOURCE_EXHAUSTED"]
        # refused pairs were never queued and expired ones never computed: the engine computed
        # exactly the pairs of the calls that ended OK
        assert h.metric("rmserve_pairs_total") == engine.scored_pairs
        assert engine.scored_pairs == codes["OK"] * PAIRS_PER_CALL, codes
        counted = h.metric("rmserve_expired_total") + h.metric("rmserve_cancelled_total")
        assert counted == SHORT_CALLS

        # afterwards: healthy, queue empty, nothing in flight, answers still right
        await eventually(lambda: h.metric("rmserve_inflight_requests") == 0, "inflight 0")
        assert h.metric("rmserve_queue_pairs") == 0
        assert await h.health_status() == 1  # SERVING
        reply = await h.stub.ScoreBatch(request(10**6), timeout=BOUND_S)
        texts = request(10**6).pairs
        offline = offline_engine.score_texts([p.prompt for p in texts], [p.response for p in texts])
        assert [r.reward for r in reply.results] == pytest.approx(offline.tolist(), abs=1e-5)
