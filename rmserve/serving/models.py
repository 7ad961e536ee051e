"""The served models by name: what a request's model name (or its weighted combination of
names) resolves to, the admission they share, and the atomic switch to a new version.

A request takes a *lease* on the version(s) it resolves, synchronously, before its first
``await``; it scores with those versions only and returns the lease when it is answered. A
version swap changes the name → version map in one assignment on the event loop, so a request
sees the old version or the new one, never a mix; the old version keeps serving the requests
that hold it, and is stopped (its session freed) once the last lease is back.

    with models.select(name, weights) as target:   # a RewardCore, or a Composite
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from rmserve.errors import InvalidRequest
from rmserve.serving.admission import SharedAdmission
from rmserve.serving.composite import Component, Composite
from rmserve.serving.config import CoreState
from rmserve.serving.core import RewardCore
from rmserve.serving.memory_budget import BytesReservation

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Version:
    """One loaded version of a named model and the requests holding it."""

    core: RewardCore
    leases: int = 0
    released: asyncio.Event | None = None  # set once retired and no request holds it


class ModelRegistry:
    """Name → current version of each served model, over one ``SharedAdmission``."""

    def __init__(self, shared: SharedAdmission, default: str) -> None:
        self.shared = shared
        self.default = default
        self._current: dict[str, _Version] = {}
        self._retiring: list[_Version] = []
        self._draining = False

    # what is served -------------------------------------------------------------------------

    def add(self, core: RewardCore) -> None:
        if core.name in self._current:
            raise ValueError(f"model {core.name!r} is served twice")
        self._current[core.name] = _Version(core)

    @property
    def names(self) -> list[str]:
        """The served names, in the order they were added."""
        return list(self._current)

    def core(self, name: str) -> RewardCore:
        """The current version of ``name`` (which must be served)."""
        return self._current[name].core

    @property
    def default_core(self) -> RewardCore | None:
        version = self._current.get(self.default)
        return version.core if version is not None else None

    def cores(self, name: str | None = None) -> list[RewardCore]:
        """Every loaded version (of ``name``, or of all models): current and retiring."""
        versions = [*self._current.values(), *self._retiring]
        return [v.core for v in versions if name is None or v.core.name == name]

    @property
    def state(self) -> CoreState:
        """SERVING while every model serves; else the first model's state that is not."""
        if self._draining:
            return CoreState.DRAINING
        for version in self._current.values():
            if version.core.state is not CoreState.SERVING:
                return version.core.state
        return CoreState.SERVING if self._current else CoreState.NEW

    @property
    def inflight(self) -> int:
        return sum(core.inflight for core in self.cores())

    # admission ------------------------------------------------------------------------------

    @property
    def max_inflight_bytes(self) -> int:
        return self.shared.max_inflight_bytes

    def retry_after_ms(self) -> int:
        return max((v.core.retry_after_ms() for v in self._current.values()), default=1000)

    @contextlib.contextmanager
    def admit_bytes(self, size: int) -> Iterator[None]:
        """Hold ``size`` bytes of the shared budget for a block, or raise ``Overloaded``."""
        with self.shared.admit_bytes(size, self.retry_after_ms):
            yield

    @contextlib.contextmanager
    def reserve_bytes(self) -> Iterator[BytesReservation]:
        with self.shared.reserve_bytes(self.retry_after_ms) as reservation:
            yield reservation

    # resolving a request's model ------------------------------------------------------------

    def _known(self, name: str, field: str) -> _Version:
        version = self._current.get(name)
        if version is None:
            raise InvalidRequest(
                f"{field}: model {name!r} is not served here; served: {', '.join(self.names)}"
            )
        return version

    @contextlib.contextmanager
    def use(self, name: str | None = None, field: str = "model") -> Iterator[RewardCore]:
        """The current version of ``name`` (None: the default model), held for the block."""
        version = self._known(self.default if name is None else name, field)
        with self._leased([version]):
            yield version.core

    @contextlib.contextmanager
    def select(
        self,
        name: str | None = None,
        weights: Mapping[str, float] | None = None,
        field: str = "model",
        weights_field: str = "reward_weights",
    ) -> Iterator[RewardCore | Composite]:
        """One model (``name``; None: the default) or, with ``weights``, their combination;
        every version held for the block. ``InvalidRequest`` names the field at fault."""
        if not weights:
            with self.use(name, field) as core:
                yield core
            return
        if name is not None:
            raise InvalidRequest(f"{field} and {weights_field}: send one of them, not both")
        versions, components = [], []
        for model, weight in weights.items():
            where = f"{weights_field}[{model!r}]"
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise InvalidRequest(f"{where}: a weight is a number, got {type(weight).__name__}")
            if not math.isfinite(weight):
                raise InvalidRequest(f"{where}: a weight must be finite, got {weight}")
            version = self._known(model, weights_field)
            versions.append(version)
            components.append(Component(model, version.core, float(weight)))
        with self._leased(versions):
            yield Composite(components)

    @contextlib.contextmanager
    def _leased(self, versions: list[_Version]) -> Iterator[None]:
        for version in versions:
            version.leases += 1
        try:
            yield
        finally:
            for version in versions:
                version.leases -= 1
                if version.leases == 0 and version.released is not None:
                    version.released.set()

    # versions -------------------------------------------------------------------------------

    async def replace(self, core: RewardCore, wait_seconds: float) -> RewardCore:
        """Serve ``core`` (started) as its name's version from now on; then wait up to
        ``wait_seconds`` for the requests holding the old version and stop it (what is still
        running then fails UNAVAILABLE, which clients retry). Returns the old, stopped core."""
        old = self._current[core.name]
        self._current[core.name] = _Version(core)  # the switch: one assignment
        old.released = asyncio.Event()
        self._retiring.append(old)
        try:
            if old.leases:
                try:
                    await asyncio.wait_for(old.released.wait(), timeout=wait_seconds)
                except TimeoutError:
                    log.warning(
                        "%s %s: %d requests still hold the old version after %.1fs; stopping it",
                        core.name, old.core.model_version, old.leases, wait_seconds,
                    )  # fmt: skip
            await old.core.astop(0.0)
        finally:
            self._retiring.remove(old)
        return old.core

    def begin_drain(self) -> None:
        """Refuse new requests in every model; accepted ones keep running."""
        self._draining = True
        for core in self.cores():
            core.begin_drain()

    async def astop(self, grace_seconds: float) -> None:
        """Drain every model (at once, within one grace period), then close what they share."""
        self.begin_drain()
        await asyncio.gather(*(core.astop(grace_seconds) for core in self.cores()))
        await self.shared.aclose()
