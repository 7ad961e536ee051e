"""From raw engine scores to served rewards, for single models and ensembles. No protocol.

A single-model artifact serves its raw reward, or ``(r - mean) / std`` when the request asks to
``normalize``; aggregate options are ignored. An ensemble always serves normalised units: each
member is normalised with its own held-out stats, then aggregated (``rmserve.rewards.ensemble``);
``normalize`` changes nothing for it (its manifest's top-level stats are the identity).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rmserve.artifact.manifest import Manifest
from rmserve.batching.pending import PairScore, Preference
from rmserve.errors import InvalidRequest
from rmserve.rewards.ensemble import (
    AGGREGATES,
    AggregateName,
    aggregate,
    member_stats,
    normalize_members,
    preference,
    sigmoid,
)


@dataclass(frozen=True)
class RewardOptions:
    """What one request asked for, defaults filled in."""

    normalize: bool
    aggregate: AggregateName
    uncertainty_penalty: float
    return_members: bool


@dataclass(frozen=True)
class EnsembleSpread:
    """One pair's members in normalised units: their mean, std (ddof 0), min, and each z_k
    (only when the request asked for them)."""

    mean: float
    std: float
    min: float
    members: tuple[float, ...] | None


@dataclass(frozen=True)
class ServedScore:
    reward: float  # what the reply's ``reward`` carries
    score: PairScore  # raw engine result (truncation flags, token count)
    ensemble: EnsembleSpread | None  # None for a single model


def resolve_options(
    manifest: Manifest,
    normalize: bool,
    how: AggregateName,
    uncertainty_penalty: float,
    return_members: bool,
) -> RewardOptions:
    """Validate a request's choices. A single model ignores the ensemble options entirely."""
    if manifest.ensemble is not None:
        if how not in AGGREGATES:
            raise InvalidRequest(f"aggregate: {how!r} is not one of {', '.join(AGGREGATES)}")
        if not (math.isfinite(uncertainty_penalty) and uncertainty_penalty >= 0.0):
            raise InvalidRequest(
                f"uncertainty_penalty: must be a finite number >= 0, got {uncertainty_penalty}"
            )
    return RewardOptions(normalize, how, uncertainty_penalty, return_members)


def served_scores(
    manifest: Manifest, scores: Sequence[PairScore], options: RewardOptions
) -> list[ServedScore]:
    """The reply's reward (and an ensemble's spread) for each scored pair, in order."""
    if manifest.ensemble is None:
        return [
            ServedScore(manifest.normalize(s.reward) if options.normalize else s.reward, s, None)
            for s in scores
        ]
    if not scores:
        return []
    raw = np.array([s.members for s in scores], dtype=np.float64)
    z = normalize_members(
        raw,
        [m.normalization.mean for m in manifest.ensemble],
        [m.normalization.std for m in manifest.ensemble],
    )
    stats = member_stats(z)
    rewards = aggregate(stats, options.aggregate, options.uncertainty_penalty)
    return [
        ServedScore(
            float(rewards[i]),
            s,
            EnsembleSpread(
                float(stats.mean[i]),
                float(stats.std[i]),
                float(stats.min[i]),
                tuple(z[i].tolist()) if options.return_members else None,
            ),
        )
        for i, s in enumerate(scores)
    ]


def preferences(scores: Sequence[PairScore]) -> list[Preference]:
    """Preferences of (a, b) rows laid out a0, b0, a1, b1, ...: sigma(r_a - r_b) for a single
    model; for an ensemble the mean over members of sigma(r_a^k - r_b^k) on raw member rewards,
    and its spread."""
    sides = list(zip(scores[0::2], scores[1::2], strict=True))
    if not sides or sides[0][0].members is None:
        return [Preference(sigmoid(a.reward - b.reward), a, b) for a, b in sides]
    probability, spread = preference(
        np.array([a.members for a, _ in sides], dtype=np.float64),
        np.array([b.members for _, b in sides], dtype=np.float64),
    )
    return [
        Preference(float(p), a, b, float(sd))
        for p, sd, (a, b) in zip(probability.tolist(), spread.tolist(), sides, strict=True)
    ]


def watched_rewards(
    manifest: Manifest, rewards: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """What the reward watch sees of a request's engine rewards ([N] or [N, K]): the raw reward
    per row (an ensemble's: its members' mean, as ``PairScore.reward``) and, for an ensemble,
    the std over members of their normalised rewards (the disagreement ``EnsembleStats.std``)."""
    if manifest.ensemble is None:
        return rewards, None
    z = normalize_members(
        rewards,
        [m.normalization.mean for m in manifest.ensemble],
        [m.normalization.std for m in manifest.ensemble],
    )
    return rewards.mean(axis=1), member_stats(z).std
