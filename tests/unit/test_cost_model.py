"""The engine cost model: table interpolation, and measurement against a fake engine whose
'time' is a counter it advances itself (never the wall clock)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Gauge

from rmserve.cost_model import (
    AnalyticCost,
    CachedCost,
    CostTable,
    cost_for_policy,
    grid_lengths,
    grid_rows,
    measure_cost_table,
    publish,
)
from rmserve.preprocess import PreparedPair

TABLE = CostTable((1, 2, 4), (16, 32), ((1.0, 2.0), (2.0, 3.0), (4.0, 8.0)))


@pytest.mark.parametrize(
    ("rows", "length", "seconds"),
    [
        (1, 16, 1.0),  # a grid point
        (4, 32, 8.0),
        (3, 16, 3.0),  # halfway between 2 and 4 rows
        (2, 24, 2.5),  # halfway between 16 and 32 tokens
        (3, 24, 4.25),  # bilinear
        (1, 4, 1.0),  # shorter than the grid: the first length's cost
        (8, 32, 16.0),  # past the last row count: linear in rows
        (1, 64, 4.0),  # past the last length: linear in length
        (8, 64, 32.0),
    ],
)
def test_table_interpolates_and_extrapolates(rows: int, length: int, seconds: float) -> None:
    assert TABLE.seconds(rows, length) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("rows", "lengths", "grid"),
    [
        ((), (16,), ()),
        ((2, 1), (16,), ((1.0,), (1.0,))),
        ((1,), (16, 16), ((1.0, 1.0),)),
        ((1,), (16,), ((1.0, 1.0),)),
        ((1,), (16,), ((0.0,),)),
        ((1,), (16,), ((float("nan"),),)),
    ],
)
def test_malformed_tables_are_refused(
    rows: tuple[int, ...], lengths: tuple[int, ...], grid: tuple[tuple[float, ...], ...]
) -> None:
    with pytest.raises(ValueError):
        CostTable(rows, lengths, grid)


def test_measured_rows_between_lengths_are_the_smaller_count() -> None:
    table = CostTable((1, 2, 4), (16, 32, 64), ((1.0,) * 3,) * 3, measured=(4, 2, 1))
    assert [table.measured_rows(n) for n in (8, 16, 20, 32, 48, 64, 512)] == [4, 4, 2, 2, 1, 1, 1]
    assert TABLE.measured_rows(32) is None  # a given table: every cell counts
    assert table.monotone().measured == (4, 2, 1)
    assert CachedCost(table).measured_rows(20) == 2
    assert AnalyticCost().measured_rows(512) is None
    for wrong in ((4, 2), (4, 2, 0)):
        with pytest.raises(ValueError, match="measured rows"):
            CostTable((1, 2, 4), (16, 32, 64), ((1.0,) * 3,) * 3, measured=wrong)


def test_monotone_takes_the_cheapest_time_of_any_bigger_shape() -> None:
    """Noise only adds time: 1.0 s for 1 x 16 cannot be right when 2 x 16 took 0.8 s."""
    noisy = CostTable((1, 2), (16, 32), ((1.0, 0.9), (0.8, 3.0)))
    assert noisy.monotone().grid == ((0.8, 0.9), (0.8, 3.0))
    clean = CostTable((1, 2), (16, 32), ((1.0, 2.0), (1.5, 3.0)))
    assert clean.monotone() == clean


def test_grids_cover_the_batcher_shapes() -> None:
    assert grid_rows(32) == (1, 2, 4, 8, 16, 32)
    assert grid_rows(24) == (1, 2, 4, 8, 16, 24)
    assert grid_rows(1) == (1,)
    assert grid_lengths(512) == (16, 32, 64, 128, 256, 512)
    assert grid_lengths(100) == (16, 32, 64, 100)
    assert grid_lengths(8) == (8,)


class TimedEngine:
    """Takes ``overhead + per_token x rows x length`` fake seconds per call, on ``now``."""

    provider = "FakeExecutionProvider"

    def __init__(self, overhead: float = 0.001, per_token: float = 1e-5) -> None:
        self.now = 0.0
        self.overhead, self.per_token = overhead, per_token
        self.shapes: list[tuple[int, int]] = []

    def clock(self) -> float:
        return self.now

    def score(self, pairs: Sequence[PreparedPair]) -> np.ndarray:
        width = max(p.num_tokens for p in pairs)
        self.shapes.append((len(pairs), width))
        self.now += self.overhead + self.per_token * len(pairs) * width
        return np.zeros(len(pairs), dtype=np.float32)


def long_pair(n: int) -> PreparedPair:
    return PreparedPair(list(range(100, 100 + n)), [0] * n, False, False)


def test_measurement_recovers_the_engine_cost() -> None:
    engine = TimedEngine()
    got = measure_cost_table(
        engine.score, long_pair(64), (1, 2, 4), (16, 64), shape_budget_s=10.0, timer=engine.clock
    )
    for rows in (1, 2, 3, 4):
        for length in (16, 40, 64):
            expected = 0.001 + 1e-5 * rows * length
            assert got.seconds(rows, length) == pytest.approx(expected)
    assert got.source == "measured"
    assert set(engine.shapes) == {(r, n) for r in (1, 2, 4) for n in (16, 64)}


def test_measurement_extrapolates_shapes_over_its_budget_or_the_token_cap() -> None:
    """At 1e-3 s per token a 64-token pair takes 0.065 s: rows 2 (predicted 0.13 s) is over a
    0.1 s budget, so neither it nor rows 4 runs; they are the one-row time, scaled."""
    engine = TimedEngine(per_token=1e-3)
    got = measure_cost_table(
        engine.score, long_pair(64), (1, 2, 4), (16, 64), shape_budget_s=0.1, timer=engine.clock
    )
    assert (2, 64) not in engine.shapes and (4, 64) not in engine.shapes
    assert (4, 16) in engine.shapes
    assert got.seconds(4, 64) == pytest.approx(4 * 0.065)
    assert got.measured == (4, 1)  # the table says which shapes it only guessed
    assert (got.measured_rows(16), got.measured_rows(64), got.measured_rows(40)) == (4, 1, 1)
    capped = TimedEngine()
    measure_cost_table(
        capped.score,
        long_pair(64),
        (1, 2, 4),
        (16, 64),
        64,
        shape_budget_s=10.0,
        timer=capped.clock,
    )
    assert max(r * n for r, n in capped.shapes) == 64  # never over max_batch_tokens ...
    assert (1, 64) in capped.shapes  # ... except one pair alone


def test_measurement_needs_a_pair_long_enough() -> None:
    with pytest.raises(ValueError, match="cannot be cut"):
        measure_cost_table(TimedEngine().score, long_pair(10), (1,), (16,))


def test_policy_picks_the_cost_model() -> None:
    engine = TimedEngine()
    pair = long_pair(32)
    assert cost_for_policy("caps", engine.score, pair, 4, None, measure=True) is None
    assert isinstance(cost_for_policy("analytic", engine.score, pair, 4, None, True), AnalyticCost)
    assert isinstance(cost_for_policy("measured", engine.score, pair, 4, None, False), AnalyticCost)
    assert engine.shapes == []  # none of those ran the engine
    measured = cost_for_policy("measured", engine.score, pair, 4, None, measure=True)
    assert isinstance(measured, CostTable) and measured.rows == (1, 2, 4)
    assert measured.lengths == (16, 32)


def test_analytic_cost_grows_with_rows_and_faster_than_linearly_with_length() -> None:
    cost = AnalyticCost()
    assert cost.seconds(2, 64) > cost.seconds(1, 64)
    per_token_short = cost.seconds(1, 64) / 64
    per_token_long = cost.seconds(1, 512) / 512
    assert per_token_long > per_token_short


def test_publish_writes_the_grid_into_the_gauge() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("cost_seconds", "test", ["rows", "padded_length"], registry=registry)
    publish(TABLE, gauge, max_batch_size=4, max_length=32)
    value = registry.get_sample_value("cost_seconds", {"rows": "4", "padded_length": "32"})
    assert value == 8.0
    assert registry.get_sample_value("cost_seconds", {"rows": "2", "padded_length": "16"}) == 2.0


def test_cached_cost_answers_like_the_model_it_wraps() -> None:
    cached = CachedCost(TABLE)
    shapes = [(r, n) for r in (1, 3, 8) for n in (4, 24, 64)]
    assert [cached.seconds(r, n) for r, n in shapes * 2] == [
        TABLE.seconds(r, n) for r, n in shapes * 2
    ]


def test_extrapolation_keeps_amortising_the_fixed_cost_per_call() -> None:
    """50 ms per call + 6.4 ms per row of 64 tokens: rows 1 and 2 are measured, 4 and 8 are
    over the 0.12 s budget. They are extrapolated on the fixed-plus-per-row line (its slope kept at
    least a quarter of the per-row cost), so the per-row cost keeps falling, as it does."""
    engine = TimedEngine(overhead=0.05, per_token=1e-4)
    got = measure_cost_table(
        engine.score, long_pair(64), (1, 2, 4, 8), (64,), shape_budget_s=0.12, timer=engine.clock
    )
    assert {r for r, _ in engine.shapes} == {1, 2}
    four, eight = got.seconds(4, 64), got.seconds(8, 64)
    assert 0.05 + 4 * 0.0064 <= four < 4 * got.seconds(1, 64)  # never cheaper than it is
    assert four == pytest.approx(0.0628 + 2 * 0.25 * 0.0314)
    assert eight / 8 < four / 4 < got.seconds(2, 64) / 2
