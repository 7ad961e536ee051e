"""A GRPO group's statistics, computed as TRL's ``GRPOTrainer`` computes them.

TRL (``trl/trainer/grpo_trainer.py``, ``_generate_and_score_completions``) takes the group's
mean and its standard deviation with Bessel's correction (``nanstd``: ddof 1), and scales
advantages as ``(r - mean) / (std + 1e-4)``. A group of one has no spread: its std is 0 here
(TRL's ddof-1 formula would divide by zero), so its one advantage is 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

ADVANTAGE_EPSILON = 1e-4  # TRL's GRPOTrainer: advantages / (std_rewards + 1e-4)


@dataclass(frozen=True, slots=True)
class GroupStats:
    mean: float
    std: float  # ddof 1; 0 for a group of one
    advantages: list[float]
    epsilon: float


def group_stats(rewards: Sequence[float], epsilon: float = ADVANTAGE_EPSILON) -> GroupStats:
    """Mean, Bessel-corrected std and GRPO advantages of one group's rewards (float64)."""
    n = len(rewards)
    if n == 0:
        raise ValueError("a group needs at least one reward")
    mean = math.fsum(rewards) / n
    std = math.sqrt(math.fsum((r - mean) ** 2 for r in rewards) / (n - 1)) if n > 1 else 0.0
    return GroupStats(mean, std, [(r - mean) / (std + epsilon) for r in rewards], epsilon)
