"""The golden pairs in a running server: the load check on the real session
(``golden_checked``) and the canary that turns readiness off on drift (``GoldenWatch``).

See docs/guides/operations.md#golden-pairs.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable

from rmserve.engine.session import Engine, LoadedArtifact, OrtEngine
from rmserve.observability.golden_metrics import GoldenMetrics
from rmserve.serving.core import RewardCore
from rmserve.serving.golden import (
    GOLDEN_BATCH_TOKENS,
    GoldenReport,
    golden_pairs,
    verify_golden,
)
from rmserve.serving.golden_canary import GoldenCanary

log = logging.getLogger(__name__)


# The load check's figures of each checked engine, for the gauges at SERVING (an engine a test
# wraps is looked up as the wrapper, not found, and its gauges wait for the first canary check).
_load_reports: weakref.WeakKeyDictionary[Engine, GoldenReport] = weakref.WeakKeyDictionary()


def golden_checked(engine: OrtEngine, artifact: LoadedArtifact, max_batch_tokens: int) -> OrtEngine:
    """``engine`` once its golden pairs score within tolerance (else ``GoldenDrift``, and the
    server does not start). Run on the session itself, before anything wraps it."""
    report = verify_golden(engine, artifact, max_batch_tokens)
    if report is not None:
        _load_reports[engine] = report
    return engine


class GoldenWatch:
    """The canary of one served model (its metrics labelled with the name it is served by),
    every ``interval_s`` seconds (0: no canary). On drift: the figures on the log and the
    metrics, the core refuses rewards (UNAVAILABLE) and ``not_serving`` turns the health service
    NOT_SERVING, for good (a server of several models: any model's drift)."""

    def __init__(
        self,
        core: RewardCore,
        metrics: GoldenMetrics,
        interval_s: float,
        not_serving: Callable[[], Awaitable[None]],
    ) -> None:
        self._core = core
        self._metrics = metrics
        self._not_serving = not_serving
        self.model = core.name  # the name it is served by: the metrics' model label
        budget = core.config.limits.max_batch_tokens or GOLDEN_BATCH_TOKENS
        golden = golden_pairs(core.artifact, budget)
        self.canary = (
            None
            if golden is None or interval_s <= 0
            else GoldenCanary(
                golden, core, core.engine.provider, interval_s, self._report, self._error
            )
        )
        self._task: asyncio.Task[None] | None = None
        loaded = _load_reports.get(core.engine)
        if loaded is not None:
            metrics.record(self.model, loaded.max_abs_diff, loaded.drift_ratio, loaded.ok)

    @property
    def running(self) -> bool:
        """Whether the canary still checks (it ends at the first drift)."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self.canary is not None:
            self._task = asyncio.create_task(
                self.canary.run(), name=f"rmserve-golden-canary-{self.model}"
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _report(self, report: GoldenReport) -> None:
        self._metrics.record(self.model, report.max_abs_diff, report.drift_ratio, report.ok)
        if report.ok:
            log.debug("golden canary: %s", report.describe())
            return
        log.error(
            "golden canary: %s; readiness off and rewards refused until the server is restarted",
            report.describe(),
        )
        self._core.mark_drifted()
        await self._not_serving()

    def _error(self, error: BaseException) -> None:
        self._metrics.failed(self.model)
