"""Texts and offline references shared by the ensemble tests.

Tolerances: the served math against numpy on the member rewards a reply carries, 1e-6; a reply
against the members scored offline (other batches, so other float32 rounding), 1e-5.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rmserve.artifact.manifest import Manifest
from rmserve.engine.session import OrtEngine, load_artifact
from rmserve.v1 import reward_pb2

TEXTS = [
    ("What is the capital of France?", "Paris."),
    ("What is the capital of France?", "I won't answer that."),
    ("What is 12 + 30?", "12 + 30 = 42."),
    ("What is 12 + 30?", "It is 41, obviously, you should know that by now " * 3),
    ("", ""),
    ("How do I boil an egg?", ""),
    ("context " * 200, "the response stays whole"),
    ("Translate 'cat' into French.", "Chat."),
]
OFFLINE_TOL = 1e-5
MATH_TOL = 1e-6
# The first test to use the session's ensemble trains it (three tiny members): a generous
# bound for a shared machine, never a performance target.
TRAINING_BOUND_S = 1800


def offline_member_rewards(members: Sequence[Path]) -> np.ndarray:
    """[N, K]: each member artifact's own graph on TEXTS, offline, in float64."""
    prompts, responses = [p for p, _ in TEXTS], [r for _, r in TEXTS]
    columns = [
        OrtEngine(load_artifact(m), provider="cpu").score_texts(prompts, responses) for m in members
    ]
    return np.stack(columns, axis=1).astype(np.float64)


def member_stats_of(manifest: Manifest) -> tuple[np.ndarray, np.ndarray]:
    """The members' held-out means and stds, in output order."""
    assert manifest.ensemble is not None
    means = np.array([m.normalization.mean for m in manifest.ensemble])
    stds = np.array([m.normalization.std for m in manifest.ensemble])
    return means, stds


def batch_request(**options: object) -> reward_pb2.ScoreBatchRequest:
    """ScoreBatch of TEXTS with the given ensemble options."""
    pairs = [reward_pb2.Pair(prompt=p, response=r) for p, r in TEXTS]
    return reward_pb2.ScoreBatchRequest(pairs=pairs, **options)  # type: ignore[arg-type]


def expected_aggregate(z: np.ndarray, how: str, penalty: float) -> np.ndarray:
    """The served aggregate, in numpy, of normalised member rewards z [N, K]."""
    if how == "min":
        return np.asarray(z.min(axis=1))
    mean, std = z.mean(axis=1), z.std(axis=1, ddof=0)
    return np.asarray(mean - penalty * std if how == "mean_minus_std" else mean)
