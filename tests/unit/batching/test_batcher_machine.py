"""A hypothesis state machine over the Batcher: enqueue, cancel, deadlines passing, the engine
finishing or raising, in any order (with two engine threads, either running batch may finish
first). After every step: nothing live waits while an engine thread is idle, no pair is
computed twice or at/after its deadline, counters add up."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rmserve.batching.collect import BatchLimits
from rmserve.batching.pending import PendingRequest
from rmserve.errors import DeadlineExpired, EngineFailure, Overloaded
from tests.support.batcher_rig import Rig, Spec, reward_of

LIMITS = BatchLimits(
    max_batch_size=4, max_batch_tokens=48, max_padding_ratio=1.5, max_queue_delay_s=0.0, window=3
)
MAX_QUEUE_PAIRS = 12


class BatcherMachine(RuleBasedStateMachine):
    workers = 1

    def __init__(self) -> None:
        super().__init__()
        self.rig = Rig(LIMITS, MAX_QUEUE_PAIRS, self.workers)
        self.requests: list[PendingRequest] = []
        self.cancelled: set[int] = set()  # ids of requests the test cancelled
        self.rows_per_item: dict[int, int] = {}  # by id of request

    # rules ---------------------------------------------------------------------------------

    @rule(
        lengths=st.lists(st.integers(1, 20) | st.integers(40, 60), min_size=1, max_size=6),
        prefer=st.booleans(),
        timeout=st.none() | st.floats(0.5, 4.0),
        then_advance=st.sampled_from([0.0, 0.0, 1.0]),
    )
    def enqueue(
        self, lengths: list[int], prefer: bool, timeout: float | None, then_advance: float
    ) -> None:
        if prefer and len(lengths) % 2:
            lengths.append(lengths[0])
        pending = self.rig.batcher.pending_rows
        spec = Spec(tuple(lengths), 2 if prefer else 1, timeout)
        try:
            (request,) = self.rig.submit(spec, then_advance=then_advance)
        except Overloaded:
            assert pending + len(lengths) > MAX_QUEUE_PAIRS
            assert self.rig.batcher.pending_rows == pending  # refused: nothing queued
            return
        self.requests.append(request)
        self.rows_per_item[id(request)] = spec.rows_per_item
        self.rig.settle()

    @precondition(lambda self: any(not r.finished for r in self.requests))
    @rule(pick=st.integers(0, 1 << 16))
    def cancel(self, pick: int) -> None:
        live = [r for r in self.requests if not r.finished]
        request = live[pick % len(live)]
        self.cancelled.add(id(request))
        self.rig.cancel(request)
        self.rig.settle()

    @rule(seconds=st.floats(0.1, 3.0))
    def time_passes(self, seconds: float) -> None:
        self.rig.advance(seconds)

    @precondition(lambda self: bool(self.rig.executor.jobs))
    @rule(fail=st.booleans(), late=st.sampled_from([0.0, 0.0, 2.0]), pick=st.integers(0, 7))
    def engine_runs_a_batch(self, fail: bool, late: float, pick: int) -> None:
        """An engine thread finishes one of the running batches (the oldest ``workers``
        submitted); ``late`` moves the clock first without a loop turn (the deadline passes
        between submission and the forward pass)."""
        running = min(self.workers, len(self.rig.executor.jobs))
        self.rig.engine.fail_next = fail
        self.rig.loop.now += late
        self.rig.executor.run_next(pick % running)
        self.rig.engine.fail_next = False
        self.rig.settle()

    # invariants ----------------------------------------------------------------------------

    @invariant()
    def nothing_live_waits_while_an_engine_thread_is_idle(self) -> None:
        """...but a long item (alone over max_batch_tokens) waiting for a long slot."""
        batcher = self.rig.batcher
        jobs = len(self.rig.executor.jobs)
        if jobs < self.workers and batcher.pending_rows:
            assert batcher.running_long == batcher.long_slots
            assert batcher.pending_rows <= sum(
                self.long_rows(r) for r in self.requests if not r.finished
            )
        if not jobs:
            assert all(r.finished for r in self.requests)
        assert jobs <= batcher.pipeline_depth == self.workers + 1

    @invariant()
    def long_batches_stay_within_their_slots(self) -> None:
        batcher = self.rig.batcher
        assert batcher.long_slots == max(1, self.workers - 1)
        long_jobs = [
            job
            for job in self.rig.executor.jobs
            if sum(item.rows for item in job.args[0]) * max(item.longest for item in job.args[0])
            > LIMITS.max_batch_tokens
        ]
        assert len(long_jobs) == batcher.running_long <= batcher.long_slots
        assert all(len(job.args[0]) == 1 for job in long_jobs)  # a long item runs alone

    @invariant()
    def no_pair_computed_twice_or_after_its_deadline(self) -> None:
        tags = [tag for tag, _ in self.rig.engine.computed]
        assert len(tags) == len(set(tags))
        deadline_of = {p.input_ids[0]: r.deadline for r in self.requests for p in r.pairs}
        for tag, at in self.rig.engine.computed:
            deadline = deadline_of[tag]
            assert deadline is None or at < deadline

    @invariant()
    def a_passed_deadline_is_answered(self) -> None:
        now = self.rig.loop.now
        for r in self.requests:
            if r.deadline is not None and r.deadline <= now:
                assert r.finished

    @invariant()
    def counters_add_up(self) -> None:
        batcher = self.rig.batcher
        assert batcher.pending_rows == sum(r.queued_rows for r in self.requests)
        assert self.rig.metric("rmserve_queue_pairs") == batcher.pending_rows
        assert all(r.queued_rows == 0 for r in self.requests if r.finished)
        outcomes = [self.outcome(r) for r in self.requests if r.future.done()]
        assert self.rig.metric("rmserve_expired_total") == outcomes.count("expired")
        assert self.rig.metric("rmserve_engine_errors_total") == self.rig.engine.failures
        assert self.rig.metric("rmserve_pairs_total") == len(self.rig.engine.computed)

    def long_rows(self, request: PendingRequest) -> int:
        """Rows of the request's items that run alone (over max_batch_tokens on their own)."""
        step = self.rows_per_item[id(request)]
        items = [request.pairs[i : i + step] for i in range(0, len(request.pairs), step)]
        cap = LIMITS.max_batch_tokens or 0
        return sum(len(i) for i in items if len(i) * max(p.num_tokens for p in i) > cap)

    def outcome(self, request: PendingRequest) -> str:
        if request.future.cancelled():
            assert id(request) in self.cancelled
            return "cancelled"
        error = request.future.exception()
        if error is None:
            assert request.rewards.tolist() == [reward_of(p.input_ids[0]) for p in request.pairs]
            return "answered"
        assert isinstance(error, DeadlineExpired | EngineFailure), error
        if isinstance(error, DeadlineExpired):
            assert request.deadline is not None and request.deadline <= self.rig.loop.now
            return "expired"
        return "failed"

    def teardown(self) -> None:
        """Drain: with the engine running every batch, every request ends and the queue empties."""
        while self.rig.executor.jobs:
            self.rig.executor.run_next()
            self.rig.settle()
        assert all(r.finished for r in self.requests)
        assert self.rig.batcher.pending_rows == 0 == self.rig.batcher.queue_length
        self.rig.close()


class TwoWorkerBatcherMachine(BatcherMachine):
    """The same machine with two engine threads."""

    workers = 2


MACHINE_SETTINGS = settings(
    max_examples=150, stateful_step_count=30, deadline=None, derandomize=True
)
BatcherMachine.TestCase.settings = MACHINE_SETTINGS
TestBatcherMachine = BatcherMachine.TestCase
TwoWorkerBatcherMachine.TestCase.settings = MACHINE_SETTINGS
TestTwoWorkerBatcherMachine = TwoWorkerBatcherMachine.TestCase
