"""Composite rewards on a server of two models with different tokenizers: a weighted
combination equals the weighted sum of each model's normalised reward computed offline with
onnxruntime (each pair alone, one thread, as the server scores a single pair), every component
is in the reply, and the client and TRL adapter expose it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import numpy as np
import pytest

from rmserve.client import AsyncRewardClient
from rmserve.engine.session import OrtEngine, load_artifact
from rmserve.rewards.ensemble import sigmoid
from rmserve.rewards.group_stats import group_stats
from rmserve.v1 import reward_pb2
from tests.support.harness import Harness

pytestmark = pytest.mark.asyncio(loop_scope="session")

TINY, QWEN = "reward-model", "qwen"
WEIGHTS = {TINY: 1.0, QWEN: -0.5}
PAIRS = [
    ("what is the capital of france ?", "paris ."),
    ("", ""),
    ("Say hello", "Hello! How can I help you today?"),
    ("write a haiku about sea waves " * 30, "waves fold into foam"),
]
TOLERANCE = 1e-6


class Offline:
    """Each model's normalised reward of one pair, scored alone by its own ONNX session."""

    def __init__(self, artifacts: dict[str, Path]) -> None:
        self.models = {}
        for name, folder in artifacts.items():
            loaded = load_artifact(folder)
            self.models[name] = (loaded, OrtEngine(loaded, provider="cpu", intra_op_threads=1))

    def z(self, name: str, prompt: str, response: str) -> float:
        loaded, engine = self.models[name]
        (raw,) = engine.score(loaded.preprocessor.prepare_many([prompt], [response]))
        return loaded.manifest.normalize(float(raw))

    def combined(self, prompt: str, response: str) -> tuple[float, dict[str, float]]:
        parts = {name: self.z(name, prompt, response) for name in WEIGHTS}
        return sum(WEIGHTS[name] * z for name, z in parts.items()), parts


@pytest.fixture(scope="module")
def offline(tiny_artifact: Path, qwen_artifact: Path) -> Offline:
    return Offline({TINY: tiny_artifact, QWEN: qwen_artifact})


def components(result: Any) -> dict[str, float]:
    return {c.model: c.reward for c in result.components}


async def test_score_is_the_weighted_sum_of_normalised_rewards(
    two_models: Harness, offline: Offline
) -> None:
    versions = {}
    for name in WEIGHTS:
        info = await two_models.stub.GetModelInfo(reward_pb2.GetModelInfoRequest(model=name))
        versions[name] = info.version
        assert info.normalization_std not in (0.0, 1.0)  # normalising changes the rewards
    for prompt, response in PAIRS:
        reply = await two_models.stub.Score(
            reward_pb2.ScoreRequest(prompt=prompt, response=response, reward_weights=WEIGHTS)
        )
        expected, parts = offline.combined(prompt, response)
        assert abs(reply.reward - expected) <= TOLERANCE, (prompt[:20], reply.reward, expected)
        assert [c.model for c in reply.components] == sorted(WEIGHTS)
        for c in reply.components:
            assert abs(c.reward - parts[c.model]) <= TOLERANCE
            assert (c.weight, c.model_version) == (WEIGHTS[c.model], versions[c.model])
        assert reply.model_version == f"qwen={versions[QWEN]}+reward-model={versions[TINY]}"
        assert reply.model == ""
        assert reply.num_tokens == max(c.num_tokens for c in reply.components)
    assert reply.truncated and any(c.truncated for c in reply.components)  # the long prompt


async def test_batch_group_and_prefer_carry_the_combination(
    two_models: Harness, offline: Offline
) -> None:
    stub = two_models.stub
    batch = await stub.ScoreBatch(
        reward_pb2.ScoreBatchRequest(
            pairs=[reward_pb2.Pair(prompt=p, response=r) for p, r in PAIRS],
            reward_weights=WEIGHTS,
        )
    )
    for (prompt, response), result in zip(PAIRS, batch.results, strict=True):
        expected, parts = offline.combined(prompt, response)
        assert abs(result.reward - expected) <= TOLERANCE
        assert components(result).keys() == parts.keys()
    prompt, responses = "explain how", ["one two", "three four five", "", "six seven " * 9]
    group = await stub.ScoreGroup(
        reward_pb2.ScoreGroupRequest(prompt=prompt, responses=responses, reward_weights=WEIGHTS)
    )
    expected_rewards = [offline.combined(prompt, r)[0] for r in responses]
    stats = group_stats(expected_rewards)
    assert np.allclose([r.reward for r in group.results], expected_rewards, rtol=0, atol=TOLERANCE)
    assert np.allclose(group.advantages, stats.advantages, rtol=0, atol=1e-5)
    preferred = await stub.Prefer(
        reward_pb2.PreferRequest(
            prompt="say hello", response_a="hello", response_b="", reward_weights=WEIGHTS
        )
    )
    r_a, parts_a = offline.combined("say hello", "hello")
    r_b, parts_b = offline.combined("say hello", "")
    result = preferred.result
    assert abs(result.reward_a - r_a) <= TOLERANCE and abs(result.reward_b - r_b) <= TOLERANCE
    assert abs(result.probability_a - sigmoid(r_a - r_b)) <= TOLERANCE
    for c in result.components:
        assert abs(c.reward_a - parts_a[c.model]) <= TOLERANCE
        assert abs(c.reward_b - parts_b[c.model]) <= TOLERANCE


