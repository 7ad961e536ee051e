"""The arithmetic of rewards, pure numpy: normalise ensemble members, aggregate, prefer, and the
one logistic function (``sigmoid``) every preference and probability is computed with.

``raw`` is an [N, K] array: N pairs scored by K members. Each member k is normalised with its
own held-out statistics, z_k = (r_k - mean_k) / std_k, before anything is combined (members'
scales differ; averaging raw rewards is meaningless). Spread is the standard deviation over
members with ddof 0. Everything is computed in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args, overload

import numpy as np
import numpy.typing as npt

AggregateName = Literal["mean", "min", "mean_minus_std"]
AGGREGATES: tuple[AggregateName, ...] = get_args(AggregateName)

F64 = npt.NDArray[np.float64]


def normalize_members(raw: npt.ArrayLike, means: npt.ArrayLike, stds: npt.ArrayLike) -> F64:
    """z[n, k] = (raw[n, k] - means[k]) / stds[k]."""
    r = np.asarray(raw, dtype=np.float64)
    return (r - np.asarray(means, dtype=np.float64)) / np.asarray(stds, dtype=np.float64)


@dataclass(frozen=True)
class MemberStats:
    """Per pair: the members' mean, standard deviation (ddof 0) and minimum, each [N]."""

    mean: F64
    std: F64
    min: F64


def member_stats(z: npt.ArrayLike) -> MemberStats:
    values = np.asarray(z, dtype=np.float64)
    return MemberStats(values.mean(axis=1), values.std(axis=1, ddof=0), values.min(axis=1))


def aggregate(stats: MemberStats, how: AggregateName, uncertainty_penalty: float) -> F64:
    """The served reward per pair: mean, min, or mean - penalty * std."""
    if how == "mean":
        return stats.mean
    if how == "min":
        return stats.min
    if how == "mean_minus_std":
        return stats.mean - uncertainty_penalty * stats.std
    raise ValueError(f"unknown aggregate {how!r} (one of {', '.join(AGGREGATES)})")


def preference(raw_a: npt.ArrayLike, raw_b: npt.ArrayLike) -> tuple[F64, F64]:
    """P(a preferred to b) per item, [N] each: the mean over members of
    sigma(r_a^k - r_b^k) on raw member rewards, and its standard deviation over members."""
    diff = np.asarray(raw_a, dtype=np.float64) - np.asarray(raw_b, dtype=np.float64)
    probabilities = sigmoid(diff)
    return probabilities.mean(axis=1), probabilities.std(axis=1, ddof=0)


@overload
def sigmoid(x: float) -> float: ...
@overload
def sigmoid(x: F64) -> F64: ...
def sigmoid(x: float | F64) -> float | F64:
    """The logistic function 1 / (1 + e^-x) in float64, elementwise for an array: it neither
    overflows nor loses precision for large |x| (e^-|x| is all it exponentiates)."""
    if isinstance(x, np.ndarray):
        e = np.exp(-np.abs(x))
        result: F64 = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        return result
    z = math.exp(-abs(x))
    return 1.0 / (1.0 + z) if x >= 0 else z / (1.0 + z)
