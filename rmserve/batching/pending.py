"""A request waiting for its rewards: the owner of its queued items, and its results."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from rmserve.errors import RewardError
from rmserve.text.preprocess import PreparedPair


@dataclass(frozen=True, slots=True)
class PairScore:
    reward: float  # raw model output (normalisation is the caller's choice); ensemble: see below
    truncated: bool
    response_truncated: bool
    num_tokens: int
    # Ensembles only: the K members' raw rewards, and ``reward`` is their mean.
    members: tuple[float, ...] | None = None


@dataclass(frozen=True, slots=True)
class Preference:
    probability_a: float  # sigmoid(a.reward - b.reward); ensemble: mean of members' (ensemble_math)
    a: PairScore
    b: PairScore
    probability_a_std: float | None = None  # ensembles only: the spread over members


class PendingRequest:
    """Collects rewards row by row; ``finished`` once answered, failed or cancelled.

    ``finished`` is a plain bool so the engine thread may read it to skip dead work.
    ``expiry`` is the timer that fails it at its deadline (set by the batcher, cancelled here).
    """

    def __init__(self, pairs: list[PreparedPair], deadline: float | None) -> None:
        self.pairs = pairs
        self.deadline = deadline
        self.rewards: np.ndarray | None = None  # [N] or [N, K]: shaped by the first fill
        self._filled = np.zeros(len(pairs), dtype=bool)
        self.remaining = len(pairs)
        self.queued_rows = 0  # rows of this request still waiting in the queue
        self.finished = False
        self.expiry: asyncio.TimerHandle | None = None
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def _gone(self) -> bool:
        """Finished, or its caller's task was cancelled and has not yet run its handler (the
        future is already cancelled then, and setting a result would raise)."""
        if self.future.done():
            self.close()
        return self.finished

    def close(self) -> None:
        """Mark finished (idempotent) and stop the deadline timer."""
        self.finished = True
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None

    def fill(self, index: int, rewards: np.ndarray) -> None:
        if self._gone():
            return
        end = index + len(rewards)
        if end > len(self.pairs) or self._filled[index:end].any():
            raise AssertionError(f"rows {index}:{end} filled twice or out of range")
        if self.rewards is None:
            self.rewards = np.zeros((len(self.pairs), *rewards.shape[1:]), dtype=np.float32)
        self.rewards[index:end] = rewards
        self._filled[index:end] = True
        self.remaining -= len(rewards)
        if self.remaining == 0:
            self.close()
            self.future.set_result(None)

    def fail(self, error: RewardError) -> bool:
        """Fail the request unless it already finished; True if this call failed it."""
        if self._gone():
            return False
        self.close()
        self.future.set_exception(error)
        return True

    def scores(self) -> list[PairScore]:
        if self.rewards is None:  # no pairs
            return []
        if self.rewards.ndim == 2:
            return [
                PairScore(
                    float(np.mean(row, dtype=np.float64)),
                    p.truncated,
                    p.response_truncated,
                    p.num_tokens,
                    tuple(float(r) for r in row),
                )
                for row, p in zip(self.rewards, self.pairs, strict=True)
            ]
        return [
            PairScore(float(r), p.truncated, p.response_truncated, p.num_tokens)
            for r, p in zip(self.rewards.tolist(), self.pairs, strict=True)
        ]
