"""What an engine batch costs: engine seconds as a function of rows and padded length.

The batcher cuts the sorted window where real tokens per engine-second is highest
(``batching.collect_batch``), so it needs to know what a batch of a given shape costs on this
provider and this model. ``measure_cost_table`` times the engine at warm-up over a grid of the
shapes the batcher may form (rows in powers of two up to ``max_batch_size``, padded length in
powers of two up to ``max_length``); ``CostTable`` interpolates between the grid points. Without
a measurement (warm-up off, test engines) ``AnalyticCost`` stands in: a fixed per-batch overhead
plus a per-token cost that grows with length (attention).

Only ``batch_policy`` 'measured' and 'analytic' use a cost model; the default, 'caps', does not
(on a quiet 2-core CPU the measured cut did not beat the hand-set caps on every length mix,
docs/benchmarks/throughput.md#length-mixes-and-batch-policy).

Warm-up cost is bounded: a shape is measured only while its predicted time (the previous row
count's, scaled) is under ``shape_budget_s``; larger shapes of that length are extrapolated
along the fixed-plus-per-row line through the last two measured row counts. Each measured
shape runs ``1 + rounds`` times, so the measurement takes about
``len(lengths) x 2 x shape_budget_s x (1 + rounds)`` seconds at most (the last measured shape
of each length, plus the faster ones below it).
"""

from __future__ import annotations

import bisect
import functools
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from prometheus_client import Gauge

from rmserve.preprocess import PreparedPair

log = logging.getLogger(__name__)

MIN_GRID_LENGTH = 16
SHAPE_BUDGET_S = 0.1
ROUNDS = 5


class CostModel(Protocol):
    """Predicted engine seconds for one batch of ``rows`` pairs padded to ``padded_length``."""

    def seconds(self, rows: int, padded_length: int) -> float: ...

    def measured_rows(self, padded_length: int) -> int | None:
        """The most rows whose cost at ``padded_length`` was measured, not extrapolated (None:
        every shape is modelled alike). The batcher never picks a bigger batch for its rate."""
        ...


@dataclass(frozen=True)
class AnalyticCost:
    """``overhead_s + token_s * rows * length * (1 + length / attention_length)``.

    A guess used when nothing was measured: the defaults are a small encoder on a few CPU cores
    (about 5k tokens/s, 1 ms per batch). Only the ratios steer the cut; the absolute scale is
    used to keep a batch inside its callers' deadlines.
    """

    overhead_s: float = 1e-3
    token_s: float = 2e-4
    attention_length: float = 1024.0
    source: str = "analytic"

    def measured_rows(self, padded_length: int) -> int | None:
        return None

    def seconds(self, rows: int, padded_length: int) -> float:
        length = float(padded_length)
        return self.overhead_s + self.token_s * rows * length * (
            1.0 + length / self.attention_length
        )


