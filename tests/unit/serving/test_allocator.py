"""Freed request memory is handed back once enough has finished (trim injected)."""

from __future__ import annotations

import asyncio

from rmserve.serving.allocator import IDLE_TRIM_BYTES, FreedMemoryTrimmer


async def test_trims_after_enough_bytes_finished_or_when_idle() -> None:
    calls: list[int] = []
    trimmer = FreedMemoryTrimmer(lambda: calls.append(1), after_bytes=100 * IDLE_TRIM_BYTES)
    trimmer.freed(IDLE_TRIM_BYTES, idle=False)  # small and busy: not yet
    await trimmer.aclose()
    assert calls == []
    trimmer.freed(99 * IDLE_TRIM_BYTES, idle=False)  # the threshold
    await trimmer.aclose()
    assert trimmer.trims == 1
    trimmer.freed(IDLE_TRIM_BYTES, idle=True)  # idle after a megabyte
    await trimmer.aclose()
    assert trimmer.trims == 2
    trimmer.freed(IDLE_TRIM_BYTES - 1, idle=True)  # idle but too little to bother
    await trimmer.aclose()
    assert trimmer.trims == 2 and len(calls) == 2


async def test_requests_finishing_during_a_trim_get_another() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def trim() -> None:
        loop.call_soon_threadsafe(started.set)
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result()

    trimmer = FreedMemoryTrimmer(trim, after_bytes=10)
    trimmer.freed(10, idle=False)
    await started.wait()
    trimmer.freed(10, idle=False)  # a trim is running: this one waits for the next
    release.set()
    await trimmer.aclose()
    assert trimmer.trims == 2


async def test_without_glibc_nothing_happens() -> None:
    trimmer = FreedMemoryTrimmer(None, after_bytes=1)
    trimmer.freed(1 << 30, idle=True)
    await trimmer.aclose()
    assert trimmer.trims == 0


async def test_the_watch_trims_when_the_rss_grew_with_no_request_counted() -> None:
    rss = [100]
    trimmer = FreedMemoryTrimmer(
        lambda: rss.__setitem__(0, 100), after_bytes=10, rss=lambda: rss[0]
    )
    watch = asyncio.ensure_future(trimmer.watch(interval_s=0.0))
    try:
        for _ in range(50):  # the watch looks at every turn of the loop
            await asyncio.sleep(0)
        assert trimmer.trims == 0  # no growth: nothing to do
        rss[0] = 111  # e.g. gRPC freed an oversized message
        end = asyncio.get_running_loop().time() + 60.0  # "must not hang" bound
        while not trimmer.trims and asyncio.get_running_loop().time() < end:
            await asyncio.sleep(0.01)
        assert trimmer.trims == 1 and rss[0] == 100
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)


async def test_the_watch_trims_after_a_megabyte_of_requests_not_after_every_small_one() -> None:
    loop = asyncio.get_running_loop()
    trimmed = asyncio.Event()
    trimmer = FreedMemoryTrimmer(
        lambda: loop.call_soon_threadsafe(trimmed.set),
        after_bytes=100 * IDLE_TRIM_BYTES,
        rss=lambda: 0,
    )
    watch = asyncio.ensure_future(trimmer.watch(interval_s=0.0))
    try:
        for _ in range(IDLE_TRIM_BYTES // 4096 - 1):  # a stream of small requests, busy
            trimmer.freed(4096, idle=False)
            await asyncio.sleep(0)  # the watch looks at every turn of the loop
        assert not trimmed.is_set()
        trimmer.freed(4096, idle=False)  # a megabyte in all
        await asyncio.wait_for(trimmed.wait(), timeout=60.0)  # "must not hang" bound
        await trimmer.aclose()
        assert trimmer.trims == 1
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
