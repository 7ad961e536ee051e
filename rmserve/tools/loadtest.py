"""Load generator for capacity planning: ``rmserve loadtest`` and ``rmserve.tools.loadtest.run``.

Closed loop by default (``concurrency`` callers, each sending its next request when the last
one returns); open loop with ``rate`` (requests start on a fixed schedule whatever the server
does, and latency counts from the scheduled start, so queueing is not hidden). Always bounded:
it stops after ``duration_s`` or ``requests``, whichever comes first.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from rmserve.client import AsyncRewardClient, RewardClientError
from rmserve.client.settings import ClientSettings
from rmserve.tools.loadtest_progress import Progress
from rmserve.v1 import reward_pb2

log = logging.getLogger(__name__)

Mode = Literal["score", "score-batch", "prefer", "group"]
MAX_OUTSTANDING_OPEN_LOOP = 10_000


@dataclass(frozen=True)
class LoadPair:
    prompt: str
    response: str
    response_b: str = ""


@dataclass
class LoadtestResult:
    mode: str
    requests: int
    pairs: int
    tokens: int
    duration_s: float
    requests_per_s: float
    pairs_per_s: float
    tokens_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    codes: dict[str, int]
    client_cpu_s: float
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("latencies_ms")
        return out


@dataclass
class _Tally:
    latencies_ms: list[float] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    ok_pairs: int = 0
    ok_tokens: int = 0


class _Sender:
    """Turns data into requests of one mode and counts what comes back."""

    def __init__(
        self,
        client: AsyncRewardClient,
        data: Sequence[LoadPair],
        mode: Mode,
        batch_size: int,
        deadline_s: float,
        group_size: int = 8,
    ) -> None:
        if not data:
            raise ValueError("loadtest needs at least one pair of data")
        self.client = client
        self.mode = mode
        self.batch_size = batch_size
        self.group_size = group_size
        self.deadline_s = deadline_s
        self._next: Iterator[LoadPair] = itertools.cycle(data)
        self.tally = _Tally()

    def _take(self, n: int) -> list[LoadPair]:
        return [next(self._next) for _ in range(n)]

    async def send(self, started: float) -> None:
        code = "OK"
        pairs = tokens = 0
        try:
            pairs, tokens = await self._call()
        except RewardClientError as e:
            code = getattr(e.code, "name", str(e.code))
        self.tally.latencies_ms.append((time.perf_counter() - started) * 1000.0)
        self.tally.codes[code] += 1
        self.tally.ok_pairs += pairs
        self.tally.ok_tokens += tokens

    async def _call(self) -> tuple[int, int]:
        if self.mode == "score":
            (item,) = self._take(1)
            request = reward_pb2.ScoreRequest(prompt=item.prompt, response=item.response)
            reply = await self.client.call("Score", request, self.deadline_s)
            return 1, int(reply.num_tokens)
        if self.mode == "score-batch":
            items = self._take(self.batch_size)
            batch_request = reward_pb2.ScoreBatchRequest(
                pairs=[reward_pb2.Pair(prompt=i.prompt, response=i.response) for i in items]
            )
            batch = await self.client.call("ScoreBatch", batch_request, self.deadline_s)
            return len(batch.results), sum(int(r.num_tokens) for r in batch.results)
        if self.mode == "group":  # a GRPO group: one prompt, the next items' responses
            items = self._take(self.group_size)
            group_request = reward_pb2.ScoreGroupRequest(
                prompt=items[0].prompt, responses=[i.response for i in items]
            )
            group = await self.client.call("ScoreGroup", group_request, self.deadline_s)
            return len(group.results), sum(int(r.num_tokens) for r in group.results)
        (item,) = self._take(1)
        prefer_request = reward_pb2.PreferRequest(
            prompt=item.prompt, response_a=item.response, response_b=item.response_b
        )
        await self.client.call("Prefer", prefer_request, self.deadline_s)
        return 2, 0


async def _closed_loop(
    sender: _Sender, concurrency: int, end: float, budget: Iterator[int]
) -> None:
    async def caller() -> None:
        while time.perf_counter() < end and next(budget, None) is not None:
            await sender.send(time.perf_counter())

    await asyncio.gather(*(caller() for _ in range(concurrency)))


async def _open_loop(sender: _Sender, rate: float, end: float, budget: Iterator[int]) -> None:
    start = time.perf_counter()
    tasks: set[asyncio.Task[None]] = set()
    for i in itertools.count():
        scheduled = start + i / rate
        if scheduled >= end or next(budget, None) is None:
            break
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        if len(tasks) >= MAX_OUTSTANDING_OPEN_LOOP:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(sender.send(scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)


def _show(
    progress: Progress, sender: _Sender, start: float, duration_s: float, requests: int | None
) -> None:
    elapsed = time.perf_counter() - start
    t = sender.tally
    done = len(t.latencies_ms)
    fraction = max(elapsed / duration_s, done / requests if requests else 0.0)
    progress.update(fraction, elapsed, done, t.ok_pairs, t.codes)


async def _report(
    progress: Progress, sender: _Sender, start: float, duration_s: float, requests: int | None
) -> None:
    while True:
        await asyncio.sleep(progress.interval_s)
        _show(progress, sender, start, duration_s, requests)


async def run_async(
    target: str,
    data: Sequence[LoadPair],
    *,
    mode: Mode = "score",
    concurrency: int = 16,
    duration_s: float = 10.0,
    requests: int | None = None,
    batch_size: int = 64,
    group_size: int = 8,
    rate: float | None = None,
    deadline_s: float = 30.0,
    progress: Progress | None = None,
    client: ClientSettings | None = None,
) -> LoadtestResult:
    """Send load to ``target`` (any client target: ``host:port``, a comma list, ``dns:///``)
    until ``duration_s`` passes or ``requests`` were sent, through an ``AsyncRewardClient``
    whose TLS, bearer token and channel limits come from ``client`` (default: the
    ``RMSERVE_CLIENT_*`` environment). It first asks ``GetModelInfo``: a server it cannot
    reach (wrong token, TLS or address) raises ``RewardClientError`` once, before any load.
    Failed requests are counted by status code, never retried: retries would hide overload."""
    if min(concurrency, batch_size, group_size) < 1 or duration_s <= 0 or (rate or 1) <= 0:
        raise ValueError(
            "concurrency, duration_s, batch_size, group_size and rate must be positive"
        )
    if requests is not None and requests < 1:
        raise ValueError("requests must be positive")
    async with AsyncRewardClient(
        target,
        settings=client,
        max_attempts=1,
        timeout=deadline_s,
        max_inflight_requests=MAX_OUTSTANDING_OPEN_LOOP,
    ) as reward_client:
        sender = _Sender(reward_client, data, mode, batch_size, deadline_s, group_size)
        info = await reward_client.model_info()
        log.info(
            "loadtest: %s requests to %s (model %s %s) for up to %.0f s%s",
            mode, target, info.name, info.version, duration_s,
            f" or {requests} requests" if requests is not None else "",
        )  # fmt: skip
        budget: Iterator[int] = iter(range(requests)) if requests is not None else itertools.count()
        cpu0, start = time.process_time(), time.perf_counter()
        end = start + duration_s
        reporter = (
            asyncio.create_task(_report(progress, sender, start, duration_s, requests))
            if progress is not None
            else None
        )
        try:
            if rate is None:
                await _closed_loop(sender, concurrency, end, budget)
            else:
                await _open_loop(sender, rate, end, budget)
        finally:
            if reporter is not None and progress is not None:
                reporter.cancel()
                await asyncio.gather(reporter, return_exceptions=True)
                _show(progress, sender, start, duration_s, requests)
                progress.close()
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu0
    return _result(mode, sender.tally, elapsed, cpu)


def _result(mode: str, tally: _Tally, elapsed: float, cpu: float) -> LoadtestResult:
    lat = np.asarray(tally.latencies_ms or [0.0], dtype=np.float64)
    p50, p90, p99 = (float(np.percentile(lat, q)) for q in (50, 90, 99))
    n = len(tally.latencies_ms)
    return LoadtestResult(
        mode=mode,
        requests=n,
        pairs=tally.ok_pairs,
        tokens=tally.ok_tokens,
        duration_s=elapsed,
        requests_per_s=n / elapsed,
        pairs_per_s=tally.ok_pairs / elapsed,
        tokens_per_s=tally.ok_tokens / elapsed,
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        max_ms=float(lat.max()),
        codes=dict(tally.codes),
        client_cpu_s=cpu,
        latencies_ms=list(tally.latencies_ms),
    )


def run(target: str, data: Sequence[LoadPair], **kwargs: Any) -> LoadtestResult:
    """Blocking form of :func:`run_async` (for scripts and benchmarks)."""
    return asyncio.run(run_async(target, data, **kwargs))
