"""What every model of one server shares: the request-bytes budget (admission by memory), the
threads that tokenise big requests, and returning freed memory to the OS.

A server of several models admits a request by its bytes before it knows which model it names,
so the budget cannot belong to one model; one pool of tokenizer threads keeps the tokenizer
workspace of the memory formula the same however many models are served
(docs/guides/operations.md#the-memory-formula).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from rmserve.observability.metrics import Metrics
from rmserve.serving.allocator import TRIM_AFTER_BYTES, FreedMemoryTrimmer
from rmserve.serving.memory_budget import TOKENIZE_WORKERS, BytesReservation, RequestBytesBudget

RetryAfter = Callable[[], int]


class SharedAdmission:
    """Start it (``start``) on the event loop that serves; ``aclose`` once nothing uses it."""

    def __init__(self, max_inflight_bytes: int, metrics: Metrics) -> None:
        self.request_bytes = RequestBytesBudget(
            max_inflight_bytes, metrics.inflight_request_bytes.set
        )
        # Few, so the tokenizer's working memory stays bounded (docs/guides/operations.md#memory).
        self.tokenizers = ThreadPoolExecutor(
            max_workers=TOKENIZE_WORKERS, thread_name_prefix="rmserve-tokenize"
        )
        self.trimmer = FreedMemoryTrimmer()
        self._trim_watch: asyncio.Task[None] | None = None

    @property
    def max_inflight_bytes(self) -> int:
        return self.request_bytes.limit

    def start(self) -> None:
        if self._trim_watch is None:
            self._trim_watch = asyncio.create_task(self.trimmer.watch(), name="rmserve-trim")

    @contextlib.contextmanager
    def admit_bytes(self, size: int, retry_after: RetryAfter) -> Iterator[None]:
        """Hold ``size`` request bytes for a block, or raise ``Overloaded``."""
        try:
            with self.request_bytes.admit(size, retry_after):
                yield
        finally:
            self.trimmer.freed(size, idle=self.request_bytes.in_use == 0)

    @contextlib.contextmanager
    def reserve_bytes(self, retry_after: RetryAfter) -> Iterator[BytesReservation]:
        """``admit_bytes`` for bytes charged as they arrive (``grow``), released at the end."""
        reservation = self.request_bytes.reservation(retry_after)
        try:
            yield reservation
        finally:
            size = reservation.size
            reservation.release()
            self.trimmer.freed(size, idle=self.request_bytes.in_use == 0)

    def return_freed_memory(self) -> None:
        """Trim now: a model version was just freed (counted as a big request's worth)."""
        self.trimmer.freed(TRIM_AFTER_BYTES, idle=True)

    async def aclose(self) -> None:
        self.tokenizers.shutdown(wait=False, cancel_futures=True)
        if self._trim_watch is not None:
            self._trim_watch.cancel()
            await asyncio.gather(self._trim_watch, return_exceptions=True)
        await self.trimmer.aclose()
