"""Loading the served models: each artifact read and its hashes verified, its engine built, the
checks every model must pass before it serves (at start-up and before a version swap). What each
adds to the memory formula: ``rmserve.serving.models_memory.engine_footprint``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rmserve.engine.session import Engine, LoadedArtifact, load_artifact
from rmserve.server.model_set import ModelSource, check_names

log = logging.getLogger(__name__)

# A check a model must pass before it serves: (its name, the artifact, its engine) → None, or
# ``ArtifactError`` saying why not. Runs on a worker thread, after the engine is built and
# before warm-up, at start-up and before a swap (``rmserve.server.swap``). The golden pairs'
# load check is not one of them: the production engine factory runs it on the bare session,
# before anything wraps it (``rmserve.server.model_build.ort_engine``), for every model and
# every swap.
ModelCheck = Callable[[str, LoadedArtifact, Engine], None]
# What every server runs unless given its own list (``RewardServer(model_checks=...)``): the place
# to add a check every model must pass.
DEFAULT_MODEL_CHECKS: tuple[ModelCheck, ...] = ()


@dataclass(frozen=True)
class NamedArtifact:
    name: str
    artifact: LoadedArtifact


async def load_named(sources: Sequence[ModelSource], default: str | None) -> tuple[
    list[NamedArtifact], str
]:  # fmt: skip
    """Every source read (manifest, hashes, tokenizer) off the event loop, named; and the
    default's name. ``ArtifactError`` for a bad artifact, a name used twice or an unknown
    default."""
    loaded = []
    for source in sources:
        artifact = await asyncio.to_thread(load_artifact, source.folder)
        loaded.append(NamedArtifact(source.name or artifact.manifest.name, artifact))
    names = [m.name for m in loaded]
    default = default or names[0]
    check_names(names, default)
    return loaded, default


async def checked_engine(
    model: NamedArtifact,
    build: Callable[[LoadedArtifact], Engine],
    checks: Sequence[ModelCheck],
) -> Engine:
    """The model's engine, built and checked off the event loop."""
    engine = await asyncio.to_thread(build, model.artifact)
    for check in checks:
        await asyncio.to_thread(check, model.name, model.artifact, engine)
    return engine
