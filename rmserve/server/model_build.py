"""What the server settings make of each served model: its engine (``ort_engine``, the
production factory, which checks the golden pairs on the bare session) and its core's config
(``core_config``)."""

from __future__ import annotations

from collections.abc import Callable

from rmserve.batching.collect import BatchLimits
from rmserve.engine.session import Engine, LoadedArtifact, OrtEngine
from rmserve.engine.threads import threads_per_batch
from rmserve.server.golden_watch import golden_checked
from rmserve.server.settings import ServerSettings
from rmserve.serving.config import CoreConfig
from rmserve.serving.memory_budget import default_inflight_bytes

EngineFactory = Callable[[LoadedArtifact, ServerSettings], Engine]


def ort_engine(artifact: LoadedArtifact, settings: ServerSettings) -> Engine:
    threads, workers = settings.intra_op_threads, settings.engine_workers
    if settings.provider != "cuda" or workers:  # on CUDA one batch at a time keeps every thread
        threads = threads_per_batch(threads, workers)
    engine = OrtEngine(artifact, settings.provider, threads, settings.gpu_device_id)
    return golden_checked(engine, artifact, settings.max_batch_tokens)  # refused on drift


def core_config(
    settings: ServerSettings, max_inflight_bytes: int | None = None, engine_workers: int = 1
) -> CoreConfig:
    """The core's config from the server settings. ``max_inflight_bytes``: the resolved budget
    (None: the setting, else its default); ``engine_workers``: resolved for the engine's provider
    (``rmserve.engine.threads``)."""
    s = settings
    limits = BatchLimits(
        max_batch_size=s.max_batch_size,
        max_batch_tokens=s.max_batch_tokens,
        max_padding_ratio=s.max_padding_ratio,
        max_queue_delay_s=s.max_queue_delay_ms / 1000.0,
        window=max(256, 8 * s.max_batch_size),
    )
    if max_inflight_bytes is None:
        max_inflight_bytes = s.max_inflight_bytes or default_inflight_bytes(s.max_message_bytes)
    return CoreConfig(
        limits,
        s.max_queue_pairs,
        s.max_request_pairs,
        s.warmup_runs,
        max_inflight_bytes,
        s.ensemble_aggregate,
        s.ensemble_uncertainty_penalty,
        engine_workers,
        long_batch_workers=s.long_batch_workers,
        warmup_budget_s=s.warmup_budget_seconds,
        truncation=s.truncation,
    )
