"""Bootstrap resamples for ensembles: n draws with replacement, seeded.

A full member (``--bootstrap``) trains on the resampled list; a head of a shared-backbone
ensemble sees every pair once, weighted by how often the same draws picked it. Both come from
``bootstrap_resample``, so head k and full member k (seed + k) see the same multiset of pairs.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def bootstrap_resample(items: Sequence[T], seed: int) -> list[T]:
    """len(items) draws with replacement from ``items``, seeded by ``seed``."""
    draw = random.Random(seed)
    return [draw.choice(items) for _ in range(len(items))]


def bootstrap_counts(n: int, seed: int) -> list[int]:
    """How often each of n items appears in ``bootstrap_resample(items, seed)``: the same
    draws as integer weights (they sum to n)."""
    counts = [0] * n
    for i in bootstrap_resample(range(n), seed):
        counts[i] += 1
    return counts
