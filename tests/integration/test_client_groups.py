"""``score_group`` / ``score_groups`` and the TRL adapter's use of groups, both client faces,
against a real local server."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from rmserve.client import AsyncRewardClient, InvalidRequestError
from tests.support.client_tools import FACES, Counting, open_client
from tests.support.harness import Harness

pytestmark = pytest.mark.asyncio(loop_scope="session")


def target(h: Harness) -> str:
    return f"127.0.0.1:{h.server.port}"


@pytest.mark.parametrize("face", FACES)
async def test_score_group_equals_score_with_trl_statistics(face: str, shared: Harness) -> None:
    prompt = "Name a colour."
    responses = ["Red.", "Blue, clearly.", "", "I like green a lot."]
    async with open_client(face, target(shared)) as client:
        group = await client.score_group(prompt, responses)
        expected = await client.score([prompt] * 4, responses)
        (other,) = await client.score_groups([("Say hi", ["hi"])])
    np.testing.assert_allclose(group.rewards, expected, atol=1e-6, rtol=0)
    r = group.rewards.astype(np.float64)
    assert group.std == pytest.approx(r.std(ddof=1), abs=1e-6)
    np.testing.assert_allclose(group.advantages, (r - r.mean()) / (r.std(ddof=1) + 1e-4), atol=1e-4)
    assert (other.std, other.advantages.tolist()) == (0.0, [0.0])


@pytest.mark.parametrize("face", FACES)
async def test_score_groups_keep_input_order_and_name_the_bad_input(
    face: str, shared: Harness
) -> None:
    groups = [(f"prompt {i}", [f"answer {i}.{j}" for j in range(i + 1)]) for i in range(5)]
    async with open_client(face, target(shared)) as client:
        results = await client.score_groups(groups)
        for (prompt, responses), result in zip(groups, results, strict=True):
            expected = await client.score([prompt] * len(responses), responses)
            np.testing.assert_allclose(result.rewards, expected, atol=1e-6, rtol=0)
        with pytest.raises(ValueError, match="at least one response"):
            await client.score_groups([("p", [])])
        with pytest.raises(TypeError, match=r"responses\[1\]"):
            await client.score_group("p", ["ok", 3])


async def test_group_over_the_server_limit_is_invalid_request(shared: Harness) -> None:
    async with AsyncRewardClient(target(shared)) as client:
        with pytest.raises(InvalidRequestError, match="responses"):
            await client.score_group("p", ["r"] * 2001)


@pytest.mark.parametrize("face", FACES)
async def test_trl_adapter_uses_groups_for_repeated_prompts(face: str, shared: Harness) -> None:
    """GRPO's shape (each prompt num_generations times in a row) goes as ScoreGroup calls;
    distinct prompts go as one ScoreBatch; the rewards are Score's either way."""
    grpo_prompts = [p for p in ("Why is the sky blue?", "Say hi") for _ in range(3)]
    completions = ["Rayleigh.", "It is not.", "", "hi", "hello there", "go away"]
    distinct = [f"{p} #{i}" for i, p in enumerate(grpo_prompts)]
    counter = Counting()
    async with open_client(face, target(shared), counter) as client:
        if face == "async":
            func: Any = client.as_trl_reward_func()
        else:
            func = client.client.as_trl_reward_func()
        grouped = await maybe_thread(func, grpo_prompts, completions)
        assert counter.calls.get("ScoreGroup") == 2
        assert "ScoreBatch" not in counter.calls
        flat = await maybe_thread(func, distinct, completions)
        assert counter.calls.get("ScoreGroup") == 2 and counter.calls.get("ScoreBatch") == 1
        expected = await client.score(grpo_prompts, completions)
    np.testing.assert_allclose(grouped, expected, atol=1e-6, rtol=0)
    assert len(flat) == 6


async def maybe_thread(func: Any, prompts: list[str], completions: list[str]) -> list[float]:
    if asyncio.iscoroutinefunction(func):
        result: list[float] = await func(prompts, completions)
        return result
    return await asyncio.to_thread(func, prompts, completions)
