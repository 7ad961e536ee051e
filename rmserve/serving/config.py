"""What a serving core is configured with and the states it moves through. The server builds
the config from its settings (``rmserve.server.model_build.core_config``); the core never sees
them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

from rmserve.batching.collect import BatchLimits
from rmserve.rewards.ensemble import AggregateName
from rmserve.serving.memory_budget import default_inflight_bytes

Truncation = Literal["cut", "refuse"]


class CoreState(Enum):
    NEW = "new"
    WARMING = "warming up"
    SERVING = "serving"
    DRAINING = "draining"
    STOPPED = "stopped"
    DRIFTED = "out of service (its golden pairs drifted)"  # for good: rmserve.serving.golden


@dataclass(frozen=True)
class CoreConfig:
    limits: BatchLimits
    max_queue_pairs: int
    max_request_pairs: int
    warmup_runs: int = 0
    max_inflight_bytes: int = default_inflight_bytes(64 * 1024 * 1024)
    ensemble_aggregate: AggregateName = "mean"
    ensemble_uncertainty_penalty: float = 1.0
    engine_workers: int = 1  # batches the engine runs at once (rmserve.engine.threads)
    long_batch_workers: int = 0  # of those, long ones at most (0: rmserve.batching.batcher's)
    # A pair over max_length: 'cut' (truncate it, reported per reply and counted) or 'refuse'
    # (InvalidRequest naming it, before anything of its request is queued).
    truncation: Truncation = "cut"
    warmup_budget_s: float = 60.0  # warm-up stops before the shape that would pass it
