"""What a serving core is configured with (from the server settings) and the states it moves
through."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from rmserve.batching import BatchLimits
from rmserve.cost_model import BatchPolicy
from rmserve.ensemble_math import AggregateName
from rmserve.memory_budget import default_inflight_bytes
from rmserve.settings import ServerSettings


class CoreState(Enum):
    NEW = "new"
    WARMING = "warming up"
    SERVING = "serving"
    DRAINING = "draining"
    STOPPED = "stopped"


@dataclass(frozen=True)
class CoreConfig:
    limits: BatchLimits
    max_queue_pairs: int
    max_request_pairs: int
    warmup_runs: int = 0
    max_inflight_bytes: int = default_inflight_bytes(64 * 1024 * 1024)
    batch_policy: BatchPolicy = "caps"  # "measured" without warm-up runs: analytic
    ensemble_aggregate: AggregateName = "mean"
    ensemble_uncertainty_penalty: float = 1.0
    engine_workers: int = 1  # batches the engine runs at once (rmserve.engine_threads)

    @classmethod
    def from_settings(
        cls,
        settings: ServerSettings,
        max_inflight_bytes: int | None = None,
        engine_workers: int = 1,
    ) -> CoreConfig:
        """``max_inflight_bytes``: the resolved budget (None: the setting, else its default);
        ``engine_workers``: resolved for the engine's provider (``rmserve.engine_threads``)."""
        limits = BatchLimits(
            max_batch_size=settings.max_batch_size,
            max_batch_tokens=settings.max_batch_tokens,
            max_padding_ratio=settings.max_padding_ratio,
            max_queue_delay_s=settings.max_queue_delay_ms / 1000.0,
            window=max(256, 8 * settings.max_batch_size),
        )
        if max_inflight_bytes is None:
            max_inflight_bytes = settings.max_inflight_bytes or default_inflight_bytes(
                settings.max_message_bytes
            )
        return cls(
            limits,
            settings.max_queue_pairs,
            settings.max_request_pairs,
            settings.warmup_runs,
            max_inflight_bytes,
            settings.batch_policy,
            settings.ensemble_aggregate,
            settings.ensemble_uncertainty_penalty,
            engine_workers,
        )
