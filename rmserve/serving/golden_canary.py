"""The golden canary: an artifact's golden pairs re-scored while serving, on a schedule, in idle
engine time, a watch for what changes under a running model (a swapped file behind a reload, a
bad driver, a silent hardware fault).

Every ``interval_s`` the canary scores the pairs one small batch at a time, each only once no
request is in flight (``RewardCore.score_when_idle``): real traffic never waits behind more than
one such batch. Each finished check is handed to ``on_report``; the first that drifts ends the
canary (drift latches: the server turns readiness off and refuses rewards until it is
restarted). A check the engine fails is logged and counted, and the next one comes on schedule.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import numpy as np

from rmserve.errors import Unavailable
from rmserve.serving.golden import GoldenPairs, GoldenReport, compare
from rmserve.text.prepared import PreparedPair

log = logging.getLogger(__name__)


class IdleScorer(Protocol):
    async def score_when_idle(self, pairs: Sequence[PreparedPair]) -> np.ndarray: ...


class GoldenCanary:
    def __init__(
        self,
        golden: GoldenPairs,
        scorer: IdleScorer,
        provider: str,
        interval_s: float,
        on_report: Callable[[GoldenReport], Awaitable[None]],
        on_error: Callable[[BaseException], None] = lambda e: None,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive (got {interval_s})")
        self.golden = golden
        self._scorer = scorer
        self._provider = provider
        self._interval_s = interval_s
        self._on_report = on_report
        self._on_error = on_error
        self.checks = 0  # finished checks, whatever their result

    async def check(self) -> GoldenReport:
        """Score every golden pair in idle engine time and report the figures."""
        golden = self.golden
        rewards = np.empty(golden.reference.shape, dtype=np.float64)
        for batch in golden.batches:
            rewards[batch] = await self._scorer.score_when_idle([golden.pairs[i] for i in batch])
        report = compare(golden, rewards, self._provider)
        self.checks += 1
        await self._on_report(report)
        return report

    async def run(self) -> None:
        """Check every ``interval_s`` until a check drifts or the core stops serving."""
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                report = await self.check()
            except Unavailable:
                return
            except Exception as e:  # the engine failed a batch: say so, try again next time
                self.checks += 1
                log.warning("golden canary check of %s failed: %s", self.golden.model, e)
                self._on_error(e)
                continue
            if not report.ok:
                return
