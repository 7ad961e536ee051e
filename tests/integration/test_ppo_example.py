"""The PPO-style example loop (examples/ppo_loop.py) learns against a real local server."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from rmserve.client import RewardClient
from tests.support.harness import Harness

pytestmark = pytest.mark.asyncio(loop_scope="session")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ppo_loop.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ppo_loop", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ppo_loop"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


async def test_ppo_loop_raises_the_mean_reward_deterministically(shared: Harness) -> None:
    ppo = load_example()
    config = ppo.PPOConfig(seed=0, prompts=6, group_size=8, steps=20)
    target = f"127.0.0.1:{shared.server.port}"

    def train() -> object:
        with RewardClient(target) as client:
            return ppo.run(client, config)

    first_run, second_run = await asyncio.to_thread(train), await asyncio.to_thread(train)
    curve = [h.mean_reward for h in first_run.history]  # type: ignore[attr-defined]
    assert len(curve) == 20
    start, end = sum(curve[:4]) / 4, sum(curve[-4:]) / 4
    gap = first_run.best_reward - first_run.uniform_reward  # type: ignore[attr-defined]
    assert gap > 1.0  # the demo task has clearly better and worse candidates
    assert end - start >= 0.5 * gap, (start, end, gap)
    assert end >= first_run.uniform_reward + 0.5 * gap  # type: ignore[attr-defined]
    # Same seed, same server: the same run (rewards agree to float rounding across batchings).
    again = [h.mean_reward for h in second_run.history]  # type: ignore[attr-defined]
    assert again == pytest.approx(curve, abs=1e-4)
    policy, policy_again = first_run.final_policy, second_run.final_policy  # type: ignore[attr-defined]
    for row, row_again in zip(policy, policy_again, strict=True):
        assert row_again == pytest.approx(row, abs=1e-3)
