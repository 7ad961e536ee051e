"""The Batcher shell, stepped by hand: a manual clock, a manual engine thread, no wall clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rmserve.batching.batcher import COMPACT_MIN_DEAD_ROWS
from rmserve.batching.collect import BatchLimits
from rmserve.batching.pending import PendingRequest
from rmserve.errors import DeadlineExpired, EngineFailure, Overloaded, Unavailable
from tests.support.batcher_rig import Rig, Spec, reward_of


def limits(**overrides: float) -> BatchLimits:
    values: dict[str, float] = {
        "max_batch_size": 8,
        "max_batch_tokens": 1 << 20,
        "max_padding_ratio": 100.0,
        "window": 4,
    }
    values.update(overrides)
    return BatchLimits(**values)  # type: ignore[arg-type]


@pytest.fixture
def rig() -> Iterator[Rig]:
    rig = Rig(limits(), max_queue_pairs=64)
    yield rig
    rig.close()


def tags(request: PendingRequest) -> list[int]:
    return [pair.input_ids[0] for pair in request.pairs]


def computed_tags(rig: Rig) -> list[int]:
    return [tag for tag, _ in rig.engine.computed]


def assert_answered(request: PendingRequest) -> None:
    assert request.future.done() and request.future.exception() is None
    assert request.rewards.tolist() == [reward_of(t) for t in tags(request)]


def hold_engine(rig: Rig) -> PendingRequest:
    """One request in the engine, its job not run: the engine stays busy until ``run_next``."""
    (first,) = rig.submit(Spec((3,)))
    rig.settle()
    assert len(rig.executor.jobs) == 1
    return first


@pytest.mark.parametrize("window_fate", ["expired", "cancelled"])
def test_live_item_behind_a_dead_window_is_not_stranded(rig: Rig, window_fate: str) -> None:
    """A whole window of dead items, removed in one turn, with the engine idle: the batcher
    must look again rather than wait for an unrelated event."""
    timeout = 1.0 if window_fate == "expired" else None

    async def one_turn() -> tuple[list[PendingRequest], PendingRequest]:
        doomed = [rig.enqueue(Spec((5,), timeout=timeout)) for _ in range(4)]  # the window
        live = rig.enqueue(Spec((5,)))  # no deadline: would wait forever
        if window_fate == "cancelled":
            for request in doomed:
                rig.cancel(request)
        rig.loop.now += 2.0  # past the doomed deadlines, before the batcher looks
        return doomed, live

    doomed, live = rig.run(one_turn())
    rig.settle()
    assert len(rig.executor.jobs) == 1, "the live request must be submitted to the idle engine"
    rig.executor.run_next()
    rig.settle()
    assert_answered(live)
    assert computed_tags(rig) == tags(live)
    for request in doomed:
        assert request.future.done()
        if window_fate == "expired":
            assert isinstance(request.future.exception(), DeadlineExpired)
    assert rig.metric("rmserve_expired_total") == (4 if window_fate == "expired" else 0)
    assert rig.batcher.pending_rows == 0 == rig.batcher.queue_length


def test_withdrawal_frees_slots_at_once_and_is_skipped_later(rig: Rig) -> None:
    first = hold_engine(rig)
    (doomed,) = rig.submit(Spec((4,) * 40))
    rig.settle()
    assert rig.batcher.pending_rows == 40 and not doomed.finished
    with pytest.raises(Overloaded):
        rig.submit(Spec((4,) * 30))
    rig.cancel(doomed)
    assert rig.batcher.pending_rows == 0 == rig.metric("rmserve_queue_pairs")
    assert rig.batcher.queue_length == 40  # lazily deleted: still in the deque
    (after,) = rig.submit(Spec((4,) * 30))  # fits only because the slots were freed
    while rig.executor.jobs:
        rig.executor.run_next()
        rig.settle()
    assert_answered(first)
    assert_answered(after)
    assert sorted(computed_tags(rig)) == sorted(tags(first) + tags(after))
    assert rig.batcher.queue_length == 0 == rig.batcher.pending_rows


def test_dead_rows_are_compacted_once_they_outnumber_live_ones() -> None:
    rig = Rig(limits(), max_queue_pairs=1 << 20)
    hold_engine(rig)
    doomed = rig.submit(*(Spec((2,)) for _ in range(COMPACT_MIN_DEAD_ROWS + 10)))
    (live,) = rig.submit(Spec((2,)))
    rig.settle()
    for request in doomed:
        rig.cancel(request)
    assert rig.batcher.pending_rows == 1
    assert rig.batcher.queue_length < 20  # compacted when the dead passed the threshold
    while rig.executor.jobs:
        rig.executor.run_next()
        rig.settle()
    assert_answered(live)
    rig.close()


def test_deadline_fails_a_queued_request_while_the_engine_is_busy(rig: Rig) -> None:
    first = hold_engine(rig)
    (late,) = rig.submit(Spec((4, 4), timeout=1.0))
    rig.advance(0.5)
    assert not late.finished
    rig.advance(0.6)  # the engine is still busy: the deadline timer answers the caller
    assert isinstance(late.future.exception(), DeadlineExpired)
    assert rig.metric("rmserve_expired_total") == 1
    assert rig.batcher.pending_rows == 0
    rig.executor.run_next()
    rig.settle()
    assert_answered(first)
    assert computed_tags(rig) == tags(first)
    assert not rig.executor.jobs


def test_deadline_passing_before_the_engine_thread_runs_skips_the_batch() -> None:
    rig = Rig(limits(window=16), max_queue_pairs=64)
    first = hold_engine(rig)
    (full,) = rig.submit(Spec((4,) * 8, timeout=1.0))  # a full batch is prepared early
    rig.settle()
    assert len(rig.executor.jobs) == 2
    rig.loop.now += 5.0  # no loop turn: the timer has not fired when the engine thread looks
    rig.executor.run_next()
    rig.executor.run_next()
    rig.settle()
    assert_answered(first)
    assert isinstance(full.future.exception(), DeadlineExpired)
    assert computed_tags(rig) == tags(first)
    assert rig.metric("rmserve_expired_total") == 1  # counted once, though two paths saw it
    rig.close()


def test_engine_failure_fails_only_its_batch(rig: Rig) -> None:
    first = hold_engine(rig)
    (second,) = rig.submit(Spec((4,)))
    rig.engine.fail_next = True
    rig.executor.run_next()
    rig.settle()
    assert isinstance(first.future.exception(), EngineFailure)
    rig.executor.run_next()
    rig.settle()
    assert_answered(second)
    assert rig.metric("rmserve_engine_errors_total") == 1


def test_prefer_items_keep_both_pairs_in_one_batch() -> None:
    rig = Rig(limits(max_batch_size=3), max_queue_pairs=64)
    hold_engine(rig)
    (prefers,) = rig.submit(Spec((5, 6, 5, 6, 5, 6), rows_per_item=2))
    sizes = []
    while rig.executor.jobs:
        sizes.append(len(rig.executor.jobs[0].args[0]))
        rig.executor.run_next()
        rig.settle()
    assert_answered(prefers)
    assert sizes[1:] == [1, 1, 1]  # items of two pairs: one per batch of at most 3 rows
    rig.close()


def test_queue_delay_waits_on_the_loop_clock() -> None:
    rig = Rig(limits(max_queue_delay_s=0.5), max_queue_pairs=64)
    (request,) = rig.submit(Spec((4,)))
    rig.advance(0.4)
    assert not rig.executor.jobs
    rig.advance(0.2)
    assert len(rig.executor.jobs) == 1
    rig.executor.run_next()
    rig.settle()
    assert_answered(request)
    rig.close()


def test_fail_all_answers_every_queued_request(rig: Rig) -> None:
    first = hold_engine(rig)
    queued = rig.submit(Spec((4,)), Spec((4, 4), timeout=5.0))
    rig.batcher.fail_all("stopping")
    for request in queued:
        assert isinstance(request.future.exception(), Unavailable)
    assert rig.batcher.pending_rows == 0 == rig.batcher.queue_length
    assert rig.metric("rmserve_queue_pairs") == 0
    rig.executor.run_next()
    rig.settle()
    assert_answered(first)
    rig.advance(10.0)  # the cancelled deadline timer does not fire
    assert rig.metric("rmserve_expired_total") == 0


# long items: alone over max_batch_tokens, in a lane of their own -----------------------------

LONG, SHORT = 50, 4  # tokens, with max_batch_tokens 32


def long_rig(workers: int, long_batches: int = 0) -> Rig:
    return Rig(limits(max_batch_tokens=32, window=16), 1 << 10, workers, long_batches)


def long_jobs(rig: Rig) -> list[int]:
    """Indexes of the submitted jobs that hold a long pair."""
    return [
        i
        for i, job in enumerate(rig.executor.jobs)
        if len(job.args[0][0].pairs[0].input_ids) == LONG
    ]


def run_short_jobs(rig: Rig) -> None:
    """Run every submitted job but the long ones, as the free workers would."""
    while short := [i for i in range(len(rig.executor.jobs)) if i not in long_jobs(rig)]:
        rig.executor.run_next(short[0])
        rig.settle()


@pytest.mark.parametrize(
    ("workers", "long_batches", "slots"), [(1, 0, 1), (2, 0, 1), (4, 0, 3), (4, 2, 2), (2, 5, 2)]
)
def test_long_slots_default_to_one_less_than_the_workers(
    workers: int, long_batches: int, slots: int
) -> None:
    rig = long_rig(workers, long_batches)
    assert rig.batcher.long_slots == slots
    rig.close()


def test_a_long_pair_takes_one_worker_while_short_pairs_flow_and_a_second_waits() -> None:
    rig = long_rig(workers=2)
    first, second = rig.submit(Spec((LONG,)), Spec((LONG,)))
    shorts = rig.submit(*(Spec((SHORT,)) for _ in range(20)))
    rig.settle()
    assert len(long_jobs(rig)) == 1 == rig.batcher.running_long
    assert rig.executor.batch_tags()[long_jobs(rig)[0]] == tags(first)
    run_short_jobs(rig)  # the long batch is still held on its worker
    for request in shorts:
        assert_answered(request)
    assert not first.finished and not second.finished
    assert long_jobs(rig) == [0] and len(rig.executor.jobs) == 1  # the second waits for a slot
    rig.executor.run_next()
    rig.settle()
    assert_answered(first)
    assert rig.executor.batch_tags() == [tags(second)]
    rig.executor.run_next()
    rig.settle()
    assert_answered(second)
    assert rig.batcher.pending_rows == 0 == rig.batcher.running_long
    rig.close()


def test_long_pairs_may_take_every_worker_when_told() -> None:
    rig = long_rig(workers=2, long_batches=2)
    first, second = rig.submit(Spec((LONG,)), Spec((LONG,)))
    rig.settle()
    assert sorted(rig.executor.batch_tags()) == sorted([tags(first), tags(second)])
    rig.close()


def test_a_long_pair_goes_before_short_ones_that_came_after_it() -> None:
    """Both workers busy with short batches: the long pair waiting longest is next, whatever
    short work arrives meanwhile, and nothing joins its batch."""
    rig = long_rig(workers=2)
    busy = rig.submit(Spec((SHORT,) * 8), Spec((SHORT + 1,) * 8))  # two full batches
    rig.settle()
    (long,) = rig.submit(Spec((LONG,)))
    later = rig.submit(*(Spec((SHORT,) * 8) for _ in range(3)))
    rig.settle()
    assert rig.executor.batch_tags()[2] == tags(long)  # prepared next: nothing can join it
    rig.executor.run_next()
    rig.settle()
    while rig.executor.jobs:
        rig.executor.run_next()
        rig.settle()
    for request in [*busy, long, *later]:
        assert_answered(request)
    rig.close()


def test_one_worker_runs_a_long_pair_then_the_short_ones() -> None:
    rig = long_rig(workers=1)
    (long,) = rig.submit(Spec((LONG,)))
    (short,) = rig.submit(Spec((SHORT,)))
    rig.settle()
    assert rig.executor.batch_tags() == [tags(long)]  # the one worker; the short batch waits
    rig.executor.run_next()
    rig.settle()
    assert_answered(long)
    assert rig.executor.batch_tags() == [tags(short)]
    rig.executor.run_next()
    rig.settle()
    assert_answered(short)
    rig.close()


def test_a_long_prefer_item_runs_alone() -> None:
    """A Prefer's two pairs always share a batch: 2 x 20 tokens is over 32, so it is long."""
    rig = long_rig(workers=2)
    (prefer,) = rig.submit(Spec((20, 20), rows_per_item=2))
    (other,) = rig.submit(Spec((20, 20), rows_per_item=2))
    rig.settle()
    assert rig.executor.batch_tags() == [tags(prefer)]
    assert rig.batcher.running_long == 1
    rig.executor.run_next()
    rig.settle()
    assert rig.executor.batch_tags() == [tags(other)]
    rig.executor.run_next()
    rig.settle()
    assert_answered(prefer)
    assert_answered(other)
    rig.close()


def test_a_long_pair_does_not_wait_for_a_fuller_batch() -> None:
    """max_queue_delay waits for short pairs to join a batch; nothing can join a long one."""
    rig = Rig(limits(max_batch_tokens=32, window=16, max_queue_delay_s=0.5), 1 << 10, 2)
    (long,) = rig.submit(Spec((LONG,)))
    (short,) = rig.submit(Spec((SHORT,)))
    rig.settle()
    assert rig.executor.batch_tags() == [tags(long)]  # at once; the short one waits its delay
    rig.advance(0.6)
    assert rig.executor.batch_tags() == [tags(long), tags(short)]
    while rig.executor.jobs:
        rig.executor.run_next()
        rig.settle()
    assert_answered(long)
    assert_answered(short)
    rig.close()
