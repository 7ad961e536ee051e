"""The batcher: one queue, one asyncio task, ``workers`` engine threads.

Batches are picked by ``collect_batch`` (pure) and run on ``workers`` engine threads so the
event loop keeps accepting and tokenising. Up to ``workers + 1`` batches are in flight: one
running on each engine thread and the next one prepared; a batch is only formed while every
engine thread is busy when it is already full, otherwise the batcher waits for a thread to
finish and takes everything that arrived meanwhile.

Long items wait in a lane of their own. An item over ``max_batch_tokens`` on its own (a long
pair, ``collect.runs_alone``) always runs alone, and at most ``long_batches`` such batches are
submitted at once (default: one less than the workers, at least one), so with two or more
workers a long pair occupies one worker while short pairs keep flowing on the others, and a
second long pair waits for a long slot instead of taking every worker. The oldest head of the
two lanes goes first when both may run, so neither lane starves the other; a window full of
waiting long pairs never hides the short ones queued behind them.

Each lane deletes lazily: a finished request's items stay in its deque and are skipped when
they reach the window, so withdrawing a request is O(1) and taking a batch costs O(window),
whatever the queue length. The dead rows are compacted away once they outnumber the live ones.

Time is the event loop's clock (``loop.time()``): deadlines, expiry timers and the queue delay
all read it, so a test can drive the batcher with a loop whose clock it moves by hand.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from itertools import islice

import numpy as np

from rmserve.batching.collect import (
    BatchLimits,
    Collected,
    QueuedItem,
    collect_batch,
    runs_alone,
)
from rmserve.batching.pending import PendingRequest
from rmserve.engine.session import Engine
from rmserve.errors import DeadlineExpired, EngineFailure, Overloaded, Unavailable
from rmserve.observability.metrics import Metrics

log = logging.getLogger(__name__)

Item = QueuedItem[PendingRequest]
PREPARED_BATCHES = 1  # batches submitted beyond one per engine thread, ready to run next
COMPACT_MIN_DEAD_ROWS = 4096  # below this, dead rows just wait to reach the window


@dataclass
class _Outcome:
    ran: list[Item]
    expired: list[Item]
    rewards: np.ndarray | None = None
    error: BaseException | None = None
    seconds: float = 0.0


def long_batch_slots(workers: int, long_batches: int = 0) -> int:
    """Long batches submitted at once at most: ``long_batches`` as set (at most ``workers``),
    else one less than the workers, at least one."""
    return min(long_batches, workers) if long_batches else max(1, workers - 1)


class Batcher:
    """Create inside the event loop that will run it (its clock is that loop's time)."""

    def __init__(
        self,
        engine: Engine,
        executor: Executor,
        limits: BatchLimits,
        max_queue_pairs: int,
        metrics: Metrics,
        workers: int = 1,
        long_batches: int = 0,
    ) -> None:
        """``workers``: batches the engine runs at once (``executor`` has that many threads);
        ``long_batches``: of those, how many may be long (0: ``long_batch_slots``' default)."""
        self._engine = engine
        self._executor = executor
        self._workers = workers
        self._long_slots = long_batch_slots(workers, long_batches)
        self._limits = limits
        # Nothing can join a long item's batch: waiting for a fuller one would only delay it.
        self._long_limits = dataclasses.replace(limits, max_queue_delay_s=0.0)
        self._max_queue_pairs = max_queue_pairs
        self._metrics = metrics
        self._loop = asyncio.get_running_loop()
        self._short: deque[Item] = deque()
        self._long: deque[Item] = deque()  # items that run alone (``collect.runs_alone``)
        self._queued_rows = 0  # rows of live requests in the queue
        self._dead_rows = 0  # rows of withdrawn requests still in the deques (skipped lazily)
        self._reserved_rows = 0  # admitted requests still tokenising
        self._running = 0
        self._running_long = 0  # long batches submitted and not finished
        self._changed = asyncio.Event()
        self._wake: asyncio.TimerHandle | None = None
        self._seconds_per_row = 1e-3  # moving estimate, for retry pushback

    def clock(self) -> float:
        return self._loop.time()

    @property
    def pipeline_depth(self) -> int:
        """Batches submitted to the engine at most: one per engine thread, and one prepared."""
        return self._workers + PREPARED_BATCHES

    @property
    def pending_rows(self) -> int:
        return self._queued_rows + self._reserved_rows

    @property
    def queue_length(self) -> int:
        """Items in the queue, dead ones included (for tests and benchmarks)."""
        return len(self._short) + len(self._long)

    @property
    def long_slots(self) -> int:
        """Long batches (items that run alone) submitted to the engine at once at most."""
        return self._long_slots

    @property
    def running_long(self) -> int:
        """Long batches submitted to the engine and not finished."""
        return self._running_long

    @property
    def busy(self) -> bool:
        return self._running > 0 or self.pending_rows > 0

    def reserve(self, rows: int) -> None:
        """Admit ``rows`` pairs or raise ``Overloaded``; nothing is queued on refusal."""
        pending = self.pending_rows
        if pending > 0 and pending + rows > self._max_queue_pairs:
            raise Overloaded(
                f"queue full: {pending} pairs waiting, {rows} more would exceed "
                f"max_queue_pairs={self._max_queue_pairs}; retry later",
                retry_after_ms=self.retry_after_ms(),
            )
        self._reserved_rows += rows
        self._update_gauge()

    def release(self, rows: int) -> None:
        self._reserved_rows -= rows
        self._update_gauge()

    def enqueue(self, request: PendingRequest, items: list[Item]) -> None:
        """Queue a reserved request's items (all its rows, reserved by ``reserve``). A request
        with a deadline is failed with ``DeadlineExpired`` when it passes, wherever it is."""
        rows = sum(item.rows for item in items)
        if rows != len(request.pairs):
            raise AssertionError(f"{rows} queued rows for a request of {len(request.pairs)} pairs")
        self._reserved_rows -= rows
        self._queued_rows += rows
        request.queued_rows = rows
        for item in items:
            (self._long if runs_alone(item, self._limits) else self._short).append(item)
        if request.deadline is not None:
            request.expiry = self._loop.call_at(request.deadline, self._expire, request)
        self._update_gauge()
        self._changed.set()

    def withdraw(self, request: PendingRequest) -> None:
        """Forget a finished request (answered elsewhere, cancelled, expired or failed): its
        queue slots are free at once, its items are skipped when they reach the window."""
        request.close()
        if request.queued_rows:
            self._queued_rows -= request.queued_rows
            self._dead_rows += request.queued_rows
            request.queued_rows = 0
            self._update_gauge()
            if self._dead_rows > max(COMPACT_MIN_DEAD_ROWS, self._queued_rows):
                self._short = deque(item for item in self._short if item.owner.queued_rows)
                self._long = deque(item for item in self._long if item.owner.queued_rows)
                self._dead_rows = 0

    def retry_after_ms(self) -> int:
        estimate = self.pending_rows * self._seconds_per_row * 1000.0 / self._workers
        return int(min(10_000.0, max(10.0, estimate)))

    def fail_all(self, reason: str) -> None:
        for lane in (self._short, self._long):
            for item in lane:
                item.owner.fail(Unavailable(reason))
                item.owner.queued_rows = 0
            lane.clear()
        self._queued_rows = self._dead_rows = 0
        self._update_gauge()

    async def run(self) -> None:
        """The batcher task: runs until cancelled. A bug in one step is logged and the loop
        goes on: a dead batcher would hang every caller."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                self._fill_pipeline()
            except Exception:
                log.exception("batcher step failed; continuing")
                self._changed.set()
                await asyncio.sleep(0.01)

    def _fill_pipeline(self) -> None:
        """Submit batches until the engine pipeline is full or nothing can run yet. Returns
        only when the queue is empty, the engine is busy (its finish wakes us) or a timer is
        set: clearing dead or expired items never ends a turn, so nothing live is stranded."""
        while self._running < self.pipeline_depth and (self._short or self._long):
            now = self.clock()
            wait_until: float | None = None
            for lane in self._lanes_in_turn():
                window = list(islice(lane, self._limits.window))
                limits = self._long_limits if lane is self._long else self._limits
                got = collect_batch(window, now, limits)
                batch = got.batch
                full = lane is self._long or self._is_full(got, window)  # long: nothing joins
                if batch and self._running >= self._workers and not full:
                    batch = []  # the engine is busy: wait for it and take what arrives meanwhile
                self._remove_from_window(lane, window, [*got.dropped, *got.expired, *batch])
                for item in got.expired:
                    self._expire(item.owner)
                if batch:
                    self._submit(batch, now, lane is self._long)
                if batch or got.expired or got.dropped:
                    break  # look again from the start: the queue changed
                if got.wait_until is not None:
                    wait_until = min(got.wait_until, wait_until or got.wait_until)
            else:
                if wait_until is not None:
                    self._wake_at(wait_until)
                return

    def _lanes_in_turn(self) -> list[deque[Item]]:
        """The lanes that may give a batch now, the one whose head waited longest first: the
        long lane only while a long slot is free."""
        lanes = [self._short] if self._short else []
        if self._long and self._running_long < self._long_slots:
            older = not self._short or self._long[0].enqueued_at < self._short[0].enqueued_at
            lanes.insert(0 if older else len(lanes), self._long)
        return lanes

    def _remove_from_window(
        self, lane: deque[Item], window: list[Item], leaving: Iterable[Item]
    ) -> None:
        """Take ``leaving`` out of ``lane``; they are all in ``window``, its head. O(window)."""
        gone = {id(item) for item in leaving}
        if not gone:
            return
        for _ in window:
            lane.popleft()
        lane.extendleft(reversed([item for item in window if id(item) not in gone]))
        for item in window:
            if id(item) in gone:
                if item.owner.queued_rows:
                    item.owner.queued_rows -= item.rows
                    self._queued_rows -= item.rows
                else:
                    self._dead_rows -= item.rows
        self._update_gauge()

    def _submit(self, batch: list[Item], now: float, long: bool) -> None:
        for item in batch:
            self._metrics.queue_duration.observe(now - item.enqueued_at)
        self._running += 1
        self._running_long += long
        future = self._loop.run_in_executor(self._executor, self._infer, batch)
        future.add_done_callback(functools.partial(self._finish, batch, long))

    def _wake_at(self, when: float) -> None:
        if self._wake is not None:
            self._wake.cancel()
        self._wake = self._loop.call_at(when, self._changed.set)

    def _is_full(self, got: Collected[PendingRequest], window: list[Item]) -> bool:
        left_behind = len(window) - len(got.batch) - len(got.expired) - len(got.dropped)
        return got.rows >= self._limits.max_batch_size or left_behind > 0

    def _expire(self, request: PendingRequest) -> None:
        if request.fail(DeadlineExpired("deadline passed before the request was computed")):
            self._metrics.expired.inc()
        self.withdraw(request)

    def _infer(self, batch: list[Item]) -> _Outcome:
        """Engine thread: skip what died while waiting, score the rest."""
        now = self.clock()
        live = [i for i in batch if not i.owner.finished]
        expired = [i for i in live if i.deadline is not None and i.deadline <= now]
        ran = [i for i in live if i not in expired]
        outcome = _Outcome(ran, expired)
        if not ran:
            return outcome
        pairs = [pair for item in ran for pair in item.pairs]
        start = time.perf_counter()
        try:
            rewards = self._engine.score(pairs)
            if rewards.ndim not in (1, 2) or len(rewards) != len(pairs):
                raise AssertionError(
                    f"engine returned {rewards.shape} rewards for a batch of {len(pairs)} pairs"
                )
            outcome.rewards = rewards
        except Exception as e:  # reported to this batch's callers; the server lives on
            outcome.error = e
        outcome.seconds = time.perf_counter() - start
        return outcome

    def _finish(self, batch: list[Item], long: bool, future: asyncio.Future[_Outcome]) -> None:
        self._running -= 1
        self._running_long -= long
        self._changed.set()
        if future.cancelled():  # the core stopped before this batch ran
            for item in batch:
                item.owner.fail(Unavailable("server stopped before this request was computed"))
                self.withdraw(item.owner)
            return
        outcome = future.result()
        for item in outcome.expired:
            self._expire(item.owner)
        error = outcome.error
        if error is None and outcome.rewards is not None:
            try:
                self._record(outcome.ran, outcome.rewards, outcome.seconds)
            except Exception as e:  # a broken invariant: fail this batch loudly, keep serving
                error = e
        if error is not None:
            self._metrics.engine_errors.inc()
            log.error("batch of %d items failed", len(outcome.ran), exc_info=error)
            for item in outcome.ran:
                item.owner.fail(EngineFailure(f"engine failed on this batch: {error}"))
                self.withdraw(item.owner)

    def _record(self, ran: list[Item], rewards: np.ndarray, seconds: float) -> None:
        m = self._metrics
        rows = len(rewards)
        longest = max(item.longest for item in ran)
        real = sum(item.real_tokens for item in ran)
        m.inference_duration.observe(seconds)
        m.batch_size.observe(rows)
        m.batch_tokens.observe(longest * rows)
        m.padding_ratio.observe(longest * rows / real)
        m.pairs.inc(rows)
        m.tokens.inc(real)
        self._seconds_per_row = 0.9 * self._seconds_per_row + 0.1 * seconds / rows
        row = 0
        for item in ran:
            for pair in item.pairs:
                if pair.response_truncated:
                    m.truncated.labels(part="response").inc()
                elif pair.truncated:
                    m.truncated.labels(part="prompt").inc()
            item.owner.fill(item.index, rewards[row : row + item.rows])
            row += item.rows
        # An ensemble's row is K raw member rewards: its mean stands for the row here.
        for reward in (rewards if rewards.ndim == 1 else rewards.mean(axis=1)).tolist():
            m.reward.observe(reward)

    def _update_gauge(self) -> None:
        self._metrics.queue_pairs.set(self.pending_rows)
