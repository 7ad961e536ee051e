"""ModelRegistry: names resolved (or refused naming the field), leases that keep a version
until its requests are answered, and the atomic switch to a new version. Real cores over a
fake engine (reward = token count, optionally held by a gate)."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from rmserve.engine.session import LoadedArtifact
from rmserve.errors import InvalidRequest
from rmserve.observability.metrics import Metrics
from rmserve.serving.admission import SharedAdmission
from rmserve.serving.composite import Composite, each
from rmserve.serving.config import CoreState
from rmserve.serving.core import RewardCore
from rmserve.serving.models import ModelRegistry
from rmserve.text.preprocess import PreparedPair
from tests.unit.serving.test_core import artifact, make_core  # noqa: F401  (the fixture)

pytestmark = pytest.mark.asyncio(loop_scope="function")


class GatedEngine:
    """Reward = token count + ``offset``; batches wait while ``gate`` is closed."""

    provider = "FakeExecutionProvider"
    device = "cpu"

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset
        self.gate = threading.Event()
        self.gate.set()
        self.running = 0

    def score(self, pairs: Sequence[PreparedPair]) -> np.ndarray:
        self.running += 1
        self.gate.wait(timeout=60)
        self.running -= 1
        return np.array([p.num_tokens + self.offset for p in pairs], dtype=np.float32)


def core_of(
    artifact: LoadedArtifact,  # noqa: F811
    shared: SharedAdmission,
    metrics: Metrics,
    name: str,
    version: str,
    engine: GatedEngine,
) -> RewardCore:
    base = make_core(artifact, engine)  # type: ignore[arg-type]
    manifest = artifact.manifest.model_copy(update={"version": version})
    loaded = replace(artifact, manifest=manifest)
    return RewardCore(engine, loaded, base.config, metrics, shared, name)


async def registry(
    artifact: LoadedArtifact,  # noqa: F811
    names: Sequence[str] = ("a", "b"),
) -> tuple[ModelRegistry, dict[str, GatedEngine]]:
    metrics = Metrics()
    shared = SharedAdmission(16 << 20, metrics)
    models = ModelRegistry(shared, names[0])
    engines = {}
    for i, name in enumerate(names):
        engines[name] = GatedEngine(offset=100.0 * i)
        core = core_of(artifact, shared, metrics, name, "v1", engines[name])
        await core.astart()
        models.add(core)
    shared.start()
    return models, engines


async def test_names_resolve_and_unknown_ones_are_refused_naming_the_field(
    artifact: LoadedArtifact,  # noqa: F811
) -> None:
    models, _ = await registry(artifact)
    try:
        with models.select() as default, models.select("b") as b:
            assert (default.name, b.name) == ("a", "b")  # type: ignore[union-attr]
        with models.select(None, {"b": 2.0, "a": 0.5}) as composite:
            assert isinstance(composite, Composite)
            assert [(c.name, c.weight) for c in composite.components] == [("a", 0.5), ("b", 2.0)]
        refusals = [
            (("c", None), "model: model 'c' is not served here; served: a, b"),
            ((None, {"c": 1.0}), "reward_weights: model 'c' is not served here; served: a, b"),
            (("a", {"b": 1.0}), "model and reward_weights: send one of them, not both"),
            ((None, {"a": math.nan}), "reward_weights['a']: a weight must be finite, got nan"),
            ((None, {"a": "1"}), "reward_weights['a']: a weight is a number, got str"),
            ((None, {"a": True}), "reward_weights['a']: a weight is a number, got bool"),
        ]
        for (name, weights), message in refusals:
            with pytest.raises(InvalidRequest) as info, models.select(name, weights):
                pass
            assert str(info.value) == message
    finally:
        await models.astop(0.0)


async def test_a_composite_scores_every_model_and_combines_normalised_rewards(
    artifact: LoadedArtifact,  # noqa: F811
) -> None:
    models, _ = await registry(artifact)
    try:
        with models.select(None, {"a": 1.0, "b": -0.5}) as composite:
            assert isinstance(composite, Composite)
            (combined,) = await composite.score([("hi", "there")], composite.options())
        tokens = combined.components[0].score.num_tokens  # same tokenizer: same count
        assert [c.reward for c in combined.components] == [tokens, tokens + 100.0]
        assert combined.reward == tokens - 0.5 * (tokens + 100.0)
        assert composite.model_version == "a=v1+b=v1"
    finally:
        await models.astop(0.0)


async def test_each_cancels_the_rest_when_one_fails() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow() -> int:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 0

    async def fails() -> int:
        await started.wait()
        raise InvalidRequest("pairs[0].response: too long")

    with pytest.raises(InvalidRequest, match="too long"):
        await each([slow(), fails()])
    assert cancelled.is_set()


async def test_a_swap_switches_at_once_and_keeps_the_old_version_for_its_requests(
    artifact: LoadedArtifact,  # noqa: F811
) -> None:
    models, engines = await registry(artifact)
    try:
        old = models.core("a")
        engines["a"].gate.clear()
        with models.use("a") as held:
            pending = asyncio.create_task(held.score([("hi", "there")]))
            while engines["a"].running == 0:  # the batch reached the engine
                await asyncio.sleep(0)
            new_engine = GatedEngine(offset=1000.0)
            new = core_of(artifact, models.shared, old.metrics, "a", "v2", new_engine)
            await new.astart()
            swap = asyncio.create_task(models.replace(new, wait_seconds=60.0))
            await asyncio.sleep(0)
            assert models.core("a") is new and models.cores("a") == [new, old]
            with models.use("a") as now:
                assert now is new
                (score,) = await now.score([("hi", "there")])
            assert score.reward >= 1000.0  # the new version answers new requests
            assert old.state is CoreState.SERVING and not swap.done()
            engines["a"].gate.set()
            (first,) = await pending
            assert first.reward < 1000.0  # the held request finished on the old version
        assert await swap is old and old.state is CoreState.STOPPED
        assert models.cores("a") == [new]
    finally:
        await models.astop(0.0)


async def test_a_swap_stops_the_old_version_after_the_wait_when_a_request_still_holds_it(
    artifact: LoadedArtifact,  # noqa: F811
) -> None:
    models, _ = await registry(artifact, ["a"])
    try:
        old = models.core("a")
        new = core_of(artifact, models.shared, old.metrics, "a", "v2", GatedEngine())
        await new.astart()
        with models.use("a"):
            assert await models.replace(new, wait_seconds=0.01) is old
        assert old.state is CoreState.STOPPED and models.state is CoreState.SERVING
    finally:
        await models.astop(0.0)


async def test_drain_and_stop_cover_every_model(artifact: LoadedArtifact) -> None:  # noqa: F811
    models, _ = await registry(artifact)
    assert models.state is CoreState.SERVING
    models.begin_drain()
    assert models.state is CoreState.DRAINING
    assert {core.state for core in models.cores()} == {CoreState.DRAINING}
    await models.astop(0.0)
    assert {core.state for core in models.cores()} == {CoreState.STOPPED}
