"""The requests one core accepted and has not answered yet: their count, reported to a gauge
as it changes, and an event set while there are none, which a drain and the golden canary
(``RewardCore.score_when_idle``) wait on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class InFlight:
    """``report``: called with the count after each change (a gauge's ``set``)."""

    def __init__(self, report: Callable[[int], None]) -> None:
        self.count = 0
        self._report = report
        self._idle: asyncio.Event | None = None  # made by start(), on the serving event loop

    @property
    def started(self) -> bool:
        return self._idle is not None

    def start(self) -> None:
        self._idle = asyncio.Event()
        self._idle.set()

    async def idle(self) -> None:
        """Return once no request is in flight (at once before ``start``)."""
        if self._idle is not None:
            await self._idle.wait()

    def enter(self) -> None:
        self.count += 1
        self._report(self.count)
        if self._idle is not None:
            self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        self._report(self.count)
        if self.count == 0 and self._idle is not None:
            self._idle.set()
