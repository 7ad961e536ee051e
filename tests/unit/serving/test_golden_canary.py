"""The golden canary on a real RewardCore with a fake engine: it scores only when no request is
in flight (a request arriving mid-check waits for one golden batch at most), reports each
check, ends at the first drift, survives an engine error, and the drifted core refuses work."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from rmserve.batching.collect import BatchLimits
from rmserve.engine.session import EngineError, LoadedArtifact
from rmserve.errors import Unavailable
from rmserve.observability.metrics import Metrics
from rmserve.serving.config import CoreConfig, CoreState
from rmserve.serving.core import RewardCore
from rmserve.serving.golden import GoldenPairs, GoldenReport, golden_pairs
from rmserve.serving.golden_canary import GoldenCanary
from rmserve.text.preprocess import PreparedPair
from tests.support.golden_rig import FP32, LengthEngine, golden_of, minilm_artifact, with_golden

pytestmark = pytest.mark.asyncio(loop_scope="function")
BOUND_S = 60.0


class GatedEngine(LengthEngine):
    """``LengthEngine`` that says which calls were golden, holds calls while ``gate`` is
    closed and fails the calls numbered in ``fail_calls``."""

    def __init__(self, golden: GoldenPairs) -> None:
        super().__init__()
        self.golden_ids = {id(p) for p in golden.pairs}
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Semaphore(0)  # released as each call enters
        self.calls: list[str] = []
        self.fail_calls: set[int] = set()

    def score(self, pairs: Sequence[PreparedPair]) -> np.ndarray:
        call = len(self.calls)
        self.calls.append("golden" if id(pairs[0]) in self.golden_ids else "request")
        self.entered.release()
        if not self.gate.wait(BOUND_S):
            raise EngineError("gate left closed")
        if call in self.fail_calls:
            raise EngineError(f"scripted failure of call {call}")
        return super().score(pairs)


@pytest.fixture(scope="module")
def loaded() -> LoadedArtifact:
    artifact = minilm_artifact()
    return with_golden(artifact, golden_of(artifact, FP32))


def setup(loaded: LoadedArtifact) -> tuple[GoldenPairs, GatedEngine, RewardCore]:
    golden = golden_pairs(loaded)
    assert golden is not None
    golden = replace(golden, batches=[[0, 1], [2, 3]])  # two runs: a gap between them
    engine = GatedEngine(golden)
    config = CoreConfig(BatchLimits(4, 4096, 100.0), max_queue_pairs=100, max_request_pairs=10)
    return golden, engine, RewardCore(engine, loaded, config, Metrics())


async def entered(engine: GatedEngine) -> None:
    assert await asyncio.to_thread(engine.entered.acquire, True, BOUND_S), "no engine call"


async def settle() -> None:
    """Let every ready task run to its next wait (asyncio runs them in order, deterministically)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_the_canary_waits_for_the_requests_in_flight(loaded: LoadedArtifact) -> None:
    golden, engine, core = setup(loaded)
    reports: list[GoldenReport] = []

    async def on_report(report: GoldenReport) -> None:
        reports.append(report)

    async with core:
        engine.gate.clear()
        request = asyncio.create_task(core.score([("q", "a")]))
        await entered(engine)
        check = asyncio.create_task(GoldenCanary(golden, core, "Fake", 3600, on_report).check())
        await settle()
        assert engine.calls == ["request"] and not check.done()
        engine.gate.set()
        await request
        report = await asyncio.wait_for(check, BOUND_S)
    assert report.ok and reports == [report]
    assert engine.calls == ["request", "golden", "golden"]


async def test_a_request_mid_check_waits_for_one_golden_batch(loaded: LoadedArtifact) -> None:
    golden, engine, core = setup(loaded)

    async def on_report(report: GoldenReport) -> None:
        pass

    async with core:
        engine.gate.clear()
        check = asyncio.create_task(GoldenCanary(golden, core, "Fake", 3600, on_report).check())
        await entered(engine)  # the first golden batch holds the engine
        request = asyncio.create_task(core.score([("q", "a")]))
        await settle()
        engine.gate.set()
        (score,) = await request
        report = await asyncio.wait_for(check, BOUND_S)
    assert engine.calls == ["golden", "request", "golden"]  # the second batch waited for it
    assert report.ok and score.reward == pytest.approx(0.5 * score.num_tokens)


async def test_run_reports_each_check_and_ends_at_drift(loaded: LoadedArtifact) -> None:
    golden, engine, core = setup(loaded)
    reports: list[GoldenReport] = []
    errors: list[BaseException] = []
    engine.fail_calls = {2}  # the second check's first batch

    async def on_report(report: GoldenReport) -> None:
        reports.append(report)
        if len(reports) == 2:
            engine.offset = 1.0  # the next check drifts

    async with core:
        canary = GoldenCanary(golden, core, "Fake", 0.001, on_report, errors.append)
        await asyncio.wait_for(canary.run(), BOUND_S)  # returns at the drift
        assert core.state is CoreState.SERVING  # what to do with a drift is the caller's
    assert [r.ok for r in reports] == [True, True, False]
    assert len(errors) == 1 and "scripted failure of call 2" in str(errors[0])
    assert canary.checks == 4  # ok, error, ok, drift
    assert reports[-1].max_abs_diff == pytest.approx(1.0) and reports[-1].beyond == 4


async def test_run_ends_when_the_core_stops_serving(loaded: LoadedArtifact) -> None:
    golden, _, core = setup(loaded)

    async def on_report(report: GoldenReport) -> None:
        core.begin_drain()

    async with core:
        canary = GoldenCanary(golden, core, "Fake", 0.001, on_report)
        await asyncio.wait_for(canary.run(), BOUND_S)
    assert canary.checks == 1


async def test_a_drifted_core_refuses_requests(loaded: LoadedArtifact) -> None:
    golden, engine, core = setup(loaded)
    async with core:
        core.mark_drifted()
        assert core.state is CoreState.DRIFTED
        with pytest.raises(Unavailable, match="out of service \\(its golden pairs drifted\\)"):
            await core.score([("q", "a")])
        with pytest.raises(Unavailable, match="golden pairs drifted"):
            await core.score_when_idle(golden.pairs[:1])
        core.begin_drain()
        assert core.state is CoreState.DRIFTED  # draining changes nothing: it refuses already
    assert core.state is CoreState.STOPPED and engine.calls == []


async def test_interval_must_be_positive(loaded: LoadedArtifact) -> None:
    golden = golden_pairs(loaded)
    assert golden is not None

    async def on_report(report: GoldenReport) -> None:
        pass

    with pytest.raises(ValueError, match="interval_s must be positive"):
        GoldenCanary(golden, LengthEngine(), "Fake", 0.0, on_report)  # type: ignore[arg-type]
