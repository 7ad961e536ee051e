"""Cost-model cuts of ``collect_batch``: fake cost tables (never the wall clock) decide where the
length-sorted window is cut; the caps and deadlines still rule."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_batch import FakeOwner, item, item_specs, limits

from rmserve.batching import RATE_TOLERANCE, QueuedItem, collect_batch
from rmserve.cost_model import AnalyticCost, CostModel, CostTable

ROWS = (1, 2, 4, 8, 16, 32)
LENGTHS = (16, 32, 64, 128, 256)


def table(seconds: Callable[[int, int], float]) -> CostTable:
    grid = tuple(tuple(seconds(r, n) for n in LENGTHS) for r in ROWS)
    return CostTable(ROWS, LENGTHS, grid, source="fake")


# Per-token cost lowest at 4 rows, then rising (a CPU whose caches thrash on big batches).
SHORT_FAVOURING = table(lambda r, n: r * n * {1: 1.0, 2: 0.8, 4: 0.7, 8: 0.9}.get(r, 1.2) * 1e-4)
# A large fixed cost per batch: the more rows, the better, padding or not.
LONG_FAVOURING = table(lambda r, n: 0.05 + r * n * 1e-6)
# A GPU far from saturation: every shape costs the same.
GPU_FLAT = table(lambda r, n: 2e-3)
# Cost proportional to padded tokens plus a small overhead: padding is what hurts.
CPU_LINEAR = table(lambda r, n: 1e-3 + r * n * 1e-5)


def rate(batch: list[QueuedItem[FakeOwner]], cost: CostModel) -> float:
    rows = sum(i.rows for i in batch)
    longest = max(i.longest for i in batch)
    return sum(i.real_tokens for i in batch) / cost.seconds(rows, longest)


def mixed_window(count: int = 64) -> list[QueuedItem[FakeOwner]]:
    """Lengths 16..256 spread over the window, the oldest one in the middle (100 tokens)."""
    lengths = [100] + [16 + (i * 37) % 241 for i in range(1, count)]
    return [item(n, at=float(i)) for i, n in enumerate(lengths)]


def test_short_favouring_table_cuts_small_batches() -> None:
    queue = [item(50, at=float(i)) for i in range(32)]
    got = collect_batch(queue, now=100.0, limits=limits(), cost=SHORT_FAVOURING)
    assert got.rows == 4 and queue[0] in got.batch


def test_long_favouring_table_fills_the_batch() -> None:
    got = collect_batch(mixed_window(), now=100.0, limits=limits(), cost=LONG_FAVOURING)
    assert got.rows == 32


def test_gpu_flat_table_fills_the_batch_whatever_the_padding() -> None:
    got = collect_batch(mixed_window(), now=100.0, limits=limits(), cost=GPU_FLAT)
    assert got.rows == 32
    assert got.padded_tokens > 1.5 * got.real_tokens  # padding costs nothing here


def test_cpu_linear_table_trades_padding_for_rows() -> None:
    """Items of 100 +- a few tokens join (little padding), far longer ones do not."""
    lengths = [100, 98, 102, 99, 101, 97, 200, 240, 30, 20]
    queue = [item(n, at=float(i)) for i, n in enumerate(lengths)]
    got = collect_batch(queue, now=100.0, limits=limits(), cost=CPU_LINEAR)
    assert sorted(i.longest for i in got.batch) == [97, 98, 99, 100, 101, 102]


def test_shapes_past_the_measured_rows_are_not_picked_for_their_rate() -> None:
    """Long pairs measured only alone, the bigger batches extrapolated at the same per-row
    cost: a tie that, taken at its word, would fill the batch with nothing measured behind it
    (as on a 2-core CPU, where 32 x 512 tokens ran 30% slower per token than 1 x 512)."""
    per_token = table(lambda r, n: r * n * 1e-5)
    guessed_long = CostTable(ROWS, LENGTHS, per_token.grid, measured=(32, 32, 32, 8, 1))
    long_queue = [item(250, at=float(i)) for i in range(16)]
    assert collect_batch(long_queue, now=100.0, limits=limits(), cost=per_token).rows == 16
    got = collect_batch(long_queue, now=100.0, limits=limits(), cost=guessed_long)
    assert got.rows == 1 and long_queue[0] in got.batch
    mid_queue = [item(100, at=float(i)) for i in range(16)]  # 64..128: measured up to 8 rows
    assert collect_batch(mid_queue, now=100.0, limits=limits(), cost=guessed_long).rows == 8
    short_queue = [item(30, at=float(i)) for i in range(16)]
    assert collect_batch(short_queue, now=100.0, limits=limits(), cost=guessed_long).rows == 16


def test_caps_still_bound_a_cost_cut() -> None:
    got = collect_batch(
        mixed_window(), now=100.0, limits=limits(max_batch_size=8), cost=LONG_FAVOURING
    )
    assert got.rows == 8
    capped = collect_batch(
        mixed_window(), now=100.0, limits=limits(max_batch_tokens=1000), cost=GPU_FLAT
    )
    assert capped.padded_tokens <= 1000


def test_a_batch_never_grows_past_its_deadline() -> None:
    """0.05 s + 0.1 s per row: with the anchor due in 0.36 s, three rows finish in time."""
    per_row = table(lambda r, n: 0.05 + 0.1 * r)
    queue = [item(50, at=0.0, deadline=10.36)] + [item(50, at=float(i)) for i in range(1, 8)]
    got = collect_batch(queue, now=10.0, limits=limits(), cost=per_row)
    assert got.rows == 3
    no_deadline = collect_batch(queue[1:], now=10.0, limits=limits(), cost=per_row)
    assert no_deadline.rows == 7


def test_equal_rates_pick_the_bigger_batch() -> None:
    """Per-row cost flat: every batch has the same rate, so the tie goes to the biggest (it
    amortises the per-batch work the table does not see)."""
    per_row = table(lambda r, n: 0.1 * r)
    queue = [item(50, at=float(i)) for i in range(8)]
    got = collect_batch(queue, now=10.0, limits=limits(), cost=per_row)
    assert got.rows == 8


@pytest.mark.parametrize(("two_rows", "expected"), [(0.96, 4), (0.9, 2)])
def test_a_rate_within_the_tolerance_is_a_tie(two_rows: float, expected: int) -> None:
    """Two rows cost ``two_rows`` s, four rows 2 s: two rows' rate is 4% better (a tie, the
    bigger batch wins) or 11% better (two rows win)."""
    assert RATE_TOLERANCE == 0.05
    cost = CostTable((1, 2, 4), (16, 64), ((1.0, 1.0), (two_rows, two_rows), (2.0, 2.0)))
    queue = [item(50, at=float(i)) for i in range(4)]
    got = collect_batch(queue, now=10.0, limits=limits(), cost=cost)
    assert got.rows == expected


def test_a_late_joiner_with_an_earlier_deadline_is_left_out() -> None:
    per_row = table(lambda r, n: 0.05 + 0.1 * r)
    anchor, urgent = item(50, at=0.0), item(50, at=1.0, deadline=10.15)
    others = [item(50, at=float(i)) for i in range(2, 6)]
    got = collect_batch([anchor, urgent, *others], now=10.0, limits=limits(), cost=GPU_FLAT)
    assert got.rows == 6  # flat and fast: everyone fits
    slow = collect_batch([anchor, urgent, *others], now=10.0, limits=limits(), cost=LONG_FAVOURING)
    assert urgent in slow.batch  # 0.05 s: in time
    late = collect_batch([anchor, urgent, *others], now=10.0, limits=limits(), cost=per_row)
    assert urgent not in late.batch and anchor in late.batch


def test_analytic_cost_prefers_sorted_neighbours_over_padding() -> None:
    got = collect_batch(mixed_window(), now=100.0, limits=limits(), cost=AnalyticCost())
    assert got.padded_tokens <= 1.25 * got.real_tokens
    assert got.rows > 1


cost_tables = st.builds(
    lambda g, measured: CostTable(
        (1, 2, 4, 8, 16), (16, 64, 256), tuple(map(tuple, g)), measured=measured
    ).monotone(),
    st.lists(st.lists(st.floats(1e-4, 1.0), min_size=3, max_size=3), min_size=5, max_size=5),
    st.none() | st.tuples(*[st.sampled_from((1, 2, 4, 8, 16))] * 3),
)


@settings(max_examples=150, deadline=None)
@given(
    specs=item_specs,
    now=st.floats(0.0, 20.0),
    max_batch_size=st.integers(1, 16),
    max_batch_tokens=st.none() | st.integers(1, 4000),
    ratio=st.none() | st.floats(1.0, 3.0),
    cost=cost_tables,
)
def test_cost_cut_properties_hold_for_any_queue_and_table(
    specs: list[tuple[list[int], float, float | None, bool]],
    now: float,
    max_batch_size: int,
    max_batch_tokens: int | None,
    ratio: float | None,
    cost: CostTable,
) -> None:
    queue = [item(tuple(n), at=t, deadline=d, owner=FakeOwner(f)) for n, t, d, f in specs]
    lim = limits(max_batch_size=max_batch_size)
    lim = type(lim)(max_batch_size, max_batch_tokens, ratio)
    got = collect_batch(queue, now=now, limits=lim, cost=cost)
    live = [i for i in queue if i not in got.expired and i not in got.dropped]
    assert all(i.owner.finished for i in got.dropped)
    assert all(i.deadline is not None and i.deadline <= now for i in got.expired)
    if not live:
        assert got.batch == []
        return
    oldest = min(live, key=lambda i: i.enqueued_at)
    assert oldest in got.batch  # the oldest never starves
    best_alone = (1 - RATE_TOLERANCE) * rate([oldest], cost)
    assert rate(got.batch, cost) >= best_alone * (1 - 1e-12)  # no worse than the anchor alone
    by_length = sorted(live, key=lambda i: (i.longest, i.enqueued_at))
    positions = sorted(by_length.index(i) for i in got.batch)
    assert positions == list(range(positions[0], positions[-1] + 1))  # a run of the sorted window
    assert got.batch == [by_length[p] for p in positions]  # returned sorted by length
    if len(got.batch) > 1:
        most = cost.measured_rows(max(i.longest for i in got.batch))
        assert most is None or got.rows <= most  # never an extrapolated shape
        assert got.rows <= max_batch_size
        assert max_batch_tokens is None or got.padded_tokens <= max_batch_tokens
        assert ratio is None or got.padded_tokens <= ratio * got.real_tokens + 1e-9
        deadlines = [i.deadline for i in got.batch if i.deadline is not None]
        if deadlines:
            assert now + cost.seconds(got.rows, max(i.longest for i in got.batch)) <= min(deadlines)


@settings(max_examples=100, deadline=None)
@given(specs=item_specs, max_batch_size=st.integers(1, 16), max_batch_tokens=st.integers(1, 4000))
def test_a_flat_cost_cuts_where_the_caps_do(
    specs: list[tuple[list[int], float, float | None, bool]],
    max_batch_size: int,
    max_batch_tokens: int,
) -> None:
    """Every shape costing the same, more real tokens always win: the batch grows to the caps,
    exactly as the caps-only policy grows it."""
    queue = [item(tuple(n), at=t, owner=FakeOwner(f)) for n, t, _, f in specs]
    lim = limits(max_batch_size=max_batch_size, max_batch_tokens=max_batch_tokens)
    flat = collect_batch(queue, now=50.0, limits=lim, cost=GPU_FLAT)
    caps = collect_batch(queue, now=50.0, limits=lim)
    assert flat.batch == caps.batch


@pytest.mark.parametrize("cost", [SHORT_FAVOURING, LONG_FAVOURING, GPU_FLAT, CPU_LINEAR])
def test_queue_delay_still_waits_with_a_cost_model(cost: CostTable) -> None:
    queue = [item(10, at=1.0), item(12, at=1.001)]
    got = collect_batch(queue, now=1.005, limits=limits(max_queue_delay_s=0.01), cost=cost)
    assert got.batch == [] and got.wait_until == pytest.approx(1.01)