@dataclass(frozen=True)
class CostTable:
    """Engine seconds on a grid: ``grid[i][j]`` is a batch of ``rows[i]`` x ``lengths[j]``.

    Between grid points: bilinear interpolation. Past the last row count: linear in rows (the
    per-row cost of the largest measured batch). Past the last length: linear in length.
    Shorter than the first length: the first length's cost.

    ``measured``: for each length, the most rows actually timed (the cells above were
    extrapolated); None: every cell was given.
    """

    rows: tuple[int, ...]
    lengths: tuple[int, ...]
    grid: tuple[tuple[float, ...], ...]
    source: str = "measured"
    measured: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not self.rows or not self.lengths:
            raise ValueError("a cost table needs at least one row count and one length")
        if list(self.rows) != sorted(set(self.rows)) or self.rows[0] < 1:
            raise ValueError(f"cost table rows must be ascending and positive: {self.rows}")
        if list(self.lengths) != sorted(set(self.lengths)) or self.lengths[0] < 1:
            raise ValueError(f"cost table lengths must be ascending and positive: {self.lengths}")
        if len(self.grid) != len(self.rows) or any(len(r) != len(self.lengths) for r in self.grid):
            raise ValueError(f"cost grid must be {len(self.rows)} x {len(self.lengths)}")
        if not all(s > 0 and np.isfinite(s) for r in self.grid for s in r):
            raise ValueError("cost table seconds must be positive and finite")
        if self.measured is not None and (
            len(self.measured) != len(self.lengths) or min(self.measured) < 1
        ):
            raise ValueError(f"measured rows must be one positive count per length: {self}")

    def measured_rows(self, padded_length: int) -> int | None:
        """Between two grid lengths, the smaller of their measured row counts."""
        if self.measured is None:
            return None
        j = bisect.bisect_left(self.lengths, padded_length)
        if j == 0:
            return self.measured[0]
        if j == len(self.lengths):
            return self.measured[-1]
        if self.lengths[j] == padded_length:
            return self.measured[j]
        return min(self.measured[j - 1], self.measured[j])

    def seconds(self, rows: int, padded_length: int) -> float:
        return self._along(
            self.rows, rows, lambda i: self._along_length(i, max(padded_length, self.lengths[0]))
        )

    def _along_length(self, i: int, length: int) -> float:
        return self._along(self.lengths, length, lambda j: self.grid[i][j])

    @staticmethod
    def _along(points: tuple[int, ...], x: int, at: Callable[[int], float]) -> float:
        """Linear interpolation of ``at`` over ``points``; proportional past the last one."""
        last = len(points) - 1
        if x >= points[last]:
            return at(last) * x / points[last]
        j = bisect.bisect_right(points, x)
        if j == 0:
            return at(0)
        lo, hi = points[j - 1], points[j]
        t = (x - lo) / (hi - lo)
        return at(j - 1) * (1.0 - t) + at(j) * t

    def monotone(self) -> CostTable:
        """The same table made non-decreasing in rows and in length. Timing noise only ever
        adds time, so a shape is given the cheapest time measured for any shape at least as big
        (in rows and in length): a noisy cell is corrected by the cells above it, never
        spread to them."""
        array = np.asarray(self.grid, dtype=np.float64)
        array = np.minimum.accumulate(array[::-1, :], axis=0)[::-1, :]
        array = np.minimum.accumulate(array[:, ::-1], axis=1)[:, ::-1]
        grid = tuple(tuple(float(s) for s in row) for row in array)
        return CostTable(self.rows, self.lengths, grid, self.source, self.measured)

    def describe(self) -> str:
        """The table for the log: milliseconds per batch / padded kilotokens per second."""
        head = "rows\\len " + " ".join(f"{n:>14}" for n in self.lengths)
        lines = [
            f"engine cost table ({self.source}; ms per batch / padded ktok per s; * extrapolated):",
            head,
        ]
        for r, row in zip(self.rows, self.grid, strict=True):
            cells = " ".join(
                f"{s * 1e3:7.1f}/{r * n / s / 1e3:5.1f}"
                + ("*" if r > (self.measured_rows(n) or r) else " ")
                for n, s in zip(self.lengths, row, strict=True)
            )
            lines.append(f"{r:>8} {cells}")
        return "\n".join(lines)


class CachedCost:
    """``cost`` with its answers remembered: the batcher asks about the same few shapes for
    every batch, and a table lookup interpolates each time."""

    def __init__(self, cost: CostModel, max_entries: int = 1 << 16) -> None:
        self.cost = cost
        self._seconds = functools.lru_cache(maxsize=max_entries)(cost.seconds)

    def seconds(self, rows: int, padded_length: int) -> float:
        return self._seconds(rows, padded_length)

    def measured_rows(self, padded_length: int) -> int | None:
        return self.cost.measured_rows(padded_length)


