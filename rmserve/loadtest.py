"""Load generator for capacity planning: ``rmserve loadtest`` and ``rmserve.loadtest.run``.

Closed loop by default (``concurrency`` callers, each sending its next request when the last
one returns); open loop with ``rate`` (requests start on a fixed schedule whatever the server
does, and latency counts from the scheduled start, so queueing is not hidden). Always bounded:
it stops after ``duration_s`` or ``requests``, whichever comes first.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import grpc
import numpy as np

from rmserve.client.channel import call_metadata, channel_options, resolve_target, tls_credentials
from rmserve.client.settings import ClientSettings
from rmserve.v1 import reward_pb2, reward_pb2_grpc

Mode = Literal["score", "score-batch", "prefer"]
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
        stub: Any,
        data: Sequence[LoadPair],
        mode: Mode,
        batch_size: int,
        deadline_s: float,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        if not data:
            raise ValueError("loadtest needs at least one pair of data")
        self.stub = stub
        self.mode = mode
        self.batch_size = batch_size
        self.deadline_s = deadline_s
        self.metadata = metadata
        self._next: Iterator[LoadPair] = itertools.cycle(data)
        self.tally = _Tally()

    def _take(self, n: int) -> list[LoadPair]:
        return [next(self._next) for _ in range(n)]

    async def send(self, started: float) -> None:
        code = grpc.StatusCode.OK
        pairs = tokens = 0
        try:
            pairs, tokens = await self._call()
        except grpc.aio.AioRpcError as e:
            code = e.code()
        self.tally.latencies_ms.append((time.perf_counter() - started) * 1000.0)
        self.tally.codes[code.name] += 1
        self.tally.ok_pairs += pairs
        self.tally.ok_tokens += tokens

    async def _call(self) -> tuple[int, int]:
        if self.mode == "score":
            (item,) = self._take(1)
            reply = await self.stub.Score(
                reward_pb2.ScoreRequest(prompt=item.prompt, response=item.response),
                timeout=self.deadline_s,
                metadata=self.metadata,
            )
            return 1, int(reply.num_tokens)
        if self.mode == "score-batch":
            items = self._take(self.batch_size)
            request = reward_pb2.ScoreBatchRequest(
                pairs=[reward_pb2.Pair(prompt=i.prompt, response=i.response) for i in items]
            )
            batch = await self.stub.ScoreBatch(
                request, timeout=self.deadline_s, metadata=self.metadata
            )
            return len(batch.results), sum(int(r.num_tokens) for r in batch.results)
        (item,) = self._take(1)
        await self.stub.Prefer(
            reward_pb2.PreferRequest(
                prompt=item.prompt, response_a=item.response, response_b=item.response_b
            ),
            timeout=self.deadline_s,
            metadata=self.metadata,
        )
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


async def _progress(sender: _Sender, start: float) -> None:
    while True:
        await asyncio.sleep(1.0)
        elapsed = time.perf_counter() - start
        t = sender.tally
        sys.stderr.write(
            f"\r{elapsed:6.1f}s  {len(t.latencies_ms)} requests  "
            f"{t.ok_pairs / elapsed:8.1f} pairs/s  codes {dict(t.codes)}   "
        )
        sys.stderr.flush()


async def run_async(
    target: str,
    data: Sequence[LoadPair],
    *,
    mode: Mode = "score",
    concurrency: int = 16,
    duration_s: float = 10.0,
    requests: int | None = None,
    batch_size: int = 64,
    rate: float | None = None,
    deadline_s: float = 30.0,
    progress: bool = False,
    client: ClientSettings | None = None,
) -> LoadtestResult:
    """Send load to ``target`` (any client target: ``host:port``, a comma list, ``dns:///``)
    until ``duration_s`` passes or ``requests`` were sent. ``client`` supplies TLS, the bearer
    token and channel limits (its own ``target`` is ignored). Failed requests are counted by
    status code, never retried: retries would hide overload."""
    if concurrency < 1 or duration_s <= 0 or batch_size < 1 or (rate is not None and rate <= 0):
        raise ValueError("concurrency, duration_s, batch_size and rate must be positive")
    if requests is not None and requests < 1:
        raise ValueError("requests must be positive")
    settings = client or ClientSettings(target=target)
    options = channel_options(settings)
    credentials = tls_credentials(settings)
    uri = resolve_target(target)
    async with (
        grpc.aio.insecure_channel(uri, options=options)
        if credentials is None
        else grpc.aio.secure_channel(uri, credentials, options=options)
    ) as channel:
        sender = _Sender(
            reward_pb2_grpc.RewardServiceStub(channel),
            data,
            mode,
            batch_size,
            deadline_s,
            call_metadata(settings),
        )
        budget: Iterator[int] = iter(range(requests)) if requests is not None else itertools.count()
        cpu0, start = time.process_time(), time.perf_counter()
        end = start + duration_s
        reporter = asyncio.create_task(_progress(sender, start)) if progress else None
        try:
            if rate is None:
                await _closed_loop(sender, concurrency, end, budget)
            else:
                await _open_loop(sender, rate, end, budget)
        finally:
            if reporter is not None:
                reporter.cancel()
                sys.stderr.write("\n")
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
