"""Serving a new version of a named model without downtime (docs/guides/serving.md#version-swap).

Read the artifact (hashes verified) → refuse, with the figures, if the memory limit cannot hold
it beside what is served → build its engine (the production factory checks its golden pairs: a
drift is refused with the figures) and run the model checks → warm it up → hand the model's
golden canary to it → switch the name to it in one step (``ModelRegistry.replace``) → wait for
the requests holding the old version → stop the old version and return its memory. Until the
switch nothing changes for callers; a failure before it leaves the old version serving.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from rmserve.artifact.manifest import ArtifactError
from rmserve.engine.session import LoadedArtifact, load_artifact
from rmserve.errors import InvalidRequest, Refused, Unavailable
from rmserve.observability.metrics import Metrics
from rmserve.server.model_loading import NamedArtifact
from rmserve.server.settings import ServerSettings
from rmserve.serving.admission import SharedAdmission
from rmserve.serving.config import CoreState
from rmserve.serving.core import RewardCore
from rmserve.serving.memory_budget import cgroup_memory_limit
from rmserve.serving.models import ModelRegistry
from rmserve.serving.models_memory import ModelFootprint, engine_footprint, required_bytes
from rmserve.serving.swap_result import SwapResult

log = logging.getLogger(__name__)

# Builds a model's core (engine built, model checks passed, not started): RewardServer.build_core.
BuildCore = Callable[[NamedArtifact, SharedAdmission, bool], Awaitable[RewardCore]]
# Called with the new version's core, started, just before the switch (the server moves the
# model's golden canary to it).
Switched = Callable[[RewardCore], Awaitable[None]]


def footprint(
    name: str, artifact: LoadedArtifact, like: RewardCore, settings: ServerSettings
) -> ModelFootprint:
    """What ``artifact`` adds to the memory formula served as ``like`` is (its provider and
    engine workers), activations included."""
    return engine_footprint(
        name, artifact, like.engine.provider, like.config.engine_workers,
        settings.max_batch_tokens, settings.long_batch_workers,
    )  # fmt: skip


class ModelSwapper:
    """One swap at a time for a server's models."""

    def __init__(
        self,
        settings: ServerSettings,
        models: Callable[[], ModelRegistry | None],
        build_core: BuildCore,
        metrics: Metrics,
        switched: Switched,
    ) -> None:
        self._settings = settings
        self._switched = switched
        self._models = models
        self._build_core = build_core
        self._metrics = metrics
        self._running: str | None = None  # the model being swapped

    async def swap(self, name: str, folder: str) -> SwapResult:
        models = self._models()
        if models is None:
            raise Unavailable("server is loading its models; retry later")
        if name not in models.names:
            raise InvalidRequest(
                f"model: model {name!r} is not served here; served: {', '.join(models.names)}"
            )
        if not folder:
            raise InvalidRequest("artifact: the new version's artifact folder is required")
        if self._running is not None:
            raise Refused(f"a swap of {self._running!r} is running; retry when it is done")
        self._running = name
        try:
            return await self._swap(models, name, Path(folder))
        finally:
            self._running = None

    async def _swap(self, models: ModelRegistry, name: str, folder: Path) -> SwapResult:
        start = time.perf_counter()
        try:
            artifact = await asyncio.to_thread(load_artifact, folder)
        except ArtifactError as e:
            raise Refused(f"artifact: {e}") from None
        new = NamedArtifact(name, artifact)
        self._check_memory(models, new)
        try:
            core = await self._build_core(new, models.shared, name == models.default)
        except ArtifactError as e:
            raise Refused(f"artifact: {e}") from None
        await core.astart()  # warm-up
        if models.state is CoreState.DRAINING:
            await core.astop()
            raise Unavailable("server is draining; the swap was not made")
        await self._switched(core)
        loaded = time.perf_counter()
        old = await models.replace(core, self._settings.grace_seconds)
        result = SwapResult(
            name, old.model_version, core.model_version, loaded - start,
            time.perf_counter() - loaded,
        )  # fmt: skip
        self._metrics.model_info.remove(name, old.model_version, old.engine.provider)
        del old  # the last reference: its session goes now
        gc.collect()
        models.shared.return_freed_memory()
        log.info(
            "%s: serving %s (was %s), loaded in %.1fs; old version freed %.1fs after the switch",
            name, result.new_version, result.old_version, result.load_seconds, result.drain_seconds,
        )  # fmt: skip
        return result

    def _check_memory(self, models: ModelRegistry, new: NamedArtifact) -> None:
        """Refuse, with the figures, when the memory limit cannot hold every loaded version
        and the new one at once (the old version stays until its requests finish)."""
        s = self._settings
        limit = s.memory_limit_bytes or cgroup_memory_limit()
        if limit is None:
            return
        loaded = [footprint(core.name, core.artifact, core, s) for core in models.cores()]
        added = footprint(new.name, new.artifact, models.core(new.name), s)
        needed = required_bytes([*loaded, added], models.max_inflight_bytes, s.max_queue_pairs)
        if needed > limit:
            raise Refused(
                f"memory: serving {new.name} {new.artifact.manifest.version} "
                f"({added.model_bytes} bytes, {added.host_activations} bytes of activations) "
                f"beside what is loaded "
                f"({', '.join(f'{m.name} {m.model_bytes} bytes' for m in loaded)}) needs "
                f"{needed} bytes, over the memory limit of {limit} bytes "
                "(docs/guides/operations.md#several-models); raise the limit, or restart the "
                "server on the new version (the drain-then-load mode in "
                "docs/guides/serving.md#version-swap)"
            )
