"""ScoreGroup (a GRPO group: one prompt, N responses) through the real server: every reward is
Score's, the prompt is tokenised once, and the statistics are TRL GRPOTrainer's."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from rmserve.rewards.group_stats import ADVANTAGE_EPSILON
from rmserve.v1 import reward_pb2
from tests.support.counting_tokenizer import CountingTokenizer
from tests.support.harness import Harness

pytestmark = pytest.mark.asyncio(loop_scope="session")

WORDS = ("the", "reward", "policy", "answer", "helpful", "wrong", "paris", "maybe", "never")


def responses(n: int, max_length: int) -> list[str]:
    """Mixed lengths: empty, short, long enough to cut the prompt, longer than max_length."""
    out = [""]
    for i in range(1, n):
        words = (i * 7) % (max_length + 40)
        out.append(f"#{i} " + " ".join(WORDS[(i + k) % len(WORDS)] for k in range(words)))
    return out


def max_length(h: Harness) -> int:
    assert h.server.core is not None
    return h.server.core.artifact.preprocessor.config.max_length


async def test_group_of_64_equals_64_score_calls(shared: Harness) -> None:
    limit = max_length(shared)
    prompt = "Long question: " + " ".join(WORDS[k % len(WORDS)] for k in range(limit))
    texts = responses(64, limit)
    reply = await shared.stub.ScoreGroup(
        reward_pb2.ScoreGroupRequest(prompt=prompt, responses=texts)
    )
    assert len(reply.results) == 64
    singles = [
        await shared.stub.Score(reward_pb2.ScoreRequest(prompt=prompt, response=r)) for r in texts
    ]
    assert any(s.truncated and not s.response_truncated for s in singles)  # prompt cut left
    assert any(s.response_truncated for s in singles)
    for got, single in zip(reply.results, singles, strict=True):
        assert (got.truncated, got.response_truncated, got.num_tokens) == (
            single.truncated,
            single.response_truncated,
            single.num_tokens,
        )
        # The same tokens (below); the engine's float32 sums differ in the last bits with the
        # batch a row shares (as between Score and ScoreBatch), never more.
        assert got.reward == pytest.approx(single.reward, abs=1e-6)
    assert reply.model_version == singles[0].model_version
    assert shared.server.core is not None
    preprocessor = shared.server.core.artifact.preprocessor
    assert preprocessor.prepare_group(prompt, texts) == [
        preprocessor.prepare(prompt, r) for r in texts
    ]


async def test_prompt_is_tokenised_once_for_the_group(shared: Harness) -> None:
    assert shared.server.core is not None
    preprocessor = shared.server.core.artifact.preprocessor
    counting = CountingTokenizer(preprocessor.tokenizer)
    prompt = "A prompt seen by this test only: what is a GRPO group?"
    preprocessor.tokenizer = counting  # type: ignore[assignment]
    try:
        await shared.stub.ScoreGroup(
            reward_pb2.ScoreGroupRequest(prompt=prompt, responses=responses(64, 60))
        )
    finally:
        preprocessor.tokenizer = counting.inner
    assert counting.texts.count(prompt) == 1
    assert len(counting.texts) == 65  # the prompt and 64 distinct responses


async def test_group_statistics_are_grpo_trainers(shared: Harness) -> None:
    texts = ["Paris.", "Lyon, I think.", "It is Paris, the capital.", "", "No idea."]
    reply = await shared.stub.ScoreGroup(
        reward_pb2.ScoreGroupRequest(prompt="Capital of France?", responses=texts)
    )
    rewards = np.array([r.reward for r in reply.results], dtype=np.float64)
    std = rewards.std(ddof=1)
    assert reply.advantage_epsilon == ADVANTAGE_EPSILON == 1e-4
    assert reply.mean == pytest.approx(rewards.mean(), abs=1e-12)
    assert reply.std == pytest.approx(std, abs=1e-12)
    expected = (rewards - rewards.mean()) / (std + 1e-4)
    np.testing.assert_allclose(reply.advantages, expected, atol=1e-12)


async def test_group_of_one_has_zero_spread(shared: Harness) -> None:
    reply = await shared.stub.ScoreGroup(
        reward_pb2.ScoreGroupRequest(prompt="p", responses=["only"])
    )
    assert (reply.std, list(reply.advantages)) == (0.0, [0.0])
    assert reply.mean == reply.results[0].reward


async def test_normalize_applies_before_the_statistics(shared: Harness) -> None:
    texts = ["a", "bb", "ccc"]
    raw = await shared.stub.ScoreGroup(reward_pb2.ScoreGroupRequest(prompt="p", responses=texts))
    norm = await shared.stub.ScoreGroup(
        reward_pb2.ScoreGroupRequest(prompt="p", responses=texts, normalize=True)
    )
    assert shared.server.core is not None
    manifest = shared.server.core.artifact.manifest
    for r, n in zip(raw.results, norm.results, strict=True):
        assert n.reward == pytest.approx(manifest.normalize(r.reward), abs=1e-9)
    assert norm.mean == pytest.approx(np.mean([n.reward for n in norm.results]), abs=1e-12)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (reward_pb2.ScoreGroupRequest(responses=["a"]), "prompt"),
        (reward_pb2.ScoreGroupRequest(prompt="p"), "responses"),
        (reward_pb2.ScoreGroupRequest(prompt="p", responses=["a"] * 2001), "responses"),
    ],
)
async def test_bad_group_is_invalid_argument_naming_the_field(
    shared: Harness, request_: reward_pb2.ScoreGroupRequest, field: str
) -> None:
    before = shared.metric("rmserve_requests_total", method="ScoreGroup", code="INVALID_ARGUMENT")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await shared.stub.ScoreGroup(request_)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith(field)
    after = shared.metric("rmserve_requests_total", method="ScoreGroup", code="INVALID_ARGUMENT")
    assert after == before + 1


async def test_uncuttable_response_is_named_by_index(shared: Harness) -> None:
    texts = ["fine", "x" * (300 * 1024)]  # no space to cut at, too long to tokenise whole
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await shared.stub.ScoreGroup(reward_pb2.ScoreGroupRequest(prompt="p", responses=texts))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith("responses[1]:")