def grid_rows(max_batch_size: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to ``max_batch_size`` (included)."""
    rows = [1 << i for i in range(max_batch_size.bit_length()) if 1 << i <= max_batch_size]
    if rows[-1] != max_batch_size:
        rows.append(max_batch_size)
    return tuple(rows)


def grid_lengths(max_length: int) -> tuple[int, ...]:
    """16, 32, 64, ... up to ``max_length`` (included); just ``max_length`` if it is shorter."""
    lengths = []
    n = MIN_GRID_LENGTH
    while n < max_length:
        lengths.append(n)
        n *= 2
    lengths.append(max_length)
    return tuple(lengths)


def measure_cost_table(
    score: Callable[[Sequence[PreparedPair]], object],
    longest_pair: PreparedPair,
    rows: Sequence[int],
    lengths: Sequence[int],
    max_batch_tokens: int | None = None,
    rounds: int = ROUNDS,
    shape_budget_s: float = SHAPE_BUDGET_S,
    timer: Callable[[], float] = time.perf_counter,
) -> CostTable:
    """Time ``score`` on each rows x length shape: one untimed run, then one timed run per
    round, the rounds going over the whole grid in turn (so a burst of load from elsewhere
    falls on every shape alike, not on a few). A shape's time is the median of its rounds: on
    a busy machine a short call more often runs without being preempted than a long one, so
    the fastest run would make small shapes look cheaper than they are. Batches are
    ``longest_pair`` cut to each length.

    A shape over ``max_batch_tokens`` padded tokens (the batcher never forms it) or predicted
    (from the previous row count, scaled) to take over ``shape_budget_s`` is not run: it and the
    larger row counts of that length are extrapolated (``_extrapolate``)."""
    if longest_pair.num_tokens < max(lengths):
        raise ValueError(f"a pair of {longest_pair.num_tokens} tokens cannot be cut to {lengths}")
    batches = {
        length: PreparedPair(
            longest_pair.input_ids[:length], longest_pair.token_type_ids[:length], False, False
        )
        for length in lengths
    }

    def timed(count: int, length: int) -> float:
        batch = [batches[length]] * count
        start = timer()
        score(batch)
        return max(timer() - start, 1e-9)

    # The first round decides which shapes are measured: row counts in order, while in budget.
    samples: dict[tuple[int, int], list[float]] = {}
    for length in lengths:
        for i, count in enumerate(rows):
            over_cap = max_batch_tokens is not None and count * length > max_batch_tokens
            if i and over_cap:
                break
            if i and samples[rows[i - 1], length][0] * count / rows[i - 1] > shape_budget_s:
                break
            timed(count, length)  # untimed: the first run of a shape allocates
            samples[count, length] = [timed(count, length)]
    for _ in range(rounds - 1):
        for count, length in samples:
            samples[count, length].append(timed(count, length))
    columns, most = [], []
    for length in lengths:
        measured = [n for n in rows if (n, length) in samples]
        seconds = [statistics.median(samples[n, length]) for n in measured]
        columns.append(seconds + _extrapolate(measured, seconds, rows[len(measured) :]))
        most.append(measured[-1])
    grid = tuple(tuple(column[i] for column in columns) for i in range(len(rows)))
    return CostTable(tuple(rows), tuple(lengths), grid, measured=tuple(most)).monotone()


def _extrapolate(
    measured_rows: Sequence[int], seconds: Sequence[float], rows: Sequence[int]
) -> list[float]:
    """Seconds for ``rows`` past the measured ones, on the line through the last two measured
    points: a fixed cost per call plus a marginal cost per row, which is what batching
    amortises. The marginal cost is kept between a quarter of and the whole per-row cost of the
    last measured batch (timing noise can make the line steeper or flatter than it is); with a
    single measured point, cost is proportional to rows."""
    last_rows, last = measured_rows[-1], seconds[-1]
    per_row = last / last_rows
    marginal = per_row
    if len(measured_rows) > 1:
        slope = (last - seconds[-2]) / (last_rows - measured_rows[-2])
        marginal = min(per_row, max(0.25 * per_row, slope))
    return [last + (n - last_rows) * marginal for n in rows]


BatchPolicy = Literal["measured", "analytic", "caps"]


def cost_for_policy(
    policy: BatchPolicy,
    score: Callable[[Sequence[PreparedPair]], object],
    longest_pair: PreparedPair,
    max_batch_size: int,
    max_batch_tokens: int | None,
    measure: bool,
) -> CostModel | None:
    """The cost model the batcher cuts by: None for ``caps``; measured on the engine for
    ``measured`` when ``measure`` (warm-up on), else ``AnalyticCost``."""
    if policy == "caps":
        log.info("batch policy: caps (batches grow to max_batch_size and the token caps)")
        return None
    if policy == "analytic" or not measure:
        log.info("batch policy: analytic cost model %s", AnalyticCost())
        return AnalyticCost()
    start = time.perf_counter()
    rows, lengths = grid_rows(max_batch_size), grid_lengths(longest_pair.num_tokens)
    table = measure_cost_table(score, longest_pair, rows, lengths, max_batch_tokens)
    log.info("%s\nmeasured in %.2fs", table.describe(), time.perf_counter() - start)
    return table


def publish(cost: CostModel, gauge: Gauge, max_batch_size: int, max_length: int) -> None:
    """Write ``cost`` over the warm-up grid into ``gauge`` (labels rows, padded_length)."""
    for rows in grid_rows(max_batch_size):
        for length in grid_lengths(max_length):
            gauge.labels(rows=str(rows), padded_length=str(length)).set(cost.seconds(rows, length))
