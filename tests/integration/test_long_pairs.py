"""A pair over max_batch_tokens runs alone on one engine worker while short pairs keep flowing on
the other; a second long pair waits for the long slot instead of taking every worker. Driven
through a real server whose engine holds long batches at a gate (counters, no timing)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from rmserve.engine.session import OrtEngine
from rmserve.v1 import reward_pb2
from tests.support.harness import eventually, make_settings, scripted_factory, serving

pytestmark = pytest.mark.asyncio(loop_scope="session")

MAX_BATCH_TOKENS = 64  # the tiny artifact's max_length is 128: its longest pairs run alone
SHORT_CALLERS = 64


async def test_short_score_calls_complete_while_long_pairs_are_held(
    tiny_artifact: Path, offline_engine: OrtEngine
) -> None:
    built, factory = scripted_factory(gate_open=False, gate_over_tokens=MAX_BATCH_TOKENS)
    settings = make_settings(
        tiny_artifact, engine_workers=2, max_batch_tokens=MAX_BATCH_TOKENS, max_batch_size=8
    )
    long_response = " ".join(["word"] * 100)
    async with serving(settings, factory) as h:
        engine = built[0]
        assert h.server.core is not None and h.server.core.config.engine_workers == 2

        async def call(prompt: str, response: str) -> reward_pb2.ScoreResponse:
            request = reward_pb2.ScoreRequest(prompt=prompt, response=response)
            reply: reward_pb2.ScoreResponse = await h.stub.Score(request, timeout=120)
            return reply

        def score(prompt: str, response: str) -> asyncio.Task[reward_pb2.ScoreResponse]:
            return asyncio.create_task(call(prompt, response))

        first = score("first long", long_response)
        await eventually(lambda: engine.at_gate == 1, "the long pair to reach the engine")
        second = score("second long", long_response)
        shorts = [score(f"question {i}", f"answer {i}") for i in range(SHORT_CALLERS)]
        replies = await asyncio.gather(*shorts)
        # every short call was answered while the first long pair is still held on its worker,
        # and the second long pair waited for the long slot rather than take the other one
        assert engine.at_gate == 1 and not first.done() and not second.done()
        assert engine.most_running == 2
        assert all(not r.truncated and r.num_tokens < MAX_BATCH_TOKENS for r in replies)
        expected = offline_engine.score_texts(
            [f"question {i}" for i in range(SHORT_CALLERS)],
            [f"answer {i}" for i in range(SHORT_CALLERS)],
        )
        assert [r.reward for r in replies] == pytest.approx(expected.tolist(), abs=1e-5)
        engine.gate.set()
        long_replies = await asyncio.gather(first, second)
    for reply, prompt in zip(long_replies, ("first long", "second long"), strict=True):
        assert reply.num_tokens > MAX_BATCH_TOKENS
        (reference,) = offline_engine.score_texts([prompt], [long_response])
        assert reply.reward == pytest.approx(float(reference), abs=1e-5)
