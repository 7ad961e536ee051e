"""Scores through the real server agree with the offline ONNX scores, in order, batch-invariant."""

from __future__ import annotations

import asyncio
import math
import random

import numpy as np
import pytest

from rmserve.engine.session import OrtEngine
from rmserve.v1 import reward_pb2
from tests.support.harness import Harness

pytestmark = pytest.mark.asyncio(loop_scope="session")

WORDS = [
    *("the", "model", "reward", "policy", "answer", "question", "helpful", "kind", "short"),
    *("long", "clear", "wrong", "right", "because", "maybe", "always", "never", "paris"),
]


def random_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """Distinct pairs of mixed lengths (some empty, some over max_length)."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        prompt = " ".join(rng.choices(WORDS, k=rng.randint(0, 40)))
        response = " ".join(rng.choices(WORDS, k=rng.randint(0, 90)))
        pairs.append((f"#{i} {prompt}", response))
    return pairs


def alone(engine: OrtEngine, prompt: str, response: str) -> float:
    pair = engine.artifact.preprocessor.prepare(prompt, response)
    return float(engine.score([pair])[0])


async def test_score_equals_offline_onnx_score(shared: Harness, offline_engine: OrtEngine) -> None:
    prompt, response = "What is the capital of France?", "Paris is the capital of France."
    reply = await shared.stub.Score(reward_pb2.ScoreRequest(prompt=prompt, response=response))
    (offline,) = offline_engine.score_texts([prompt], [response])
    assert reply.reward == pytest.approx(float(offline), abs=1e-5)
    prepared = offline_engine.artifact.preprocessor.prepare(prompt, response)
    assert reply.num_tokens == prepared.num_tokens
    assert reply.model_version == offline_engine.artifact.manifest.version
    assert not reply.truncated


async def test_normalize_uses_manifest_stats(shared: Harness, offline_engine: OrtEngine) -> None:
    request = reward_pb2.ScoreRequest(prompt="hi", response="hello", normalize=True)
    reply = await shared.stub.Score(request)
    norm = offline_engine.artifact.manifest.normalization
    raw = alone(offline_engine, "hi", "hello")
    assert reply.reward == pytest.approx((raw - norm.mean) / norm.std, abs=1e-5)


async def test_empty_texts_are_scored(shared: Harness) -> None:
    reply = await shared.stub.Score(reward_pb2.ScoreRequest(prompt="", response=""))
    assert math.isfinite(reply.reward) and reply.num_tokens > 0


async def test_truncation_is_reported(shared: Harness, offline_engine: OrtEngine) -> None:
    max_length = offline_engine.artifact.manifest.preprocessing.max_length
    long = " ".join(["word"] * (2 * max_length))
    prompt_cut = await shared.stub.Score(reward_pb2.ScoreRequest(prompt=long, response="ok"))
    assert prompt_cut.truncated and not prompt_cut.response_truncated
    assert prompt_cut.num_tokens == max_length
    both_cut = await shared.stub.Score(reward_pb2.ScoreRequest(prompt="q", response=long))
    assert both_cut.truncated and both_cut.response_truncated
    assert shared.metric("rmserve_truncated_total", part="response") >= 1


async def test_prefer_is_a_bradley_terry_probability(
    shared: Harness, offline_engine: OrtEngine
) -> None:
    prompt, a, b = "Explain gravity.", "Mass attracts mass.", "I don't know, ask someone else."

    def request(x: str, y: str) -> reward_pb2.PreferRequest:
        return reward_pb2.PreferRequest(prompt=prompt, response_a=x, response_b=y)

    ab, ba, aa = await asyncio.gather(
        shared.stub.Prefer(request(a, b)),
        shared.stub.Prefer(request(b, a)),
        shared.stub.Prefer(request(a, a)),
    )
    assert ab.result.probability_a + ba.result.probability_a == pytest.approx(1.0, abs=1e-9)
    assert aa.result.probability_a == pytest.approx(0.5, abs=1e-6)
    r_a, r_b = alone(offline_engine, prompt, a), alone(offline_engine, prompt, b)
    assert ab.result.reward_a == pytest.approx(r_a, abs=1e-5)
    assert ab.result.reward_b == pytest.approx(r_b, abs=1e-5)
    expected = 1.0 / (1.0 + math.exp(-(ab.result.reward_a - ab.result.reward_b)))
    assert ab.result.probability_a == pytest.approx(expected, abs=1e-12)
    assert ab.model_version == offline_engine.artifact.manifest.version


async def test_score_batch_keeps_request_order(shared: Harness, offline_engine: OrtEngine) -> None:
    pairs = random_pairs(1500, seed=1)  # split across many engine batches of <= 16
    request = reward_pb2.ScoreBatchRequest(
        pairs=[reward_pb2.Pair(prompt=p, response=r) for p, r in pairs]
    )
    batches_before = shared.metric("rmserve_batch_size_count")
    reply = await shared.stub.ScoreBatch(request, timeout=120)
    offline = offline_engine.score_texts([p for p, _ in pairs], [r for _, r in pairs])
    got = np.array([r.reward for r in reply.results])
    np.testing.assert_allclose(got, offline, atol=1e-5, rtol=0)
    prepared = offline_engine.artifact.preprocessor.prepare_many(
        [p for p, _ in pairs], [r for _, r in pairs]
    )
    assert [r.num_tokens for r in reply.results] == [p.num_tokens for p in prepared]
    assert shared.metric("rmserve_batch_size_count") - batches_before >= 1500 / 16


async def test_prefer_batch_keeps_request_order(shared: Harness) -> None:
    pairs = random_pairs(60, seed=2)
    items = [
        reward_pb2.PreferItem(prompt=p, response_a=r, response_b=pairs[(i + 1) % 60][1])
        for i, (p, r) in enumerate(pairs)
    ]
    reply = await shared.stub.PreferBatch(reward_pb2.PreferBatchRequest(items=items))
    singles = await asyncio.gather(
        *(
            shared.stub.Prefer(
                reward_pb2.PreferRequest(
                    prompt=i.prompt, response_a=i.response_a, response_b=i.response_b
                )
            )
            for i in items
        )
    )
    for batched, single in zip(reply.results, singles, strict=True):
        assert batched.probability_a == pytest.approx(single.result.probability_a, abs=1e-5)
        assert batched.reward_a == pytest.approx(single.result.reward_a, abs=1e-5)


async def test_batch_invariance_with_32_concurrent_callers(
    shared: Harness, offline_engine: OrtEngine
) -> None:
    pairs = random_pairs(200, seed=3)
    expected = [alone(offline_engine, p, r) for p, r in pairs]
    rows_before = shared.metric("rmserve_batch_size_sum")
    batches_before = shared.metric("rmserve_batch_size_count")

    async def caller(k: int) -> list[tuple[int, float]]:
        mine = list(range(k, len(pairs), 32))
        got = []
        for start in range(0, len(mine), 3):
            chunk = mine[start : start + 3]
            if len(chunk) == 1 or k % 2:
                for i in chunk:
                    request = reward_pb2.ScoreRequest(prompt=pairs[i][0], response=pairs[i][1])
                    got.append((i, (await shared.stub.Score(request)).reward))
            else:
                batch = reward_pb2.ScoreBatchRequest(
                    pairs=[reward_pb2.Pair(prompt=pairs[i][0], response=pairs[i][1]) for i in chunk]
                )
                reply = await shared.stub.ScoreBatch(batch)
                got += [(i, r.reward) for i, r in zip(chunk, reply.results, strict=True)]
        return got

    results = [item for got in await asyncio.gather(*map(caller, range(32))) for item in got]
    assert sorted(i for i, _ in results) == list(range(200))  # every pair answered exactly once
    for i, reward in results:
        assert abs(reward - expected[i]) <= 1e-5, f"pair {i}: {reward} != {expected[i]} alone"
    rows = shared.metric("rmserve_batch_size_sum") - rows_before
    batches = shared.metric("rmserve_batch_size_count") - batches_before
    assert rows == 200 and batches < 200  # pairs really shared batches


async def test_model_info_reports_model_provider_and_limits(
    shared: Harness, offline_engine: OrtEngine
) -> None:
    info = await shared.stub.GetModelInfo(reward_pb2.GetModelInfoRequest())
    manifest = offline_engine.artifact.manifest
    assert (info.name, info.version) == (manifest.name, manifest.version)
    assert info.max_length == manifest.preprocessing.max_length
    assert info.normalization_std == pytest.approx(manifest.normalization.std)
    assert (info.provider, info.device) == ("CPUExecutionProvider", "cpu")
    assert (info.max_batch_size, info.max_request_pairs) == (16, 2000)
