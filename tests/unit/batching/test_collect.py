"""The pure batch-collection function, with fake owners and a fake clock (plain floats)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmserve.batching.collect import BatchLimits, QueuedItem, collect_batch
from rmserve.text.preprocess import PreparedPair


@dataclass
class FakeOwner:
    finished: bool = False


def pair(tokens: int) -> PreparedPair:
    return PreparedPair([7] * tokens, [0] * tokens, truncated=False, response_truncated=False)


def item(
    tokens: int | tuple[int, ...],
    at: float = 0.0,
    deadline: float | None = None,
    owner: FakeOwner | None = None,
) -> QueuedItem[FakeOwner]:
    lengths = tokens if isinstance(tokens, tuple) else (tokens,)
    return QueuedItem(
        owner=owner or FakeOwner(),
        index=0,
        pairs=tuple(pair(n) for n in lengths),
        enqueued_at=at,
        deadline=deadline,
    )


def limits(**overrides: float) -> BatchLimits:
    values: dict[str, float] = {"max_batch_size": 32, "max_batch_tokens": 1 << 20}
    values.update(overrides)
    return BatchLimits(**values)  # type: ignore[arg-type]


def test_empty_snapshot_gives_empty_batch() -> None:
    got = collect_batch([], now=0.0, limits=limits())
    assert (got.batch, got.expired, got.dropped, got.wait_until) == ([], [], [], None)


@pytest.mark.parametrize("max_batch_size", [1, 4, 32, 64])
def test_batch_size_limit(max_batch_size: int) -> None:
    queue = [item(20, at=i) for i in range(40)]
    got = collect_batch(queue, now=100.0, limits=limits(max_batch_size=max_batch_size))
    assert got.rows == min(max_batch_size, 40)
    assert queue[0] in got.batch  # the oldest always runs


@pytest.mark.parametrize(("budget", "rows"), [(100, 1), (250, 2), (1000, 10), (10_000, 32)])
def test_token_budget_counts_padded_tokens(budget: int, rows: int) -> None:
    queue = [item(100, at=i) for i in range(40)]
    got = collect_batch(queue, now=100.0, limits=limits(max_batch_tokens=budget))
    assert got.rows == rows
    assert got.padded_tokens <= max(budget, 100)


def test_anchor_over_every_limit_still_runs_alone() -> None:
    big = item(500, at=0.0)
    got = collect_batch([big, item(10, at=1.0)], now=5.0, limits=limits(max_batch_tokens=100))
    assert got.batch == [big]


def test_prefer_pair_is_never_split() -> None:
    prefers = [item((30, 40), at=i) for i in range(5)]
    got = collect_batch(prefers, now=10.0, limits=limits(max_batch_size=3))
    assert got.batch == [prefers[0]]  # 2 rows; a second item would make 4
    alone = collect_batch(prefers, now=10.0, limits=limits(max_batch_size=1))
    assert alone.batch == [prefers[0]] and alone.rows == 2


@pytest.mark.parametrize(("now", "expired"), [(4.999, False), (5.0, True), (6.0, True)])
def test_deadline_passed_in_queue_expires_and_is_never_batched(now: float, expired: bool) -> None:
    late = item(10, at=0.0, deadline=5.0)
    fresh = item(10, at=1.0, deadline=None)
    got = collect_batch([late, fresh], now=now, limits=limits())
    assert (late in got.expired) is expired
    assert (late in got.batch) is not expired
    assert fresh in got.batch


def test_finished_owners_are_dropped() -> None:
    gone = FakeOwner(finished=True)
    queue = [item(10, at=0.0, owner=gone), item(12, at=0.5, owner=gone), item(11, at=1.0)]
    got = collect_batch(queue, now=2.0, limits=limits())
    assert got.dropped == queue[:2]
    assert got.batch == [queue[2]]


@pytest.mark.parametrize(
    ("now", "queued", "expect_wait"),
    [
        (1.005, 2, True),  # young and too little work: wait for the oldest to age
        (1.010, 2, False),  # the oldest waited max_queue_delay
        (1.005, 8, False),  # a full batch is already there
    ],
)
def test_queue_delay_waits_with_fake_clock(now: float, queued: int, expect_wait: bool) -> None:
    queue = [item(10, at=1.0 + i * 1e-4) for i in range(queued)]
    got = collect_batch(queue, now=now, limits=limits(max_batch_size=8, max_queue_delay_s=0.01))
    if expect_wait:
        assert got.batch == [] and got.wait_until == pytest.approx(1.01)
    else:
        assert got.rows == queued and got.wait_until is None


def test_zero_delay_never_waits() -> None:
    got = collect_batch([item(10, at=5.0)], now=5.0, limits=limits())
    assert got.wait_until is None and got.rows == 1


def test_sorted_window_keeps_padding_near_real_tokens() -> None:
    lengths = [16, 256, 20, 250, 18, 240, 17, 255]
    queue = [item(n, at=float(i)) for i, n in enumerate(lengths)]
    got = collect_batch(queue, now=10.0, limits=limits(max_padding_ratio=1.25))
    assert sorted(i.longest for i in got.batch) == [16, 17, 18, 20]
    assert [i.longest for i in got.batch] == [16, 17, 18, 20]  # returned sorted by length
    assert got.padded_tokens <= 1.25 * got.real_tokens


def test_anchor_grows_toward_closest_lengths() -> None:
    queue = [item(100, at=0.0)] + [item(n, at=1.0 + n) for n in (10, 95, 99, 104, 300)]
    got = collect_batch(queue, now=500.0, limits=limits(max_batch_size=3))
    assert sorted(i.longest for i in got.batch) == [99, 100, 104]


def test_snapshot_is_not_mutated() -> None:
    queue = [item(n, at=float(n)) for n in (40, 10, 30, 20)]
    before = list(queue)
    collect_batch(queue, now=100.0, limits=limits(max_batch_size=2))
    assert queue == before


@pytest.mark.parametrize(
    "bad",
    [
        {"max_batch_size": 0},
        {"max_batch_tokens": 0},
        {"max_padding_ratio": 0.9},
        {"max_queue_delay_s": -1.0},
    ],
)
def test_invalid_limits_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        limits(**bad)


item_specs = st.lists(
    st.tuples(
        st.lists(st.integers(1, 300), min_size=1, max_size=2),  # 1 row (Score) or 2 (Prefer)
        st.floats(0.0, 10.0),  # enqueued_at
        st.one_of(st.none(), st.floats(0.0, 20.0)),  # deadline
        st.booleans(),  # owner finished
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(
    specs=item_specs,
    now=st.floats(0.0, 20.0),
    max_batch_size=st.integers(1, 16),
    max_batch_tokens=st.integers(1, 4000),
    ratio=st.floats(1.0, 3.0),
)
def test_partition_and_limits_hold_for_any_queue(
    specs: list[tuple[list[int], float, float | None, bool]],
    now: float,
    max_batch_size: int,
    max_batch_tokens: int,
    ratio: float,
) -> None:
    queue = [item(tuple(n), at=t, deadline=d, owner=FakeOwner(f)) for n, t, d, f in specs]
    lim = limits(
        max_batch_size=max_batch_size, max_batch_tokens=max_batch_tokens, max_padding_ratio=ratio
    )
    got = collect_batch(queue, now=now, limits=lim)
    chosen = got.batch + got.expired + got.dropped
    assert len(chosen) == len({id(i) for i in chosen})  # each item in at most one list
    assert all(i.owner.finished for i in got.dropped)
    assert all(i.deadline is not None and i.deadline <= now for i in got.expired)
    live = [i for i in queue if i not in got.expired and i not in got.dropped]
    if not live:
        assert got.batch == []
        return
    assert min(live, key=lambda i: i.enqueued_at) in got.batch  # the oldest never starves
    if len(got.batch) > 1:
        assert got.rows <= max_batch_size
        assert got.padded_tokens <= max_batch_tokens
        assert got.padded_tokens <= ratio * got.real_tokens + 1e-9
    assert [i.longest for i in got.batch] == sorted(i.longest for i in got.batch)
