"""A hand-driven rig for the Batcher: an event loop whose clock moves only when the test says
so, an executor that runs an engine job only when the test says so, and an engine that records
what it computed and when. Nothing here reads the wall clock or starts a thread."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from rmserve.batching.batcher import Batcher
from rmserve.batching.collect import BatchLimits, QueuedItem
from rmserve.batching.pending import PendingRequest
from rmserve.engine.session import EngineError
from rmserve.observability.metrics import Metrics
from rmserve.text.preprocess import PreparedPair

T = TypeVar("T")
SETTLE_TURNS = 20  # loop iterations that let every ready callback and due timer run


class ManualClockLoop(asyncio.SelectorEventLoop):
    """``time()`` is ``now``, which only the test moves. The test only ever runs the loop for
    a few turns with ready callbacks, so the selector never waits for a timer in real time."""

    def __init__(self) -> None:
        self.now = 1000.0
        super().__init__()

    def time(self) -> float:
        return self.now


@dataclass
class Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: Future[Any]


class ManualExecutor(Executor):
    """Queues submitted engine jobs; ``run_next`` runs one (the oldest unless told) in the
    caller's thread."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        self.jobs.append(Job(fn, args, future))
        return future

    def run_next(self, index: int = 0) -> None:
        job = self.jobs.pop(index)
        job.future.set_result(job.fn(*job.args))

    def batch_tags(self) -> list[list[int]]:
        """The tags of each submitted job's pairs, oldest job first."""
        return [
            [int(p.input_ids[0]) for item in job.args[0] for p in item.pairs] for job in self.jobs
        ]


def reward_of(tag: int) -> float:
    return tag / 8.0


@dataclass
class RecordingEngine:
    """Reward of a pair = reward_of(its tag, ``input_ids[0]``); records (tag, time) of every
    pair it computes. ``fail_next`` makes the next call raise (``failures`` counts those)."""

    clock: Callable[[], float]
    computed: list[tuple[int, float]] = field(default_factory=list)
    fail_next: bool = False
    failures: int = 0
    provider: str = "RecordingExecutionProvider"

    def score(self, pairs: Sequence[PreparedPair]) -> np.ndarray:
        if self.fail_next:
            self.fail_next = False
            self.failures += 1
            raise EngineError("scripted engine failure")
        now = self.clock()
        self.computed += [(p.input_ids[0], now) for p in pairs]
        return np.array([reward_of(p.input_ids[0]) for p in pairs], dtype=np.float32)


@dataclass(frozen=True)
class Spec:
    tokens: tuple[int, ...]
    rows_per_item: int = 1  # 2: a Prefer item, both pairs in one batch
    timeout: float | None = None


class Rig:
    def __init__(
        self,
        limits: BatchLimits,
        max_queue_pairs: int = 1 << 20,
        workers: int = 1,
        long_batches: int = 0,
    ) -> None:
        self.loop = ManualClockLoop()
        self.executor = ManualExecutor()
        self.engine = RecordingEngine(self.loop.time)
        self.metrics = Metrics()
        self._next_tag = 1

        async def make() -> Batcher:
            return Batcher(
                self.engine,
                self.executor,
                limits,
                max_queue_pairs,
                self.metrics,
                workers,
                long_batches,
            )

        self.batcher = self.run(make())
        self.task = self.loop.create_task(self.batcher.run())
        self.settle()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def settle(self) -> None:
        async def turns() -> None:
            for _ in range(SETTLE_TURNS):
                await asyncio.sleep(0)

        self.run(turns())

    def advance(self, seconds: float) -> None:
        self.loop.now += seconds
        self.settle()

    def submit(self, *specs: Spec, then_advance: float = 0.0) -> list[PendingRequest]:
        """Reserve and enqueue requests (and move the clock) in one loop turn; the batcher
        wakes only afterwards. ``Overloaded`` from ``reserve`` propagates."""

        async def enqueue_all() -> list[PendingRequest]:
            requests = [self.enqueue(spec) for spec in specs]
            self.loop.now += then_advance
            return requests

        return self.run(enqueue_all())

    def enqueue(self, spec: Spec) -> PendingRequest:
        """What the core does for one request; call it inside the loop."""
        now = self.loop.now
        deadline = None if spec.timeout is None else now + spec.timeout
        self.batcher.reserve(len(spec.tokens))
        request = PendingRequest(self.pairs(spec.tokens), deadline)
        step = spec.rows_per_item
        items = [
            QueuedItem(request, i, tuple(request.pairs[i : i + step]), now, deadline)
            for i in range(0, len(request.pairs), step)
        ]
        self.batcher.enqueue(request, items)
        return request

    def cancel(self, request: PendingRequest) -> None:
        """What the core does when a caller's task is cancelled."""
        request.future.cancel()
        self.batcher.withdraw(request)

    def pairs(self, tokens: Sequence[int]) -> list[PreparedPair]:
        out = []
        for n in tokens:
            out.append(PreparedPair([self._next_tag] * n, [0] * n, False, False))
            self._next_tag += 1
        return out

    def metric(self, name: str) -> float:
        value = self.metrics.registry.get_sample_value(name)
        return 0.0 if value is None else value

    def close(self) -> None:
        self.task.cancel()
        self.loop.run_until_complete(asyncio.gather(self.task, return_exceptions=True))
        self.loop.close()
