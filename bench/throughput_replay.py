"""Bare onnxruntime fed by the server's own batch policy over the server's in-flight window.

The bare baseline of ``bench/throughput.py`` sorts *all* pairs and runs them at its best batch
size; the server only ever sees what its callers have in flight (64 single pairs, or two
requests of 256). This replays that closed loop without a server: ``collect_batch`` (the
batcher's pure cut, with the same limits) picks each batch from the queued
items, the engine scores it on this thread, and the callers whose requests completed send
their next ones, which join the queue one batch later (as in the server, where the next batch
is cut the moment the engine finishes, before the answered callers' next requests arrive).

So ``replay / raw`` is what the batch policy and the window cost, and ``server / replay`` what
the server itself (gRPC, Python, tokenising, threads) costs, on the same pairs.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rmserve.batching.collect import BatchLimits, QueuedItem, collect_batch
from rmserve.engine.session import OrtEngine
from rmserve.text.preprocess import PreparedPair


@dataclass(eq=False)
class _Request:
    left: int
    finished: bool = False


def replay(
    engine: OrtEngine,
    prepared: Sequence[PreparedPair],
    request_pairs: int,
    in_flight: int,
    limits: BatchLimits,
    policy: str = "caps",
) -> dict[str, Any]:
    """Score every pair of ``prepared`` (in send order) through a closed loop of ``in_flight``
    callers, each sending ``request_pairs`` pairs per request."""
    stream = iter(prepared)
    queue: deque[QueuedItem[_Request]] = deque()
    arrivals = 0

    def send() -> None:
        nonlocal arrivals
        pairs = [p for p, _ in zip(stream, range(request_pairs), strict=False)]
        if not pairs:
            return
        owner = _Request(len(pairs))
        for i, pair in enumerate(pairs):
            queue.append(QueuedItem(owner, i, (pair,), float(arrivals), None))
            arrivals += 1

    for _ in range(in_flight):
        send()
    engine.score([queue[0].pairs[0]])
    batches = rows = padded = real = 0
    next_callers = 0
    start = time.perf_counter()
    while queue:
        window = list(queue)[: limits.window]
        batch = collect_batch(window, float(arrivals), limits).batch
        taken = {id(item) for item in batch}
        kept = [item for item in queue if id(item) not in taken]
        queue.clear()
        queue.extend(kept)
        for _ in range(next_callers):  # the previous batch's callers' next requests
            send()
        engine.score([item.pairs[0] for item in batch])
        next_callers = 0
        for item in batch:
            item.owner.left -= 1
            if item.owner.left == 0:
                next_callers += 1
        batches += 1
        rows += len(batch)
        longest = max(item.longest for item in batch)
        padded += longest * len(batch)
        real += sum(item.real_tokens for item in batch)
        if not queue:
            for _ in range(next_callers):
                send()
            next_callers = 0
    seconds = time.perf_counter() - start
    return {
        "name": f"raw, {policy} cut of {in_flight} x {request_pairs} in flight",
        "pairs_per_s": rows / seconds,
        "tokens_per_s": real / seconds,
        "batches": batches,
        "mean_batch_size": rows / batches,
        "mean_padding_ratio": padded / real,
    }
