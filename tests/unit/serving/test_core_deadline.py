"""RewardCore on an event loop whose clock the test moves: a caller's cancellation and its
deadline timer landing in the same loop turn are counted once, whichever runs first."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from rmserve.engine.session import LoadedArtifact
from rmserve.text.preprocess import PreparedPair
from tests.support.batcher_rig import ManualClockLoop
from tests.unit.serving.test_core import CountingEngine, artifact, make_core  # noqa: F401 (artifact: a fixture)


class HeldEngine(CountingEngine):
    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def score(self, pairs: Sequence[PreparedPair]) -> np.ndarray:
        self.entered.set()
        self.gate.wait(timeout=120)
        return super().score(pairs)


@pytest.mark.parametrize("first", ["cancel", "deadline timer"])
def test_cancellation_racing_the_deadline_timer_is_counted_once(
    artifact: LoadedArtifact,  # noqa: F811
    first: str,
) -> None:
    loop = ManualClockLoop()
    engine = HeldEngine()

    async def scenario() -> None:
        core = make_core(artifact, engine)
        await core.astart()
        held = asyncio.create_task(core.score([("q", "held")]))
        await asyncio.to_thread(engine.entered.wait, 120)  # the engine is busy from here on
        deadline = loop.time() + 1.0
        late = asyncio.create_task(core.score([("q", "late")], timeout=1.0))
        for _ in range(5):
            await asyncio.sleep(0)
        assert core.metrics.registry.get_sample_value("rmserve_queue_pairs") == 1
        # Both due in one turn: a timer before the deadline runs before the expiry timer,
        # one after it runs after; the caller's task handles its cancellation after both.
        loop.call_at(deadline + (-1e-3 if first == "cancel" else 1e-3), late.cancel)
        loop.now = deadline + 5.0
        with pytest.raises(asyncio.CancelledError):
            await late
        registry = core.metrics.registry
        counted = sum(
            registry.get_sample_value(name) or 0.0
            for name in ("rmserve_expired_total", "rmserve_cancelled_total")
        )
        assert counted == 1
        assert registry.get_sample_value("rmserve_expired_total") == 1  # its deadline passed
        assert registry.get_sample_value("rmserve_queue_pairs") == 0
        engine.gate.set()
        assert (await held)[0].reward > 0
        await core.astop()
        assert engine.batches == [1]  # the late pair was never computed

    try:
        loop.run_until_complete(scenario())
    finally:
        engine.gate.set()
        loop.close()
