"""Cancel and deadline storms: 1,000 calls each, then the gauges, counters and log are clean.

The engine is held by a gate (``ScriptedEngine``) so every call is provably at the moment of its
life the test says it is when the client gives up: queued behind a held batch, inside the
engine, or already answered. Nothing here races the server with a sleep.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest

from rmserve.engine.session import OrtEngine
from rmserve.errors import DeadlineExpired
from rmserve.serving.tokenizing import INLINE_TOKENIZE_CHARS
from rmserve.v1 import reward_pb2, reward_pb2_grpc
from tests.support.harness import Harness, eventually, make_settings, scripted_factory, serving

pytestmark = pytest.mark.asyncio(loop_scope="session")

STORM = 1000
WAVE = 100  # concurrent calls per channel: well under the server's stream limit
BOUND_S = 120.0  # "must not hang" bound; never a performance assertion
# Requests this small are tokenised inline: once the in-flight gauge counts one, it is queued.
SIZES = [1, 1, 2, 8, 16]
MAX_BATCH = 16


def pairs_of(tag: str, n: int) -> list[reward_pb2.Pair]:
    return [reward_pb2.Pair(prompt=f"{tag}.{i}", response="r " * i) for i in range(n)]


# The largest request of a storm is small enough to be tokenised inline.
assert sum(len(p.prompt) + len(p.response) for p in pairs_of("s.999", 16)) <= INLINE_TOKENIZE_CHARS


async def outcome(call: grpc.aio.UnaryUnaryCall) -> str:
    try:
        await call
    except asyncio.CancelledError:
        return "CANCELLED"
    except grpc.aio.AioRpcError as e:
        return e.code().name
    return "OK"


def problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def check_scores_still_right(h: Harness, offline_engine: OrtEngine) -> None:
    prompts = [f"after the storm {i}" for i in range(40)]
    responses = ["fine " * i for i in range(40)]
    request = reward_pb2.ScoreBatchRequest(
        pairs=[
            reward_pb2.Pair(prompt=p, response=r) for p, r in zip(prompts, responses, strict=True)
        ]
    )
    reply = await h.stub.ScoreBatch(request, timeout=BOUND_S)
    offline = offline_engine.score_texts(prompts, responses)
    assert [r.reward for r in reply.results] == pytest.approx(offline.tolist(), abs=1e-5)


async def test_cancel_storm_leaks_nothing(
    tiny_artifact: Path, offline_engine: OrtEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """1,000 calls, each cancelled at a moment drawn at random from its life: while queued
    behind a held batch (most), while its batch is inside the engine, or after its reply.
    Afterwards every counter is exact and nothing is left queued or in flight."""
    caplog.set_level(logging.WARNING)
    rng = random.Random(0)
    moments = rng.choices(["queued", "engine", "answered"], weights=[90, 5, 5], k=STORM)
    sizes = [rng.choice(SIZES) for _ in range(STORM)]
    built, factory = scripted_factory(gate_open=False)
    settings = make_settings(
        tiny_artifact, max_batch_size=MAX_BATCH, max_queue_pairs=4 * STORM * max(SIZES)
    )
    async with serving(settings, factory) as h:
        engine = built[0]
        channels = [
            grpc.aio.insecure_channel(f"127.0.0.1:{h.server.port}") for _ in range(STORM // WAVE)
        ]
        stubs = [reward_pb2_grpc.RewardServiceStub(c) for c in channels]
        try:
            # 1. Hold the engine on one call; queue the "queued" calls behind it, plus a kept
            #    call after every tenth so that cancelled and live requests are interleaved.
            holder = asyncio.ensure_future(
                h.stub.Score(reward_pb2.ScoreRequest(prompt="hold", response="held"))
            )
            await eventually(lambda: engine.calls == 1, "the holder to reach the engine")
            queued = [k for k in range(STORM) if moments[k] == "queued"]
            calls, kept = {}, {}
            for j, k in enumerate(queued):
                calls[k] = stubs[j // WAVE].ScoreBatch(
                    reward_pb2.ScoreBatchRequest(pairs=pairs_of(f"storm {k}", sizes[k])),
                    timeout=BOUND_S,
                )
                if j % 10 == 9:
                    kept[k] = h.stub.ScoreBatch(
                        reward_pb2.ScoreBatchRequest(pairs=pairs_of(f"kept {k}", sizes[k])),
                        timeout=BOUND_S,
                    )
            waiting = 1 + len(calls) + len(kept)
            await eventually(
                lambda: h.metric("rmserve_inflight_requests") == waiting, f"{waiting} in flight"
            )
            assert engine.calls == 1, "nothing but the holder may reach a held engine"
            order = list(calls)
            rng.shuffle(order)
            for k in order:
                calls[k].cancel()
            await eventually(
                lambda: h.metric("rmserve_cancelled_total") == len(calls),
                f"{len(calls)} cancellations counted",
            )
            assert engine.calls == 1
            engine.gate.set()
            assert (await holder).num_tokens > 0
            codes = await asyncio.wait_for(
                asyncio.gather(*(outcome(c) for c in calls.values())), timeout=BOUND_S
            )
            assert Counter(codes) == {"CANCELLED": len(calls)}
            kept_pairs = 0
            for k, call in kept.items():
                reply = await asyncio.wait_for(call, timeout=BOUND_S)
                assert len(reply.results) == sizes[k]
                kept_pairs += sizes[k]
            await eventually(lambda: h.metric("rmserve_inflight_requests") == 0, "inflight 0")
            # cancelled while queued: skipped, never computed; the holder and kept calls were
            assert h.metric("rmserve_pairs_total") == engine.scored_pairs == 1 + kept_pairs
            assert h.metric("rmserve_queue_pairs") == 0

            # 2. Cancelled while its batch is inside the engine: computed, answer dropped.
            computed = engine.scored_pairs
            cancelled = len(calls)
            for k in (k for k in range(STORM) if moments[k] == "engine"):
                engine.gate.clear()  # the engine is idle (nothing in flight): safe to close
                call = h.stub.ScoreBatch(
                    reward_pb2.ScoreBatchRequest(pairs=pairs_of(f"in engine {k}", sizes[k])),
                    timeout=BOUND_S,
                )
                before = engine.calls
                await eventually(lambda b=before: engine.calls == b + 1, "the batch in the engine")
                call.cancel()
                cancelled += 1
                await eventually(
                    lambda c=cancelled: h.metric("rmserve_cancelled_total") == c, "cancel counted"
                )
                engine.gate.set()
                assert await outcome(call) == "CANCELLED"
                # the batch inside the engine is computed (its answer dropped); any other batch
                # of the same call is skipped: its caller is gone before it can run
                computed += engine.batch_sizes[before]
                await eventually(lambda c=computed: engine.scored_pairs == c, "the batch to end")
                await eventually(lambda: h.metric("rmserve_inflight_requests") == 0, "inflight 0")

            # 3. Cancelled after its reply: a no-op, nothing counted.
            answered = [k for k in range(STORM) if moments[k] == "answered"]
            for k in answered:
                call = h.stub.ScoreBatch(
                    reward_pb2.ScoreBatchRequest(pairs=pairs_of(f"answered {k}", sizes[k])),
                    timeout=BOUND_S,
                )
                assert len((await call).results) == sizes[k]
                call.cancel()
                assert await outcome(call) == "OK"
                computed += sizes[k]

            await eventually(lambda: h.metric("rmserve_inflight_requests") == 0, "inflight 0")
            assert h.metric("rmserve_queue_pairs") == 0
            assert h.server.core is not None and h.server.core.inflight == 0
            assert h.metric("rmserve_cancelled_total") == cancelled
            assert h.metric("rmserve_expired_total") == 0
            assert h.metric("rmserve_engine_errors_total") == 0
            assert h.metric("rmserve_pairs_total") == engine.scored_pairs == computed
            await check_scores_still_right(h, offline_engine)
        finally:
            engine.gate.set()
            for channel in channels:
                await channel.close()
    assert not problems(caplog), problems(caplog)


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
                # the gate stays closed until every call has ended: the deadline always passes
                # while the call waits in the queue, however slow or fast the machine
                return await outcome(stub.Score(request, timeout=2.0))

            codes = await asyncio.wait_for(
                asyncio.gather(*(late(k) for k in range(STORM))), timeout=BOUND_S
            )
            assert codes == ["DEADLINE_EXCEEDED"] * STORM

            # Every call that reached a handler (on a loaded machine gRPC may drop some at their
            # deadline before dispatch) was queued at once (one pair: tokenised inline) and is
            # counted exactly once: expired when the server's deadline fired first, cancelled
            # when the client's deadline (which starts earlier) reset the stream first.
            def handled() -> float:
                return sum(
                    h.metric("rmserve_requests_total", method="Score", code=code)
                    for code in ("DEADLINE_EXCEEDED", "CANCELLED")
                )

            def counted() -> float:
                return h.metric("rmserve_expired_total") + h.metric("rmserve_cancelled_total")

            await eventually(lambda: h.metric("rmserve_inflight_requests") == 1, "only first left")
            assert 0 < handled() <= STORM
            assert counted() == handled()
            await eventually(lambda: h.metric("rmserve_queue_pairs") == 0, "the queue to empty")
            for channel in channels:
                await channel.close()

            # Without a client to reset the stream, only the core's own deadline can pass: these
            # expire in the queue once their deadline is behind them, are counted as expired
            # (exactly), and are never computed.
            core = h.server.core
            assert core is not None
            before = h.metric("rmserve_expired_total"), h.metric("rmserve_cancelled_total")
            sent = time.monotonic()  # the core's clock
            direct = [
                asyncio.ensure_future(core.score([(f"core {k}", "late")], timeout=0.2))
                for k in range(10)
            ]
            await eventually(lambda: core.inflight == 11, "10 queued behind the held batch")
            await eventually(lambda: time.monotonic() > sent + 0.2, "their deadline to pass")
        finally:
            engine.gate.set()
        results = await asyncio.wait_for(
            asyncio.gather(*direct, return_exceptions=True), timeout=BOUND_S
        )
        assert all(isinstance(r, DeadlineExpired) for r in results), results
        assert h.metric("rmserve_expired_total") == before[0] + 10
        assert h.metric("rmserve_cancelled_total") == before[1]
        assert (await first).num_tokens > 0
        await eventually(lambda: h.metric("rmserve_inflight_requests") == 0, "inflight 0")
        # skipped, not computed: only the first call ever reached the engine's forward pass
        assert engine.scored_pairs == 1 == h.metric("rmserve_pairs_total")
        assert engine.batch_sizes == [1]
