"""Give memory that big requests freed back to the operating system.

glibc's malloc keeps freed memory in its arenas (one per thread that allocated: the event loop,
tokenizer threads) instead of returning it, so a server that once parsed a few big requests
stays at its peak RSS although nothing holds that memory. ``malloc_trim(0)`` returns the free
pages. It runs on a worker thread once requests totalling ``TRIM_AFTER_BYTES`` have finished
since the last trim, or ``IDLE_TRIM_BYTES`` when nothing else is in flight, and, every
``WATCH_INTERVAL_S``, when ``IDLE_TRIM_BYTES`` of requests finished since the last trim or the
RSS grew by ``TRIM_AFTER_BYTES`` (memory freed where no request is counted: gRPC refusing an
oversized message). A steady stream of small requests is not worth a trim every interval: its
full garbage collection cost the event loop ~5% of its CPU. Elsewhere than glibc it does
nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)

TRIM_AFTER_BYTES = 16 * 1024 * 1024
IDLE_TRIM_BYTES = 1024 * 1024
WATCH_INTERVAL_S = 5.0


def own_rss_bytes() -> int:
    """This process's resident memory (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _glibc_malloc_trim() -> Callable[[], None] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        malloc_trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim.restype = ctypes.c_int
    return lambda: malloc_trim(0)


MALLOC_TRIM = _glibc_malloc_trim()
M_MMAP_THRESHOLD = -3  # mallopt parameter number, from glibc's malloc.h
MMAP_THRESHOLD_BYTES = 32 * 1024


def map_big_allocations() -> bool:
    """glibc: serve allocations of ``MMAP_THRESHOLD_BYTES`` or more (request bytes, texts, batch
    arrays) from their own pages, unmapped when freed, instead of arena memory that freed small
    objects fragment. Measured (docs/guides/operations.md#memory): the burst's peak
    331 -> 242 MiB and RSS back at idle after it; throughput unchanged within noise. False where
    there is no glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


class FreedMemoryTrimmer:
    """Counts request bytes that finished and trims once enough have."""

    def __init__(
        self,
        trim: Callable[[], None] | None = MALLOC_TRIM,
        after_bytes: int = TRIM_AFTER_BYTES,
        rss: Callable[[], int] = own_rss_bytes,
    ) -> None:
        self._rss = rss
        self._trim = trim
        self._after_bytes = after_bytes
        self._freed = 0
        self._idle = False
        self._running: asyncio.Task[None] | None = None
        self._rss_after_trim = rss()
        self.trims = 0

    def freed(self, nbytes: int, idle: bool) -> None:
        """Note ``nbytes`` of finished requests (call on the event loop); ``idle``: nothing else
        is in flight, so a smaller amount is worth returning now."""
        if self._trim is None:
            return
        self._freed += nbytes
        self._idle = idle
        if self._running is None and self._due():
            self._running = asyncio.get_running_loop().create_task(self._run())

    def _due(self) -> bool:
        return self._freed >= self._after_bytes or (self._idle and self._freed >= IDLE_TRIM_BYTES)

    async def _run(self) -> None:
        assert self._trim is not None
        try:
            while self._due():  # requests that finished during a trim get the next one
                self._freed = 0
                gc.collect()  # request objects caught in reference cycles go first
                await asyncio.to_thread(self._trim)
                self.trims += 1
                self._rss_after_trim = self._rss()
        except Exception:
            log.exception("returning freed memory to the OS failed")
        finally:
            self._running = None

    async def watch(self, interval_s: float = WATCH_INTERVAL_S) -> None:
        """Run until cancelled: trim when ``IDLE_TRIM_BYTES`` of requests finished since the
        last trim, or the RSS grew by ``TRIM_AFTER_BYTES`` since then."""
        while self._trim is not None:
            await asyncio.sleep(interval_s)
            grown = self._rss() > self._rss_after_trim + self._after_bytes
            if (grown or self._freed >= IDLE_TRIM_BYTES) and self._running is None:
                self._freed = self._after_bytes  # due now
                self._running = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        if self._running is not None:
            await self._running
