"""``rmserve.client`` against a real local server: order, chunking, errors, deadlines, TRL.
Each behaviour is tested once for both faces (``AsyncRewardClient`` and ``RewardClient``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rmserve.client import (
    AsyncRewardClient,
    DeadlineExceededError,
    InvalidRequestError,
    RewardClient,
    RewardClientError,
)
from rmserve.engine.session import OrtEngine
from rmserve.text.conversation import render_prompt, render_response
from tests.support.client_tools import FACES, Counting, open_client
from tests.support.harness import Harness, eventually, make_settings, scripted_factory, serving

pytestmark = pytest.mark.asyncio(loop_scope="session")


def target(harness: Harness) -> str:
    return f"127.0.0.1:{harness.server.port}"


def pairs(n: int, tag: str = "") -> tuple[list[str], list[str]]:
    prompts = [f"Question {tag}{i}: what is {i % 97} plus {i % 13}?" for i in range(n)]
    responses = [f"It is {i % 97 + i % 13}." + " Sure." * (i % 7) for i in range(n)]
    return prompts, responses


@pytest.mark.parametrize("face", FACES)
async def test_chunked_score_is_in_input_order(
    face: str, shared: Harness, offline_engine: OrtEngine
) -> None:
    """3000 pairs in 30 chunks, 8 at a time (they finish in any order): rewards come back in
    input order, equal to the offline model's and to one-by-one calls."""
    prompts, responses = pairs(3000, f"{face} order ")
    async with open_client(face, target(shared), max_chunk_pairs=100) as client:
        batch = await client.score(prompts, responses)
        spot = [0, 99, 100, 1234, 2999]
        one_by_one = [await client.score_one(prompts[i], responses[i]) for i in spot]
    assert batch.dtype == np.float32 and batch.shape == (3000,)
    expected = offline_engine.score_texts(prompts, responses)
    np.testing.assert_allclose(batch, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(batch[spot], one_by_one, atol=1e-5, rtol=0)
    assert len(set(np.round(batch, 4).tolist())) > 50  # distinct pairs, distinct rewards


@pytest.mark.parametrize("face", FACES)
async def test_chunks_follow_the_server_limit(face: str, shared: Harness) -> None:
    """The shared server caps requests at 2000 pairs; the client learns it from GetModelInfo."""
    prompts, responses = pairs(4500, f"{face} chunk ")
    counter = Counting()
    ok_before = shared.metric("rmserve_requests_total", method="ScoreBatch", code="OK")
    refused_before = shared.metric(
        "rmserve_requests_total", method="ScoreBatch", code="INVALID_ARGUMENT"
    )
    async with open_client(face, target(shared), counter, max_chunk_pairs=100_000) as client:
        details = await client.score_detailed(prompts, responses)
        info = await client.model_info()
        assert info.max_request_pairs == 2000
        assert info.engine_workers == 1  # the harness's one intra-op thread: one batch at once
    sizes = [len(request.pairs) for name, request in counter.requests if name == "ScoreBatch"]
    assert sorted(sizes) == [500, 2000, 2000]  # sent concurrently: any order on the wire
    assert shared.metric("rmserve_requests_total", method="ScoreBatch", code="OK") == ok_before + 3
    refused = shared.metric("rmserve_requests_total", method="ScoreBatch", code="INVALID_ARGUMENT")
    assert refused == refused_before  # no chunk was over the limit
    assert details.rewards.shape == (4500,) and details.num_tokens.min() > 0
    assert details.model_version == shared.server.core.model_version  # type: ignore[union-attr]
    spot = [0, 1999, 2000, 3999, 4000, 4499]
    async with AsyncRewardClient(target(shared)) as client:
        alone = [await client.score_one(prompts[i], responses[i]) for i in spot]
    np.testing.assert_allclose(details.rewards[spot], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("face", FACES)
async def test_chunks_follow_the_byte_limit(face: str, shared: Harness) -> None:
    prompts, responses = pairs(300, f"{face} bytes ")
    responses = [r + " padding" * 60 for r in responses]  # ~500 bytes per pair
    counter = Counting()
    async with open_client(face, target(shared), counter, max_chunk_bytes=16 * 1024) as client:
        rewards = await client.score(prompts, responses)
        reference = await client.score(prompts[:50], responses[:50])
    sizes = [r.ByteSize() for name, r in counter.requests if name == "ScoreBatch"]
    assert len(sizes) > 8 and max(sizes) <= 16 * 1024
    np.testing.assert_allclose(rewards[:50], reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("face", FACES)
async def test_invalid_argument_is_not_retried_and_names_the_input_index(
    face: str, shared: Harness
) -> None:
    """A chunk whose pair 4321 reaches the server without a response (as an old or buggy client
    would send it) is refused by the real server; the error names the caller's index."""

    def drop_response(name: str, request: Any) -> None:
        if name == "ScoreBatch":
            for pair in request.pairs:
                if pair.prompt == "BAD":
                    pair.ClearField("response")

    counter = Counting(drop_response)
    prompts, responses = pairs(5000, f"{face} invalid ")
    prompts[4321] = "BAD"
    async with open_client(
        face, target(shared), counter, max_chunk_pairs=1000, max_attempts=5
    ) as client:
        with pytest.raises(InvalidRequestError) as caught:
            await client.score(prompts, responses)
    error = caught.value
    assert error.index == 4321 and error.field == "response"
    assert "pairs[4321].response" in str(error)
    assert "pairs[321].response" in error.details  # the server's message, chunk-relative
    assert error.attempts == 1
    bad_sends = [r for name, r in counter.requests if name == "ScoreBatch" and r.pairs[0].prompt]
    assert sum(any(p.prompt == "BAD" for p in r.pairs) for r in bad_sends) == 1


@pytest.mark.parametrize("face", FACES)
async def test_mismatched_lengths_raise_before_sending(face: str, shared: Harness) -> None:
    counter = Counting()
    async with open_client(face, target(shared), counter) as client:
        with pytest.raises(ValueError, match="same length"):
            await client.score(["a", "b"], ["x"])
        with pytest.raises(ValueError, match="same length"):
            await client.prefer(["a"], ["x"], ["y", "z"])
        with pytest.raises(TypeError, match=r"responses\[1\]"):
            await client.score(["a", "b"], ["x", None])  # type: ignore[list-item]
    assert sum(counter.calls.values()) == 0


@pytest.mark.parametrize("face", FACES)
async def test_prefer_matches_the_server_and_is_complementary(face: str, shared: Harness) -> None:
    prompts, a = pairs(40, f"{face} prefer ")
    b = [f"No idea {i}." for i in range(40)]
    async with open_client(face, target(shared), max_chunk_pairs=16) as client:
        forward = await client.prefer(prompts, a, b)
        backward = await client.prefer(prompts, b, a)
        single = await client.prefer_one(prompts[7], a[7], b[7])
        same = await client.prefer_one("q", "a", "a")
        rewards = await client.score(prompts + prompts, a + b)
    np.testing.assert_allclose(forward + backward, 1.0, atol=1e-9)
    r_a, r_b = rewards[:40].astype(np.float64), rewards[40:].astype(np.float64)
    np.testing.assert_allclose(forward, 1 / (1 + np.exp(r_b - r_a)), atol=1e-5)
    assert single == pytest.approx(forward[7], abs=1e-9)
    assert same == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("face", FACES)
async def test_empty_input_sends_nothing(face: str, shared: Harness) -> None:
    counter = Counting()
    async with open_client(face, target(shared), counter) as client:
        details = await client.score_detailed([], [])
    assert details.rewards.shape == (0,) and sum(counter.calls.values()) == 0


@pytest.mark.parametrize("face", FACES)
async def test_expired_deadline_raises_promptly(face: str, tiny_artifact: Path) -> None:
    built, factory = scripted_factory(gate_open=False)
    async with serving(make_settings(tiny_artifact), factory) as harness:
        engine = built[0]
        try:
            async with open_client(face, target(harness), timeout=30.0) as client:
                with pytest.raises(DeadlineExceededError) as caught:
                    await client.score(["q"], ["a"], timeout=0.5)
            # answered by the call's own deadline while the engine still held the batch,
            # not by the client's 30 s default nor by the engine finishing
            assert not engine.gate.is_set() and engine.scored_pairs == 0
            assert isinstance(caught.value, TimeoutError)
            await eventually(lambda: engine.calls >= 1, "the held batch")
        finally:
            engine.gate.set()


async def test_trl_adapter_text_and_conversational(
    shared: Harness, offline_engine: OrtEngine
) -> None:
    text_prompts = ["\n\nHuman: What is the capital of France?\n\nAssistant:", "Say hi", ""]
    text_completions = ["Paris is the capital of France.", "Go away.", "Hello!"]
    convo_prompts = [
        [{"role": "user", "content": "What is the capital of France?"}],
        [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Say hi"}],
    ]
    convo_completions = [
        [{"role": "assistant", "content": "Paris is the capital of France."}],
        [{"role": "assistant", "content": "Hi there, nice to meet you!"}],
    ]
    async with AsyncRewardClient(target(shared)) as client:
        async_func = client.as_trl_reward_func()
        text = await async_func(prompts=text_prompts, completions=text_completions, ids=[1, 2, 3])
        convo = await async_func(prompts=convo_prompts, completions=convo_completions)

    def sync_call() -> tuple[list[float], list[float]]:
        with RewardClient(target(shared)) as client:
            func = client.as_trl_reward_func()
            return (
                func(prompts=text_prompts, completions=text_completions, completion_ids=[[1]] * 3),
                func(convo_prompts, convo_completions),
            )

    sync_text, sync_convo = await asyncio.to_thread(sync_call)
    for got in (text, convo, sync_text, sync_convo):
        assert isinstance(got, list) and all(type(x) is float for x in got)
    expected_text = offline_engine.score_texts(text_prompts, text_completions)
    np.testing.assert_allclose(text, expected_text, atol=1e-5, rtol=0)
    np.testing.assert_allclose(sync_text, text, atol=1e-6, rtol=0)
    rendered_p = [render_prompt(p) for p in convo_prompts]
    rendered_r = [render_response(c) for c in convo_completions]
    np.testing.assert_allclose(
        convo, offline_engine.score_texts(rendered_p, rendered_r), atol=1e-5, rtol=0
    )
    np.testing.assert_allclose(sync_convo, convo, atol=1e-6, rtol=0)
    # The conversation scores like its HH-text spelling (the first text pair).
    assert convo[0] == pytest.approx(text[0], abs=1e-5)
    assert convo[0] != pytest.approx(convo[1], abs=1e-3)  # order matters: distinct rewards


@pytest.mark.parametrize("face", FACES)
async def test_bearer_token_is_sent_and_auth_failures_are_not_retried(
    face: str, tiny_artifact: Path
) -> None:
    async with serving(make_settings(tiny_artifact, auth_token="s3cret")) as harness:
        async with open_client(face, target(harness), token="s3cret") as client:
            assert len(await client.score(["q"], ["a"])) == 1
        counter = Counting()
        async with open_client(face, target(harness), counter) as client:
            with pytest.raises(RewardClientError) as caught:
                await client.score_one("q", "a")
        assert caught.value.code.name == "UNAUTHENTICATED" and counter.calls["Score"] == 1
