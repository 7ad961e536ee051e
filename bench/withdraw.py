"""Cost of withdrawing one request and of taking one batch, by queue length, against the
previous batcher's queue (rebuilt on every withdrawal and every batch) in the same run.

The batcher is driven on a real event loop with an engine that never runs (its executor only
holds jobs), so the queue stays as long as we make it; only queue bookkeeping is timed.

    .venv/bin/python bench/withdraw.py --out bench/results/withdraw.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from rmserve.batching.batcher import Batcher
from rmserve.batching.collect import BatchLimits, QueuedItem, collect_batch
from rmserve.batching.pending import PendingRequest
from rmserve.observability.metrics import Metrics
from rmserve.text.preprocess import PreparedPair

QUEUE_PAIRS = (1024, 2048, 4096, 8192, 16384)
WITHDRAWALS = 200
LIMITS = BatchLimits(max_batch_size=32, max_batch_tokens=1 << 20, window=256)


class HeldExecutor(Executor):
    """Accepts engine jobs and never runs them: the engine looks busy for ever."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return Future()


class IdleEngine:
    provider = "none"

    def score(self, pairs: Any) -> np.ndarray:
        raise AssertionError("never called")


def fill(batcher: Batcher, pairs: int) -> list[QueuedItem[PendingRequest]]:
    """Queue ``pairs`` one-pair requests of mixed lengths; returns their items in order."""
    now = batcher.clock()
    items = []
    for i in range(pairs):
        pair = PreparedPair([1] * (8 + i % 64), [0] * (8 + i % 64), False, False)
        request = PendingRequest([pair], None)
        item = QueuedItem(request, 0, (pair,), now, None)
        batcher.reserve(1)
        batcher.enqueue(request, [item])
        items.append(item)
    return items


def rebuild_withdraw(queue: deque[QueuedItem[PendingRequest]], request: PendingRequest) -> Any:
    """The previous batcher's withdrawal: rebuild the deque without the request's items."""
    return deque(item for item in queue if item.owner is not request)


def rebuild_take(queue: deque[QueuedItem[PendingRequest]], now: float) -> Any:
    """The previous batcher's batch taking: rebuild the deque without the batch's items."""
    window = list(islice(queue, LIMITS.window))
    got = collect_batch(window, now, LIMITS)
    taken = {id(item) for item in got.batch}
    return deque(item for item in queue if id(item) not in taken)


async def measure(pairs: int) -> dict[str, float]:
    batcher = Batcher(IdleEngine(), HeldExecutor(), LIMITS, 1 << 30, Metrics())
    items = fill(batcher, pairs)
    victims = [item.owner for item in items[1 :: max(1, pairs // WITHDRAWALS)][:WITHDRAWALS]]
    queue = deque(items)  # the same items, for the baseline

    start = time.perf_counter()
    for request in victims:
        rebuild_withdraw(queue, request)
    baseline_withdraw = (time.perf_counter() - start) / len(victims)

    start = time.perf_counter()
    for request in victims:
        batcher.withdraw(request)
    withdraw = (time.perf_counter() - start) / len(victims)

    now = batcher.clock()
    start = time.perf_counter()
    for _ in range(20):
        rebuild_take(queue, now)
    baseline_take = (time.perf_counter() - start) / 20

    start = time.perf_counter()
    rounds = 0
    while rounds < 20:
        # The held engine never finishes: mark it idle by hand so each call forms and submits
        # pipeline_depth (2) more batches from the queue's head (private, for this measurement).
        batcher._running = 0
        batcher._fill_pipeline()
        rounds += batcher.pipeline_depth  # batches per call
    take = (time.perf_counter() - start) / rounds
    return {
        "queue_pairs": pairs,
        "withdraw_us": withdraw * 1e6,
        "baseline_withdraw_us": baseline_withdraw * 1e6,
        "take_batch_us": take * 1e6,
        "baseline_take_batch_us": baseline_take * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/withdraw.json"))
    args = parser.parse_args()
    gc.disable()  # as timeit does: a collection of the 16k queued requests is not queue work
    rows = [asyncio.run(measure(n)) for n in QUEUE_PAIRS]
    gc.enable()
    first, last = rows[0], rows[-1]
    summary = {
        "withdraw_16k_over_1k": last["withdraw_us"] / first["withdraw_us"],
        "baseline_withdraw_16k_over_1k": last["baseline_withdraw_us"]
        / first["baseline_withdraw_us"],
        "take_16k_over_1k": last["take_batch_us"] / first["take_batch_us"],
        "baseline_take_16k_over_1k": last["baseline_take_batch_us"]
        / first["baseline_take_batch_us"],
        "withdraw_speedup_at_16k": last["baseline_withdraw_us"] / last["withdraw_us"],
    }
    for row in rows:
        print(
            f"{row['queue_pairs']:>6} pairs  withdraw {row['withdraw_us']:8.2f} us "
            f"(rebuild {row['baseline_withdraw_us']:9.1f} us)  take batch "
            f"{row['take_batch_us']:8.1f} us (rebuild {row['baseline_take_batch_us']:9.1f} us)"
        )
    for key, value in summary.items():
        print(f"{key}: {value:.2f}")
    result = {
        "machine": {"python": platform.python_version(), "cpu": platform.processor()},
        "rows": rows,
        "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
