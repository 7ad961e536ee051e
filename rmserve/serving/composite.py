"""Composite rewards: a weighted combination of served models, R = sum_m w_m * z_m, with z_m
model m's normalised reward ((r - mean_m) / std_m with its own held-out stats; an ensemble's
aggregate, already in normalised units). Each model scores the pairs with its own tokenizer and
batcher, all at once; the reply carries R and every z_m (multi-objective trainers want the
parts). A ``Composite`` holds one version of each model for the whole request
(``rmserve.serving.models``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from rmserve.batching.pending import PairScore, Preference
from rmserve.rewards.ensemble import AggregateName, sigmoid
from rmserve.serving.core import RewardCore
from rmserve.serving.replies import RewardOptions

T = TypeVar("T")


@dataclass(frozen=True)
class Component:
    name: str
    core: RewardCore
    weight: float


@dataclass(frozen=True)
class ComponentReward:
    """One model's part of a pair's composite reward."""

    name: str
    version: str
    weight: float
    reward: float  # z_m: normalised
    score: PairScore  # this model's tokens and truncation flags


@dataclass(frozen=True)
class CompositeScore:
    reward: float  # sum of weight * reward over the components
    components: tuple[ComponentReward, ...]

    @property
    def truncated(self) -> bool:
        """Whether any model cut the pair to fit (each tokenises it its own way)."""
        return any(c.score.truncated for c in self.components)

    @property
    def response_truncated(self) -> bool:
        return any(c.score.response_truncated for c in self.components)

    @property
    def num_tokens(self) -> int:
        """The most tokens any model saw of the pair."""
        return max(c.score.num_tokens for c in self.components)


@dataclass(frozen=True)
class ComponentPreference:
    name: str
    version: str
    weight: float
    reward_a: float  # z_m of a and of b
    reward_b: float


@dataclass(frozen=True)
class CompositePreference:
    """sigma(R_a - R_b) with R the composite reward of each side."""

    probability_a: float
    reward_a: float
    reward_b: float
    truncated_a: bool
    truncated_b: bool
    components: tuple[ComponentPreference, ...]


async def each(calls: Sequence[Awaitable[T]]) -> list[T]:
    """Run ``calls`` at once; results in order. The first failure cancels the others and is
    raised (the components of one request succeed or fail together)."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error
    return [task.result() for task in tasks]


class Composite:
    """A weighted combination of served models, one version of each (sorted by name)."""

    def __init__(self, components: Sequence[Component]) -> None:
        self.components = tuple(sorted(components, key=lambda c: c.name))

    @property
    def model_version(self) -> str:
        """``name=version`` of each component joined by ``+``: what produced the rewards."""
        return "+".join(f"{c.name}={c.core.model_version}" for c in self.components)

    def options(
        self,
        aggregate: AggregateName | None = None,
        uncertainty_penalty: float | None = None,
    ) -> list[RewardOptions]:
        """Each component's reward options: always normalised; an ensemble component aggregates
        as asked (validated: ``InvalidRequest`` naming the field)."""
        penalty = uncertainty_penalty
        return [c.core.reward_options(True, aggregate, penalty) for c in self.components]

    def _combine(
        self, per_model: Sequence[Sequence[PairScore]], options: Sequence[RewardOptions]
    ) -> list[CompositeScore]:
        served = [
            c.core.served(scores, o)
            for c, scores, o in zip(self.components, per_model, options, strict=True)
        ]
        out = []
        for row in zip(*served, strict=True):
            parts = tuple(
                ComponentReward(c.name, c.core.model_version, c.weight, s.reward, s.score)
                for c, s in zip(self.components, row, strict=True)
            )
            out.append(CompositeScore(sum(p.weight * p.reward for p in parts), parts))
        return out

    async def score(
        self,
        pairs: Sequence[tuple[str, str]],
        options: Sequence[RewardOptions],
        timeout: float | None = None,
        field: str = "pairs",
    ) -> list[CompositeScore]:
        """The composite reward of each (prompt, response) pair, in order."""
        per_model = await each([c.core.score(pairs, timeout, field) for c in self.components])
        return self._combine(per_model, options)

    def rewards_by_model(self, scores: Sequence[CompositeScore]) -> dict[str, list[float]]:
        """Each model's normalised rewards over ``scores`` (this composite's), by model name."""
        return {
            c.name: [s.components[k].reward for s in scores] for k, c in enumerate(self.components)
        }

    async def score_group(
        self,
        prompt: str,
        responses: Sequence[str],
        options: Sequence[RewardOptions],
        timeout: float | None = None,
        field: str = "responses",
    ) -> list[CompositeScore]:
        """``score`` of (prompt, response) for each response, each model tokenising the prompt
        once."""
        per_model = await each(
            [c.core.score_group(prompt, responses, timeout, field) for c in self.components]
        )
        return self._combine(per_model, options)

    async def prefer(
        self,
        items: Sequence[tuple[str, str, str]],
        options: Sequence[RewardOptions],
        timeout: float | None = None,
        field: str = "items",
    ) -> list[CompositePreference]:
        """sigma(R_a - R_b) per (prompt, a, b) item; each model scores a and b in one batch."""
        per_model: list[list[Preference]] = await each(
            [c.core.prefer(items, timeout, field) for c in self.components]
        )
        sides = self._combine(
            [[side for p in prefs for side in (p.a, p.b)] for prefs in per_model], options
        )
        out = []
        for a, b in zip(sides[0::2], sides[1::2], strict=True):
            parts = tuple(
                ComponentPreference(pa.name, pa.version, pa.weight, pa.reward, pb.reward)
                for pa, pb in zip(a.components, b.components, strict=True)
            )
            out.append(
                CompositePreference(
                    sigmoid(a.reward - b.reward), a.reward, b.reward, a.truncated, b.truncated,
                    parts,
                )
            )  # fmt: skip
        return out