async def test_a_composite_counts_for_each_model(two_models: Harness) -> None:
    def count(model: str) -> float:
        return two_models.metric(
            "rmserve_model_requests_total", model=model, method="Score", code="OK"
        )

    before = {name: count(name) for name in WEIGHTS}
    await two_models.stub.Score(
        reward_pb2.ScoreRequest(prompt="a", response="b", reward_weights=WEIGHTS)
    )
    assert {name: count(name) for name in WEIGHTS} == {n: v + 1 for n, v in before.items()}


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            reward_pb2.ScoreRequest(prompt="", response="", model=QWEN, reward_weights=WEIGHTS),
            "model and reward_weights: send one of them, not both",
        ),
        (
            reward_pb2.ScoreRequest(prompt="", response="", reward_weights={"gpt": 1.0}),
            "reward_weights: model 'gpt' is not served here; served: reward-model, qwen",
        ),
        (
            reward_pb2.ScoreRequest(prompt="", response="", reward_weights={QWEN: math.inf}),
            "reward_weights['qwen']: a weight must be finite, got inf",
        ),
    ],
)
async def test_a_bad_combination_is_refused_naming_the_field(
    two_models: Harness, request_: reward_pb2.ScoreRequest, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await two_models.stub.Score(request_)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == message


async def post(h: Harness, path: str, body: Any) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{h.server.http_port}{path}"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
        session.post(url, json=body) as response,
    ):
        return response.status, await response.json()


async def test_http_fronts_take_reward_weights(two_models: Harness, offline: Offline) -> None:
    prompts = [p for p, _ in PAIRS]
    body = {"query": [p + r for p, r in PAIRS], "prompts": prompts, "reward_weights": WEIGHTS}
    status, reply = await post(two_models, "/get_reward", body)
    assert status == 200, reply
    for i, (prompt, response) in enumerate(PAIRS):
        expected, parts = offline.combined(prompt, response)
        assert abs(reply["rewards"][i] - expected) <= TOLERANCE
        assert all(abs(reply["components"][m][i] - parts[m]) <= TOLERANCE for m in WEIGHTS)
    prompt, response = PAIRS[2]
    expected, _ = offline.combined(prompt, response)
    slime = {"prompt": prompt, "response": response, "reward_weights": WEIGHTS}
    status, reward = await post(two_models, "/slime/reward", slime)
    assert status == 200 and abs(reward - expected) <= TOLERANCE
    chat = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    classify = {"messages": chat, "use_activation": False, "reward_weights": WEIGHTS}
    status, reply = await post(two_models, "/classify", classify)
    assert status == 200, reply
    assert abs(reply["data"][0]["probs"][0] - expected) <= TOLERANCE
    assert sorted(reply["components"]) == sorted(WEIGHTS)
    status, reply = await post(two_models, "/slime/reward", {**slime, "reward_weights": [1.0]})
    assert status == 400 and reply["error"]["message"].startswith("reward_weights must be")


async def test_client_and_trl_adapter_expose_the_combination(
    two_models: Harness, offline: Offline
) -> None:
    prompts = ["explain how", "explain how", "Say hello"]
    responses = ["one two", "three", "Hello!"]
    expected = [offline.combined(p, r) for p, r in zip(prompts, responses, strict=True)]
    async with AsyncRewardClient(f"127.0.0.1:{two_models.server.port}") as client:
        details = await client.score_detailed(prompts, responses, reward_weights=WEIGHTS)
        assert np.allclose(details.rewards, [e for e, _ in expected], rtol=0, atol=1e-5)
        for name in WEIGHTS:
            assert np.allclose(
                details.components[name], [p[name] for _, p in expected], rtol=0, atol=TOLERANCE
            )
        reward = client.as_trl_reward_func(reward_weights=WEIGHTS)
        rewards = await reward(prompts=prompts, completions=responses)  # a GRPO-style run
        assert np.allclose(rewards, [e for e, _ in expected], rtol=0, atol=TOLERANCE)
        only_qwen = await client.score(prompts, responses, model=QWEN, normalize=True)
        assert np.allclose(only_qwen, [p[QWEN] for _, p in expected], rtol=0, atol=1e-5)
        info = await client.model_info(model=QWEN)
        assert (info.model, [m.model for m in info.models]) == (QWEN, [TINY, QWEN])
        with pytest.raises(ValueError, match="give model or reward_weights, not both"):
            await client.score(prompts, responses, model=QWEN, reward_weights=WEIGHTS)
